"""What every benchmark shares: its command line, timing, peak memory, machine facts and the JSON it prints.

Each benchmark measures neurohook beside a reference in the same run and prints one JSON object
``{"benchmark", "machine", ...its results}``; ``machine`` has the same keys everywhere.

Example::

    args = parse_args(__doc__)                      # --quick for a smoke run
    seconds = best_of(lambda: work(), repeats=5)
    emit("ranking", {"neuron_ordering": {"core_s": seconds}})
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["best_of", "emit", "machine", "parse_args", "peak_bytes", "timed"]


def parse_args(doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The benchmark's options: ``--quick`` (smaller sizes, a smoke run) and any ``extra`` ones."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (smoke run)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn's result, wall seconds of one call)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds (the least disturbed by other work)."""
    return min(timed(fn)[1] for _ in range(max(1, repeats)))


def peak_bytes(fn: Callable[[], Any], method: str = "memray") -> tuple[int, str]:
    """(peak bytes allocated while fn runs, above what was allocated when it started; how it was measured).

    ``method``: ``"memray"`` (the whole heap, native allocations included; tracemalloc when memray is
    not installed) or ``"tracemalloc"`` (Python and NumPy allocations).
    """
    if method == "memray":
        try:
            import memray
        except ImportError:
            method = "tracemalloc"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "trace.bin"
                with memray.Tracker(path, native_traces=False, follow_fork=False):
                    fn()
                return int(memray.FileReader(path).metadata.peak_memory), "memray peak heap"
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return int(tracemalloc.get_traced_memory()[1] - base), "tracemalloc peak (Python and NumPy allocations)"
    finally:
        tracemalloc.stop()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The same facts in every benchmark: cores, CPU, versions, thread counts, GPU."""
    import numpy as np

    facts: dict[str, Any] = {"cpu_count": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version(),
                             "numpy": np.__version__, "torch": None, "torch_threads": None, "gpu": None}
    try:
        import torch

        facts.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                     gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        pass
    from neurohook import ranking

    facts["kernel_threads"] = ranking.get_num_threads()
    return facts


def emit(name: str, results: dict[str, Any]) -> None:
    """Print ``{"benchmark": name, "machine": machine(), **results}`` as JSON."""
    print(json.dumps({"benchmark": name, "machine": machine(), **results}, indent=2))
