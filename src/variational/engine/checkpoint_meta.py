"""What a checkpoint file may hold: every metadata field by name and type, every array by name.

A saved fit is read as untrusted input. :func:`read` opens the ``.npz`` (a zip) and accepts it
only when

- every member is one this library writes (``meta``, ``hist``, ``key``, ``state_<i>``,
  ``model_kwargs.<name>``), stored uncompressed (so no member can expand beyond the file's
  size), and ``meta`` is at most :data:`MAX_META_BYTES`;
- the JSON metadata has exactly the known fields, each of the known type and range
  (:func:`validate`): an unknown key, a wrong type, a nested object where a number belongs, a
  count beyond :data:`MAX_COUNT` is a :class:`~variational.errors.CheckpointError` that names
  the field (``settings.checkpoint``, ``family.options.depth``...);
- the arrays have the shapes and dtypes the metadata states.

Only the settings listed in :data:`FIT_SETTINGS` and the options of a registered method are
ever passed on to rebuild the fit, so a file cannot make loading write a checkpoint, resume
from another file, or run a callback: loading reads that one file and nothing else.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CheckpointError
from ..families.base import method_options as family_options
from .loop import EngineState
from .optim import OPTIMIZERS

__all__ = ["FORMAT", "VERSION", "FIT_SETTINGS", "MAX_COUNT", "MAX_META_BYTES", "read", "validate"]

FORMAT = "variational.Fit"
VERSION = 1
MAX_META_BYTES = 16 << 20
MAX_COUNT = 1 << 20        # particles, draws per step, flow depth/width, rank, ...
MAX_TEXT = 100_000         # characters of a message or note
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$")


# -- field checks: each returns the value or raises with the field's name -----------------------
def _fail(field: str, what: str, value: Any) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return CheckpointError(f"metadata field '{field}' must be {what}, got {shown}")


def _bool(field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(field, "true or false", v)
    return v


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(field: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _fail(field, f"a whole number from {lo} to {hi}", v)
        return v
    return check


def _opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda field, v: None if v is None else check(field, v)


def _text(limit: int = 200) -> Callable[[str, Any], str]:
    def check(field: str, v: Any) -> str:
        if not isinstance(v, str) or len(v) > limit:
            raise _fail(field, f"a string of at most {limit} characters", v)
        return v
    return check


def _name(field: str, v: Any) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise _fail(field, "a name (letters, digits, '_', '.', '-')", v)
    return v


def _schedule(field: str, v: Any) -> str:
    if v not in ("adaptive", "constant"):
        raise _fail(field, "'adaptive' or 'constant'", v)
    return v


def _learning_rate(field: str, v: Any) -> float | str:
    if v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise _fail(field, "a positive finite number or 'auto'", v)
    return v


def _optimizer(field: str, v: Any) -> str:
    if v != "custom" and v not in OPTIMIZERS:
        raise _fail(field, f"one of {sorted(OPTIMIZERS) + ['custom']}", v)
    return v


def _scalar(field: str, v: Any) -> Any:
    """A method option: null, true/false, a finite number (ints up to MAX_COUNT) or a short string."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return _int(-MAX_COUNT, MAX_COUNT)(field, v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _fail(field, "a finite number", v)
        return v
    return _text()(field, v)


def _option(field: str, v: Any) -> Any:
    """A method option: a scalar, or a kernel's spec (an object of at most 10 scalars)."""
    if isinstance(v, dict):
        return _mapping(_name, _scalar, 10)(field, v)
    return _scalar(field, v)


