"""What produced a shard of features, and whether a rerun may reuse it.

Every shard that :func:`neurohook.extract.extract` writes carries a fingerprint in its header:

- ``run``: the model (class, name, SHA-256 of its state_dict), the recorded layers with their
  pooling, layout, output selector and length rule, the pooling default, shard size, batch size,
  sample rate, whether lengths are passed, and the neurohook version;
- ``rows``: each utterance's id, audio path, file size and modification time (ns);
- ``skipped``: the utterances left out, with the reason.

On a rerun a shard is reused only when its ``run`` equals this run's and its rows are the same files,
unchanged; :func:`compare_run` and :func:`compare_rows` say in one phrase what differs otherwise.

Example::

    run = run_fingerprint(model, rec, shard_size=256, batch_size=8, sample_rate=16000, pass_lengths=True)
    rows = row_fingerprints(manifest.select(ids))
    problem = compare_run(stored, run) or compare_rows(stored, rows)   # None, or one phrase
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurohook import __version__
from neurohook.data.manifest import Manifest

__all__ = ["changed_rows", "compare_rows", "compare_run", "model_fingerprint", "row_fingerprints", "run_fingerprint"]


def _code_digest(model: nn.Module) -> str:
    """SHA-256 of the source files of neurohook's own module classes inside ``model`` ("" when none):
    a front-end setting that lives in code (not in the state_dict) changes the fingerprint too."""
    files = sorted({inspect.getsourcefile(type(m)) or "" for m in model.modules()
                    if type(m).__module__.startswith("neurohook.")} - {""})
    if not files:
        return ""
    digest = hashlib.sha256()
    for f in files:
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> dict[str, str]:
    """``{"class", "name", "state", "code", "config"}``: the class path, the model's name, SHA-256 of its
    state_dict and of the source of neurohook's module classes in it, and its ``config`` (settings
    outside the state_dict, e.g. a front-end's hop).

    The state hash covers every parameter and buffer (name, dtype, shape and bytes) and the code hash
    the front-ends and forward passes of neurohook's models, so two models differ in the fingerprint
    whenever they can compute differently (third-party code is covered by its class path only).
    """
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode("utf-8"))
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode("utf-8"))
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
        else:
            digest.update(repr(value).encode("utf-8"))
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "name": str(getattr(model, "name", cls.__name__)),
            "state": digest.hexdigest(), "code": _code_digest(model), "config": _describe(getattr(model, "config", None))}


def _describe(value: Any) -> Any:
    """A JSON-able, run-stable description of a layer option (callables by their qualified name)."""
    if value is None or isinstance(value, (int, str, float, bool)):
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', getattr(value, '__name__', repr(value)))}"
    return repr(value)


def run_fingerprint(model: nn.Module, layers: Sequence[Mapping[str, Any]], **settings: Any) -> dict[str, Any]:
    """The run-level fingerprint: model, layer specs (``Recorder.layer_specs()``), settings, version."""
    return {
        "model": model_fingerprint(model),
        "layers": [{k: _describe(v) for k, v in spec.items()} for spec in layers],
        **{k: _describe(v) for k, v in settings.items()},
        "neurohook": __version__,
    }


def _stat(path: os.PathLike[str] | str) -> tuple[int | None, int | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return int(st.st_size), int(st.st_mtime_ns)


def row_fingerprints(manifest: Manifest) -> list[list[Any]]:
    """``[utt_id, path, start, end, size, mtime_ns]`` of each record (size/mtime None when missing)."""
    return [[r.utt_id, str(r.path), r.start, r.end, *_stat(r.path)] for r in manifest.records]


def changed_rows(stored: Sequence[Sequence[Any]], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Ids of rows whose file changed (size or mtime) between ``stored`` and ``rows`` (same ids and paths)."""
    return [now[0] for old, now in zip(stored, rows) if list(old[4:]) != list(now[4:])]


def _short(x: str) -> str:
    return x[:8] + "..."


def _model_words(m: Mapping[str, Any]) -> str:
    code = f", code {_short(str(m['code']))}" if m.get("code") else ""
    return f"model {m.get('name')} ({m.get('class')}, state {_short(str(m.get('state')))}{code})"


def compare_run(stored: Mapping[str, Any], run: Mapping[str, Any]) -> str | None:
    """What makes a stored shard fingerprint another configuration's (one phrase), or None when it is this run's."""
    old = stored.get("run")
    if not isinstance(old, Mapping):
        return "was written without a fingerprint (an older neurohook or another tool)"
    if old.get("model") != run["model"]:
        was, now = dict(old.get("model") or {}), dict(run["model"])
        if {k: v for k, v in was.items() if k != "config"} == {k: v for k, v in now.items() if k != "config"}:
            return f"was written by model {now.get('name')} with config {was.get('config')}; this run's is {now.get('config')}"
        return f"was written by {_model_words(was)}; this run uses {_model_words(now)}"
    if old.get("layers") != run["layers"]:
        def words(specs: Any) -> str:
            return ", ".join(f"{s.get('name')} ({s.get('pooling')})" for s in specs or [])
        return f"was written for layers {words(old.get('layers'))}; this run records {words(run['layers'])}"
    for key in sorted(set(old) | set(run)):
        if key not in ("model", "layers") and old.get(key) != run.get(key):
            return f"was written with {key} {old.get(key)!r}; this run uses {run.get(key)!r}"
    return None


def compare_rows(stored: Mapping[str, Any], rows: Sequence[Sequence[Any]]) -> str | None:
    """What makes a stored shard's rows another manifest's (ids, paths, segment times), or None.

    A changed file (same id and path) is left to :func:`changed_rows`.
    """
    keys_old = [list(r[:4]) for r in stored.get("rows") or []]
    keys_now = [list(r[:4]) for r in rows]
    if keys_old == keys_now:
        return None
    i = next((i for i, (a, b) in enumerate(zip(keys_old, keys_now)) if a != b), min(len(keys_old), len(keys_now)))
    a = keys_old[i][0] if i < len(keys_old) else "nothing"
    b = keys_now[i][0] if i < len(keys_now) else "nothing"
    return f"holds {len(keys_old)} utterance(s) of another manifest (row {i + 1}: {a!r}; this manifest has {b!r})"
