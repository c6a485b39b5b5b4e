"""Reading files safely: ``.npy`` columns by explicit reads at known offsets, content digests.

Imports: numpy, :mod:`variational.errors`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["NpyFile", "digest"]


def digest(*parts: Any) -> str:
    """SHA-256 hex digest of bytes, arrays (their bytes) and other values (their text)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray)
                 else str(p).encode())
    return h.hexdigest()


class NpyFile:
    """One ``.npy`` column read by explicit reads at known offsets (never a memory map).

    A memory-mapped file that shrinks kills the process with SIGBUS when a vanished page is
    touched; a read returns fewer bytes instead, which is reported with the file's name.
    """

    def __init__(self, column: str, path: Path) -> None:
        if not path.exists():
            raise DataError(f"column '{column}': file '{path}' does not exist")
        self.column, self.path = column, path
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
                self.offset = f.tell()
        except (OSError, ValueError) as e:
            raise DataError(f"column '{column}': '{path}' is not a readable .npy file ({e})") from None
        if dtype.hasobject:
            raise DataError(f"column '{column}': '{path}' holds Python objects, not numbers")
        if fortran and len(shape) > 1:
            raise DataError(f"column '{column}': '{path}' is stored in Fortran order; save it with "
                            f"np.save(path, np.ascontiguousarray(a)) so that rows can be read in blocks")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self.size = os.path.getsize(path)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, or a DataError when the file no longer holds them."""
        out = np.empty((stop - start,) + self.shape[1:], dtype=self.dtype)
        need = self.offset + stop * self.row_bytes
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                got = 0
                if size >= need:
                    f.seek(self.offset + start * self.row_bytes)
                    got = f.readinto(memoryview(out).cast("B")) if out.nbytes else 0
        except OSError as e:
            raise DataError(f"column '{self.column}': '{self.path}' cannot be read ({e})") from None
        if size < need or got != out.nbytes:
            raise DataError(f"column '{self.column}': '{self.path}' is {size} bytes, too short for rows "
                            f"{start}:{stop} of its {self.shape[0]} ({need} bytes): the file was "
                            f"truncated or is being rewritten since the source was opened")
        return out

    def fingerprint(self) -> list:
        """Name, shape, dtype, size, and a hash of the first and last MiB of the data."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            head = f.read(1 << 20)
            f.seek(max(self.offset, self.size - (1 << 20)))
            tail = f.read(1 << 20)
        return [self.path.name, list(self.shape), self.dtype.str, self.size, digest(head, tail)]