def _finite(field: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(field, "a finite number", v)
    return v


def _json(field: str, v: Any, depth: int = 0) -> Any:
    """A model keyword argument: JSON values (lists and objects at most 8 levels deep)."""
    if depth > 8:
        raise _fail(field, "nested at most 8 levels deep", "...")
    if isinstance(v, list):
        return [_json(f"{field}[{i}]", x, depth + 1) for i, x in enumerate(v)]
    if isinstance(v, dict):
        return {k: _json(f"{field}.{k}", x, depth + 1) for k, x in v.items()}
    if isinstance(v, int) and not isinstance(v, bool):
        return _int(-(2**63), 2**64 - 1)(field, v)
    if v is None or isinstance(v, (bool, float)):
        return v
    return _text(MAX_TEXT)(field, v)


def _list(item: Callable[[str, Any], Any], limit: int = MAX_COUNT) -> Callable[[str, Any], list]:
    def check(field: str, v: Any) -> list:
        if not isinstance(v, list) or len(v) > limit:
            raise _fail(field, f"a list of at most {limit} entries", v)
        return [item(f"{field}[{i}]", x) for i, x in enumerate(v)]
    return check


def _shape(field: str, v: Any) -> list:
    dims = _list(_int(0, 2**40), 32)(field, v)
    if math.prod(dims) > 2**40:
        raise _fail(field, "a shape of at most 2**40 elements", v)
    return dims


def _dtype(field: str, v: Any) -> str:
    try:
        ok = isinstance(v, str) and np.dtype(v).kind in "biufc" and len(v) <= 20
    except TypeError:
        ok = False
    if not ok:
        raise _fail(field, "a numeric NumPy dtype name", v)
    return v


def _pair(first: Callable, second: Callable) -> Callable[[str, Any], list]:
    def check(field: str, v: Any) -> list:
        if not isinstance(v, list) or len(v) != 2:
            raise _fail(field, "a pair [.., ..]", v)
        return [first(f"{field}[0]", v[0]), second(f"{field}[1]", v[1])]
    return check


def _object(fields: dict[str, Callable], optional: tuple[str, ...] = ()) -> Callable[[str, Any], dict]:
    def check(field: str, v: Any) -> dict:
        if not isinstance(v, dict):
            raise _fail(field, "an object", v)
        unknown = sorted(set(v) - set(fields))
        if unknown:
            raise CheckpointError(f"metadata field '{_join(field, unknown[0])}' is not one this library "
                                  f"writes; the file was not written by fit.save (or was altered)")
        missing = [k for k in fields if k not in v and k not in optional]
        if missing:
            raise CheckpointError(f"metadata field '{_join(field, missing[0])}' is missing; the file is damaged")
        return {k: fields[k](_join(field, k), x) for k, x in v.items()}
    return check


def _mapping(key: Callable, value: Callable, limit: int = MAX_COUNT) -> Callable[[str, Any], dict]:
    def check(field: str, v: Any) -> dict:
        if not isinstance(v, dict) or len(v) > limit:
            raise _fail(field, f"an object of at most {limit} entries", v)
        return {key(_join(field, k), k): value(_join(field, k), x) for k, x in v.items()}
    return check


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else str(key)


def _hex64(field: str, v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{64}", v):
        raise _fail(field, "a SHA-256 hex digest", v)
    return v


_key = _text(200)  # a site, column or keyword name


#: the settings that are arguments of ``vi.fit`` and are passed back to it when loading
FIT_SETTINGS: dict[str, Callable[[str, Any], Any]] = {
    "method": _name, "optimizer": _optimizer, "learning_rate": _opt(_learning_rate),
    "num_particles": _int(1, MAX_COUNT), "stl": _bool, "seed": _int(-(2**63), 2**63 - 1),
    "progress": _bool, "batch_size": _opt(_int(1, 2**40)), "replace": _bool, "score_function": _bool,
    "objective": _name, "alpha": _opt(_finite), "kl_weight": _finite, "schedule": _opt(_schedule),
}

_META = {
    "format": _text(), "version": _int(0, 2**31), "library": _text(100), "settings": None,
    "unsaved_settings": _list(_text(), 100),
    "family": _object({"name": _name, "options": _mapping(_name, _option, 100)}),
    "latent": _list(_pair(_key, _shape)), "model_params": _list(_key),
    "data": _object({"columns": _mapping(_key, _pair(_shape, _text(40)), 10_000), "sha256": _hex64,
                     "source": _json}, optional=("source",)),
    "model_kwargs": _mapping(_key, _json, 1000), "model_kwargs_arrays": _list(_key, 1000),
    "unsaved_model_kwargs": _list(_key, 1000),
    "state_parts": _mapping(_name, _int(0, MAX_COUNT), 20), "state_leaves": _list(_pair(_shape, _dtype)),
    "steps": _int(0, 2**31 - 1), "hist_len": _int(0, 2**31 - 1), "interrupted": _bool,
    "converged": _opt(_bool), "message": _text(MAX_TEXT), "notes": _list(_text(MAX_TEXT), 10_000),
    "stream": _opt(_object({"rows": _int(1, 2**62), "batch_size": _int(1, 2**40),
                            "rows_consumed": _int(0, 2**62), "epoch": _int(0, 2**62),
                            "offset": _int(0, 2**62)})),
}


def validate(meta: Any) -> dict:
    """Check every field of a checkpoint's metadata (see the module documentation)."""
    if not isinstance(meta, dict):
        raise _fail("", "a JSON object", meta)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"not a saved fit (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"saved by format version {meta.get('version')!r}, this library reads "
                              f"version {VERSION}")
    fields = dict(_META)
    family = _META["family"]("family", meta.get("family"))
    known = family_options(family["name"])
    if known is not None:
        extra = sorted(set(family["options"]) - known)
        if extra:
            raise CheckpointError(f"metadata field 'family.options.{extra[0]}' is not an option of "
                                  f"method {family['name']!r} (its options: {sorted(known)})")
    # an unregistered method's options are checked but never passed on (load needs method=)
    options = {k: _option for k in (known if known is not None else family["options"])}
    fields["settings"] = _object({**FIT_SETTINGS, **options}, optional=tuple(FIT_SETTINGS) + tuple(options))
    out = _object(fields, optional=("stream", "model_params", "library"))("", meta)
    if out["settings"].get("method", family["name"]) != family["name"]:
        raise CheckpointError(f"metadata field 'settings.method' ({out['settings']['method']!r}) "
                              f"differs from 'family.name' ({family['name']!r})")
    unknown = [p for p in out["state_parts"] if p not in EngineState._fields]
    if unknown:
        raise CheckpointError(f"metadata field 'state_parts.{unknown[0]}' is not a part of the engine state")
    if out["hist_len"] != out["steps"]:
        raise CheckpointError(f"metadata fields 'hist_len' ({out['hist_len']}) and 'steps' "
                              f"({out['steps']}) disagree; the file is damaged")
    return out


# -- the file ----------------------------------------------------------------------------------
def _members(meta: dict) -> set[str]:
    names = {"meta", "hist", "key"} | {f"state_{i}" for i in range(len(meta["state_leaves"]))}
    return names | {f"model_kwargs.{k}" for k in meta["model_kwargs_arrays"]}


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: the file is corrupt or truncated ({type(e).__name__}: {e}); "
                              f"use an earlier checkpoint or fit again") from None


