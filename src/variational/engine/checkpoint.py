"""Saving, loading and resuming fits.

A saved fit is one ``.npz`` file (a zip of ``.npy`` arrays, readable without this library and
without pickle): the engine state (variational parameters, optimiser state, data-pipeline
state, step and skip counters) as numbered arrays, the loss history, the random key, and a
JSON document (array ``meta``) with the settings, the model's latent layout, a fingerprint
of the data and the model keyword arguments. No code is stored: :func:`load` rebuilds the fit
from the model function the user passes, then checks that everything matches.

Writes are atomic: the file is written to a temporary name in the same folder, flushed to
disk and renamed over the target (``os.replace``), so an interruption never leaves a
half-written checkpoint.

Because step ``t`` uses the random key ``fold_in(key, t)``, a fit resumed from a checkpoint
reproduces the uninterrupted run exactly (same parameters, same ``hist``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from ..errors import user_stacklevel
from .. import data as _data
from ..data.sources import Source
from ..errors import CheckpointError
from .callbacks import Callback, _check_every
from ..families.base import method_options as family_options
from .atomic import check_target, remove_stale_temporaries, write_atomic
from .._version import __version__
from .checkpoint_meta import FIT_SETTINGS, FORMAT, VERSION, read

__all__ = ["save", "read", "fit_arguments", "data_signature_of", "check_data", "restore",
           "check_resume_settings", "check_target", "Checkpointer"]

# settings that do not change the numbers of a run
_FREE_SETTINGS = {"progress"}


# -- encoding ----------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, or raise TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def _split_settings(settings: Mapping[str, Any]) -> tuple[dict, list[str]]:
    out, unsaved = {}, []
    for k, v in settings.items():
        try:
            out[k] = _jsonable(v)
        except TypeError:
            unsaved.append(k)
    return out, unsaved


def _signature(data: Mapping[str, Any] | Source) -> dict:
    """Column names, shapes, dtypes and a SHA-256 of the values (as the fit holds them).

    A streaming source is fingerprinted instead (:meth:`~variational.data.Source.fingerprint`:
    its files, their sizes and metadata, the row count and the reading order's settings).
    """
    if isinstance(data, Source):
        fp = data.fingerprint()
        digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
        return {"columns": {c: [[int(data.num_rows or 0)], "streamed"] for c in data.columns},
                "sha256": digest, "source": fp}
    cols, digest = {}, hashlib.sha256()
    for name in sorted(data or {}):
        a = np.ascontiguousarray(np.asarray(data[name]))
        cols[name] = [list(a.shape), str(a.dtype)]
        digest.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return {"columns": cols, "sha256": digest.hexdigest()}


def _data_signature(fit: Any) -> dict:
    sig = getattr(fit, "_data_signature", None)
    if sig is None:
        source = _source_of(fit)
        sig = fit._data_signature = _signature(fit.data if source is None else source)
    return sig


def _source_of(fit: Any) -> Source | None:
    plan = getattr(fit, "_plan", None)
    feeder = getattr(plan, "feeder", None)
    return None if feeder is None else feeder.source


def _stream_position(fit: Any) -> dict | None:
    """Where a streamed fit's reader stands: rows consumed in all, as (epoch, offset)."""
    if _source_of(fit) is None:
        return None
    ds, plan = fit.state.data_state, fit._plan
    rows, b = int(plan.num_rows), int(plan.batch_size)
    consumed = int(fit.state.step) * b
    return {"rows": rows, "batch_size": b, "rows_consumed": consumed,
            "epoch": int(np.asarray(ds.epoch)), "offset": int(np.asarray(ds.pos))}


def _key_data(key: jax.Array) -> np.ndarray:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _state_parts(state: Any) -> dict[str, int]:
    return {part: len(jax.tree_util.tree_leaves(getattr(state, part))) for part in state._fields}


def save(fit: Any, path: str | os.PathLike, hist: np.ndarray | None = None) -> Path:
    """Write ``fit`` to ``path`` (one ``.npz`` file), atomically.

    Parameters
    ----------
    fit : Fit
        The fit to save.
    path : str or path-like
        Target file (written exactly there; ``.npz`` is the customary suffix).
    hist : numpy.ndarray, optional
        The loss history to store (defaults to ``fit.hist``; a callback passes the losses so far).

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, os
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> fit = vi.fit(model, steps=100, learning_rate=0.05, progress=False)
    >>> path = os.path.join(tempfile.mkdtemp(), "fit.npz")
    >>> fit.save(path).name
    'fit.npz'
    """
    path = Path(path)
    hist = np.asarray(fit.hist if hist is None else hist)
    state = fit.state
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    settings, unsaved = _split_settings(fit.settings)
    kwargs, kw_arrays, kw_unsaved = {}, {}, []
    for k, v in fit.model_kwargs.items():
        if isinstance(v, (np.ndarray, jax.Array)):
            kw_arrays[k] = np.asarray(v)
            continue
        try:
            kwargs[k] = _jsonable(v)
        except TypeError:
            kw_unsaved.append(k)
    fam_options, fam_unsaved = _split_settings(fit.family.options)
    meta = {
        "format": FORMAT, "version": VERSION, "library": __version__,
        "settings": settings, "unsaved_settings": unsaved + [f"method option {k}" for k in fam_unsaved],
        "family": {"name": fit.family.name, "options": fam_options},
        "latent": [[s.name, list(s.shape)] for s in fit.logdensity.layout],
        "model_params": list(fit.logdensity.params.names),
        "data": _data_signature(fit),
        "model_kwargs": kwargs, "model_kwargs_arrays": sorted(kw_arrays), "unsaved_model_kwargs": kw_unsaved,
        "state_parts": _state_parts(state),
        "state_leaves": [[list(a.shape), str(a.dtype)] for a in leaves],
        "steps": int(state.step), "hist_len": int(hist.shape[0]),
        "interrupted": bool(fit.interrupted), "converged": getattr(fit, "converged", None),
        "message": fit.message, "notes": list(getattr(fit, "notes", [])),
        "stream": _stream_position(fit),
    }
    if meta["hist_len"] != meta["steps"]:
        raise CheckpointError(f"{path}: the fit has done {meta['steps']} steps but its loss history has "
                              f"{meta['hist_len']} entries; it cannot be saved consistently")
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
              "hist": hist, "key": _key_data(fit.key)}
    arrays.update({f"state_{i}": a for i, a in enumerate(leaves)})
    arrays.update({f"model_kwargs.{k}": a for k, a in kw_arrays.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    write_atomic(path, arrays)
    return path


class Checkpointer(Callback):
    """Callback that saves the fit to ``path`` every ``every`` steps (atomically).

    Used by ``vi.fit(..., checkpoint=path, checkpoint_every=k)``.

    Examples
    --------
    >>> import tempfile, os
    >>> import variational as vi
    >>> def model():
    ...     vi.Normal("x", 0, 1)
    >>> path = os.path.join(tempfile.mkdtemp(), "ck.npz")
    >>> fit = vi.fit(model, steps=300, learning_rate=0.05, progress=False, callbacks=[Checkpointer(path, 100)])
    >>> vi.load(path, model).steps
    300
    """

    def __init__(self, path: str | os.PathLike, every: int) -> None:
        self.path = Path(path)
        self.every = _check_every(every)
        self.failures = 0

    def __call__(self, fit: Any, losses: np.ndarray, i: int) -> None:
        try:
            save(fit, self.path, hist=losses)
        except OSError as e:  # the fit goes on; the final save tries again and says so
            self.failures += 1
            if self.failures == 1:
                msg = (f"checkpoint at step {i} could not be written to '{self.path}' "
                       f"({type(e).__name__}: {e.strerror or e}); the fit continues")
                getattr(fit, "notes", []).append(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=user_stacklevel())


# -- loading -----------------------------------------------------------------------------------
def fit_arguments(path: Path, meta: dict, arrays: dict[str, np.ndarray], *,
                  optimizer: Any = None, method: Any = None, guide: Any = None,
                  model_kwargs: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """The keyword arguments that rebuild the saved fit with ``vi.fit(..., steps=0)``.

    Returns ``(fit_kwargs, model_kwargs)``. Only the settings of
    :data:`~variational.engine.checkpoint_meta.FIT_SETTINGS` and the options of the registered
    method are taken from the (validated) file; the user's ``optimizer``/``method``/``guide``
    stand in for what the file cannot store. The model keyword arguments are the file's,
    unless given.
    """
    settings, family = meta["settings"], meta["family"]
    kwargs = {k: settings[k] for k in FIT_SETTINGS if k in settings}
    if optimizer is not None:
        kwargs["optimizer"] = optimizer
    elif settings.get("optimizer") == "custom":
        raise CheckpointError(f"{path}: the fit used a custom optax optimizer, which cannot be stored; "
                              f"pass the same one as load(..., optimizer=...)")
    if family["name"] == "guide" and method is None:
        if guide is None:
            raise CheckpointError(f"{path}: the fit used guide= ({family['options'].get('guide')!r}), "
                                  f"which is code and is not stored; pass it as load(..., guide=...)")
        kwargs.update(guide=guide, method="guide")
    elif method is not None:
        kwargs["method"] = method
    elif family_options(family["name"]) is None:
        raise CheckpointError(f"{path}: written with method {family['name']!r}, which is not a registered "
                              f"method here; pass the Family as load(..., method=...)")
    else:
        kwargs.update(family["options"])
    missing = [k for k in meta["unsaved_settings"] if k not in kwargs]
    if missing:
        raise CheckpointError(f"{path}: the settings {missing} could not be stored; pass them to load()")
    mk = dict(meta["model_kwargs"])
    mk.update({k: arrays[f"model_kwargs.{k}"] for k in meta["model_kwargs_arrays"]})
    if model_kwargs is not None:
        mk = dict(model_kwargs)
    lost = [k for k in meta["unsaved_model_kwargs"] if k not in mk]
    if lost:
        raise CheckpointError(f"{path}: the model keyword argument(s) {lost} could not be stored; "
                              f"pass them as load(..., model_kwargs=...)")
    return kwargs, mk


def data_signature_of(data: Any) -> dict | None:
    """The fingerprint of user data as a fit would hold it (None when the data is not columns)."""
    if isinstance(data, Source):
        return _signature(data)
    try:
        return _signature(_data.to_device(_data.as_columns(data)))
    except Exception:
        return None  # the fit rebuilt from it says what is wrong with the data


def restore(path: Path, meta: dict, arrays: dict[str, np.ndarray], new: Any) -> Any:
    """Check ``new`` (the fit rebuilt with ``steps=0``) against the file and load its state into it."""
    _check_match(path, meta, new)
    template, treedef = jax.tree_util.tree_flatten(new.state)
    leaves = [arrays.get(f"state_{i}") for i in range(len(meta["state_leaves"]))]
    if any(a is None for a in leaves):
        raise CheckpointError(f"{path}: state arrays are missing; the file is damaged")
    _check_state(path, meta, new, template, leaves)
    state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in leaves])
    hist = arrays["hist"]
    if hist.shape != (meta["steps"],):
        raise CheckpointError(f"{path}: loss history has {hist.shape[0]} entries for {meta['steps']} steps; "
                              f"the file is damaged")
    if arrays["key"].shape != _key_data(new.key).shape:
        raise CheckpointError(f"{path}: the random key has shape {arrays['key'].shape}, not "
                              f"{_key_data(new.key).shape}; the file is damaged")
    _check_stream(path, meta, new, state)
    new._set_state(state)
    new._hist = [hist]
    new.key = jax.numpy.asarray(arrays["key"])
    new.interrupted = meta["interrupted"]
    new.converged = meta["converged"]
    new.message = meta["message"]
    new.notes = list(meta["notes"])
    return new


def _check_stream(path: Path, meta: dict, new: Any, state: Any) -> None:
    """A streamed fit resumes its reader where it stood: check that the position is consistent."""
    stream, plan = meta.get("stream"), getattr(new, "_plan", None)
    if (stream is None) != (_source_of(new) is None):
        raise CheckpointError(f"{path}: written by a fit that {'did not stream' if stream is None else 'streamed'} "
                              f"its data, but the data given {'is' if stream is None else 'is not'} a "
                              f"streaming source; pass the data the fit was made with")
    if stream is None:
        return
    consumed = int(state.step) * int(plan.batch_size)
    want = {"rows": int(plan.num_rows), "batch_size": int(plan.batch_size), "rows_consumed": consumed,
            "epoch": consumed // int(plan.num_rows), "offset": consumed % int(plan.num_rows)}
    ds = state.data_state
    have = {"epoch": int(np.asarray(ds.epoch)), "offset": int(np.asarray(ds.pos))}
    bad = [k for k, v in want.items() if stream[k] != v or have.get(k, v) != v]
    if bad:
        raise CheckpointError(f"{path}: the streaming position {stream} does not match {want} (field "
                              f"'stream.{bad[0]}'); the file is damaged or the source has another size")


def _check_match(path: Path, meta: dict, new: Any) -> None:
    saved = [(n, tuple(s)) for n, s in meta["latent"]]
    here = [(s.name, tuple(s.shape)) for s in new.logdensity.layout]
    if saved != here:
        raise CheckpointError(f"{path}: written for a model with latent sites "
                              f"{_fmt_sites(saved)}, but this model has {_fmt_sites(here)}; "
                              f"load it with the model it was fitted with")
    saved_params = meta.get("model_params", [])
    if saved_params != list(new.logdensity.params.names):
        raise CheckpointError(f"{path}: written for a model with parameters (numpyro.param) "
                              f"{saved_params}, but this model has {list(new.logdensity.params.names)}; "
                              f"load it with the model it was fitted with")
    if new.family.name != meta["family"]["name"]:
        raise CheckpointError(f"{path}: written with method {meta['family']['name']!r}, "
                              f"not {new.family.name!r}")


def check_data(path: Path, want: dict, got: dict, check_values: bool) -> None:
    """Refuse data other than the fit's: other columns, or (``check_values``) other values or source."""
    if ("source" in want) != ("source" in got):
        kinds = ["in-memory columns", "a streaming source"]
        raise CheckpointError(f"{path}: written with {kinds['source' in want]}, but the data given is "
                              f"{kinds['source' in got]}; pass the data the fit was made with")
    if "source" in want and check_values and want["sha256"] != got["sha256"]:
        diff = sorted(k for k in set(want["source"]) | set(got["source"])
                      if want["source"].get(k) != got["source"].get(k))
        raise CheckpointError(f"{path}: the streaming source given differs from the one the fit read "
                              f"(in {diff}); a resumed fit must read the same rows. Pass the same "
                              f"source, or load(..., check_data=False) to continue on this one")
    if want["columns"] != got["columns"]:
        raise CheckpointError(f"{path}: written with data columns {_fmt_cols(want['columns'])}, "
                              f"but the data given has {_fmt_cols(got['columns'])}; pass the same data")
    if check_values and want["sha256"] != got["sha256"]:
        raise CheckpointError(f"{path}: the data given has the same columns and shapes but different "
                              f"values from the data the fit was made with; pass the same data, or "
                              f"load(..., check_data=False) to continue on these data")


def _check_state(path: Path, meta: dict, new: Any, template: list, leaves: list) -> None:
    here = _state_parts(new.state)
    for part, n in meta["state_parts"].items():
        if here.get(part) != n:
            what = {"opt_state": f"optimizer state (optimizer {meta['settings'].get('optimizer')!r})",
                    "params": f"variational parameters (method {meta['family']['name']!r})",
                    "data_state": "data-pipeline state"}.get(part, part)
            written = meta.get("library")
            origin = (f"the file was written by variational {written}" if written
                      else "the file does not say which version of variational wrote it")
            why = (f"; {origin} (this is {__version__}): "
                   f"if the same settings give this error, method {meta['family']['name']!r} keeps other "
                   f"parameters in this version, so refit and save again" if part == "params" else "")
            raise CheckpointError(f"{path}: the {what} has {n} arrays in the file but {here.get(part)} "
                                  f"in the fit rebuilt here; load it with the same settings{why}")
    for i, (a, t) in enumerate(zip(leaves, template)):
        if tuple(a.shape) != tuple(np.shape(t)) or str(a.dtype) != str(np.asarray(t).dtype):
            raise CheckpointError(f"{path}: state array {i} has shape {a.shape} {a.dtype} in the file "
                                  f"but {np.shape(t)} {np.asarray(t).dtype} here; load it with the same "
                                  f"model, method and optimizer")


def _fmt_sites(sites: list) -> str:
    return "[" + ", ".join(f"{n}{list(s)}" if s else str(n) for n, s in sites) + "]"


def _fmt_cols(cols: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"'{k}': {tuple(v[0])}" for k, v in cols.items()) + "}" if cols else "no columns"


def check_resume_settings(path: Path, loaded: Any, expect: Mapping[str, Any]) -> None:
    """Refuse to resume ``loaded`` (read from ``path``) with settings other than ``expect``."""
    for k, v in expect.items():
        if k in _FREE_SETTINGS or (k == "learning_rate" and v == "auto") or (k == "method" and v == "auto"):
            continue
        have = loaded.settings.get(k)
        try:
            v = _jsonable(v)
        except TypeError:
            continue
        if have != v:
            raise CheckpointError(f"{path}: the checkpoint was written with {k}={have!r}, this call has "
                                  f"{k}={v!r}; resume with the same settings or start a new checkpoint")
