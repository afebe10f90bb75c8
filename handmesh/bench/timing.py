"""The shared timing helper behind every `handmesh bench` part: warm up, then the median of many runs.

On a shared machine single timings drift by tens of percent, so compare candidates within one run, and prefer
`time_interleaved`: it runs every candidate once per round, so a busy spell slows all of them alike.

    from handmesh.bench.timing import time_call, time_interleaved, PeakMemory
    from handmesh.threads import torch_threads
    with torch_threads(2):
        timing = time_call(lambda: model(x), runs=20, warmup=3)      # -> Timing
        timings = time_interleaved({"a": f, "b": g}, runs=20)        # -> {"a": Timing, "b": Timing}
        with PeakMemory() as memory:
            model(x)
        memory.peak_mb, memory.extra_mb                                  # MiB
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

DEFAULT_THREADS = 2
DEFAULT_RUNS = 20
DEFAULT_WARMUP = 3


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of one callable, milliseconds."""

    median_ms: float
    p10_ms: float  # 10th percentile: the machine's quiet moments
    p90_ms: float
    runs: int
    warmup: int
    cpu_median_ms: float | None = None  # process CPU time (all threads) per call: less sensitive to other processes

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        """Flat JSON-able entries `<prefix>_ms`, `_p10_ms`, `_p90_ms`, `_runs` and, when measured, `_cpu_ms`."""
        entries = {
            f"{prefix}_ms": round(self.median_ms, 3),
            f"{prefix}_p10_ms": round(self.p10_ms, 3),
            f"{prefix}_p90_ms": round(self.p90_ms, 3),
            f"{prefix}_runs": self.runs,
        }
        if self.cpu_median_ms is not None:
            entries[f"{prefix}_cpu_ms"] = round(self.cpu_median_ms, 3)
        return entries


def _summarise(seconds: list[float], warmup: int, cpu_seconds: list[float] | None = None) -> Timing:
    ms = sorted(s * 1e3 for s in seconds)
    decile = lambda q: ms[min(len(ms) - 1, int(q * (len(ms) - 1) + 0.5))]  # noqa: E731
    cpu = statistics.median(cpu_seconds) * 1e3 if cpu_seconds else None
    return Timing(statistics.median(ms), decile(0.1), decile(0.9), len(ms), warmup, cpu)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _check_runs(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise ValueError(f"expected runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")


def time_call(fn: Callable[[], object], runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP) -> Timing:
    """Call `fn()` `warmup` times untimed, then `runs` times timed; the median and spread of the timed calls."""
    _check_runs(runs, warmup)
    for _ in range(warmup):
        fn()
    wall, cpu = zip(*(_timed(fn) for _ in range(runs)))
    return _summarise(list(wall), warmup, list(cpu))


def time_interleaved(
    fns: dict[str, Callable[[], object]], runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
    progress: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time several callables round-robin (each round calls every one once), so machine drift hits all alike.

    `progress()` is called after every round (e.g. a tqdm bar's `update`).
    """
    _check_runs(runs, warmup)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            seconds, cpu_seconds = _timed(fn)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
        if progress is not None:
            progress()
    return {name: _summarise(wall[name], warmup, cpu[name]) for name in fns}


def max_rss_mb() -> float:
    """This process's peak resident memory since it started, MiB (the kernel's own high-water mark)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS reports bytes, Linux KiB


def current_rss_mb() -> float | None:
    """Resident memory now, MiB, from /proc (Linux); None where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def release_freed_memory() -> None:
    """Hand memory the allocator keeps after `free` back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    Without it a block that reuses memory freed earlier shows no growth in resident size.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


class PeakMemory:
    """Peak resident memory while the block runs, sampled every `interval` seconds from a background thread.

    `peak_mb`: the highest resident size seen (MiB); `extra_mb`: that minus the size on entry, i.e. what the block
    needed on top of what was already loaded (freed heap memory is first returned to the OS, so reused memory
    counts). Where /proc is missing (macOS), falls back to the kernel's process-wide high-water mark, which cannot
    tell one block from another (`extra_mb` is then None).
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.start_mb: float | None = None
        self.peak_mb = 0.0
        self.extra_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = current_rss_mb()
            if now is not None:
                self.peak_mb = max(self.peak_mb, now)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        release_freed_memory()
        self.start_mb = current_rss_mb()
        if self.start_mb is not None:
            self.peak_mb = self.start_mb
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is None:
            self.peak_mb = max_rss_mb()
            return
        self._thread.join()
        now = current_rss_mb()
        self.peak_mb = max(self.peak_mb, now or 0.0)
        self.extra_mb = self.peak_mb - self.start_mb


def matmul_gflops(size: int = 2048, runs: int = 5, warmup: int = 1) -> float:
    """This machine's float32 matmul rate now, GFLOP/s: the median time of a (size x size) @ (size x size) product."""
    a = torch.rand(size, size)
    b = torch.rand(size, size)
    timing = time_call(lambda: torch.mm(a, b), runs=runs, warmup=warmup)
    return 2 * size**3 / (timing.median_ms * 1e-3) / 1e9
