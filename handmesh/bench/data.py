"""`handmesh bench --what data`: how fast training data flows, and how fast it is made.

- loader: FreiHANDDataset with training augmentation at 224x224 through a DataLoader with 2 workers (decode, crop,
  augment, collate), images/s, against bare `cv2.imread` of the same JPEGs in one process. Goal: ratio >= 0.5.
  The two are timed round-robin (`time_interleaved`), so a busy spell on the shared machine slows both alike.
  On a machine busy with other work the wall-clock ratio mostly measures the load, so the CPU time both use per
  image is recorded too (workers read from /proc on Linux), and with it the ratio two otherwise idle cores would give:
  `loader_to_decode_cpu_ratio` = 2 x decode CPU per image / loader CPU per image (workers + main process).
  The loader is `freihand_loader`, the one FreiHANDDataModule builds (a batch is one block; OpenCV on one thread).
  Results with their machine and date: docs/results.md ("Data loading").
- synth: samples/s of `handmesh synth` (the set the loader reads is generated first, in a temporary folder).
- cache: MB/s of converting an annotation JSON into its .npy cache (the one-time cost; FreiHAND's verts JSON is
  ~1.5 GB).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import orjson
import torch
from torch.utils.data import DataLoader

from handmesh.bench.timing import time_call, time_interleaved
from handmesh.data.annotations import load_annotation
from handmesh.data.datamodule import freihand_loader
from handmesh.data.freihand import FreiHANDDataset, image_path
from handmesh.data.synth import synthesize
from handmesh.data.transforms import Augmentation
from handmesh.threads import torch_threads

INPUT_SIZE = 224
WORKERS = 2
BATCH_SIZE = 32


def _loader_epoch(loader: DataLoader) -> int:
    return sum(len(batch["image"]) for batch in loader)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process `pid` has used so far, from /proc (Linux); None where that is missing."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # fields 3.. of proc(5); utime and stime are 14 and 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _workers_cpu_seconds(loader: DataLoader) -> float | None:
    """CPU seconds used so far by the persistent workers of `loader` (started by a first epoch), or None."""
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None)  # torch's iterator keeps the processes
    seconds = [_cpu_seconds(worker.pid) for worker in workers or []]
    return sum(seconds) if seconds and None not in seconds else None


def _decode_all(paths: list[str]) -> int:
    return sum(cv2.imread(path) is not None for path in paths)


def _cache_speed(folder: Path, entries: int) -> float:
    """MB/s of a first `load_annotation` of a verts-like JSON with `entries` x 778 x 3 floats."""
    values = np.random.default_rng(0).normal(0, 0.05, size=(entries, 778, 3)) + [0, 0, 0.7]
    path = folder / "bench_verts.json"
    path.write_bytes(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY))
    megabytes = path.stat().st_size / 1e6
    timing = time_call(lambda: _rebuild(path), runs=1, warmup=0)
    return megabytes / (timing.median_ms / 1e3)


def _rebuild(path: Path) -> None:
    for cache in path.parent.glob(f"{path.name}.*.npy"):
        cache.unlink()
    load_annotation(path, (778, 3), progress=False)


def run(quick: bool = False, root: str | os.PathLike | None = None) -> dict:
    """Flat dict of measurements. root: a FreiHAND-format folder to read (default: a synthetic set made here)."""
    samples = 32 if quick else 96
    rounds = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="handmesh-bench-data-") as temp, torch_threads(2):
        results: dict = {}
        if root is None:
            made = synthesize(None, Path(temp) / "synthetic", samples, 4, seed=0, progress=False, log=None)
            root = made.root
            results["synth_samples_per_s"] = round(made.samples_per_s, 2)
        dataset = FreiHANDDataset(root, "training", input_size=INPUT_SIZE, val_fraction=0.0, augment=Augmentation(),
                                  progress=False)
        paths = [str(image_path(root, "training", int(index))) for index in dataset.indices]
        loader = freihand_loader(dataset, BATCH_SIZE, WORKERS)  # as FreiHANDDataModule's loaders
        torch.manual_seed(0)
        _loader_epoch(loader)  # starts the workers
        workers_before = _workers_cpu_seconds(loader)
        timings = time_interleaved({"loader": lambda: _loader_epoch(loader), "decode": lambda: _decode_all(paths)},
                                   runs=rounds, warmup=1)
        workers_after = _workers_cpu_seconds(loader)
        loader_rate = len(paths) / (timings["loader"].median_ms / 1e3)
        decode_rate = len(paths) / (timings["decode"].median_ms / 1e3)
        decode_cpu_ms = timings["decode"].cpu_median_ms / len(paths)
        if workers_before is not None and workers_after is not None:
            epochs = rounds + 1  # the timed rounds and time_interleaved's warm-up epoch
            workers_ms = (workers_after - workers_before) * 1e3 / epochs
            loader_cpu_ms = (workers_ms + timings["loader"].cpu_median_ms) / len(paths)
            results.update({
                "loader_cpu_ms_per_image": round(loader_cpu_ms, 3),
                "decode_cpu_ms_per_image": round(decode_cpu_ms, 3),
                "loader_to_decode_cpu_ratio": round(WORKERS * decode_cpu_ms / loader_cpu_ms, 3),
            })
        results.update({
            "loader_images_per_s": round(loader_rate, 1),
            "decode_images_per_s": round(decode_rate, 1),
            "loader_to_decode_ratio": round(loader_rate / decode_rate, 3),
            "loader_images": len(paths),
            "loader_input_size": INPUT_SIZE,
            "loader_workers": WORKERS,
            "cache_json_mb_per_s": round(_cache_speed(Path(temp), 100 if quick else 1000), 1),
        })
        return results