def _array(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with z.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The validated metadata and the arrays of the checkpoint at ``path``."""
    with _open_zip(path) as z:
        try:
            infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in z.infolist()}
            if len(infos) != len(z.infolist()):
                raise CheckpointError(f"{path}: a member name appears twice; the file was altered")
            packed = [n for n, i in infos.items() if i.compress_type != zipfile.ZIP_STORED]
            if packed:
                raise CheckpointError(f"{path}: member '{packed[0]}' is compressed; fit.save writes "
                                      f"uncompressed members only")
            if "meta" not in infos:
                raise CheckpointError(f"{path}: not a saved fit (missing 'meta'); save one with fit.save(path)")
            if infos["meta"].file_size > MAX_META_BYTES:
                raise CheckpointError(f"{path}: the metadata is {infos['meta'].file_size} bytes, more "
                                      f"than the {MAX_META_BYTES} this library writes")
            raw = _array(z, infos["meta"])
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise CheckpointError(f"{path}: the metadata is not a byte string")
            meta = validate(json.loads(raw.tobytes().decode()))
            expected = _members(meta)
            extra = sorted(set(infos) - expected)
            if extra:
                raise CheckpointError(f"{path}: member '{extra[0]}' is not one this library writes")
            missing = sorted(expected - set(infos))
            if missing:
                raise CheckpointError(f"{path}: the array '{missing[0]}' is missing; the file is damaged")
            arrays = {n: _array(z, infos[n]) for n in sorted(expected - {"meta"})}
        except CheckpointError as e:
            msg = str(e)
            raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, RecursionError) as e:
            raise CheckpointError(f"{path}: the file is corrupt or truncated ({type(e).__name__}: {e}); "
                                  f"use an earlier checkpoint or fit again") from None
    _check_arrays(path, meta, arrays)
    return meta, arrays


def _check_arrays(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    for i, (shape, dtype) in enumerate(meta["state_leaves"]):
        a = arrays[f"state_{i}"]
        if list(a.shape) != shape or str(a.dtype) != dtype:
            raise CheckpointError(f"{path}: array 'state_{i}' is {a.shape} {a.dtype} but the metadata "
                                  f"says {tuple(shape)} {dtype}; the file is damaged")
    hist = arrays["hist"]
    if hist.shape != (meta["steps"],) or hist.dtype.kind != "f":
        raise CheckpointError(f"{path}: loss history has shape {hist.shape} ({hist.dtype}) for "
                              f"{meta['steps']} steps; the file is damaged")
    key = arrays["key"]
    if key.dtype != np.uint32 or key.ndim != 1 or key.size > 16:
        raise CheckpointError(f"{path}: the random key is {key.shape} {key.dtype}, not uint32 key data; "
                              f"the file is damaged")
