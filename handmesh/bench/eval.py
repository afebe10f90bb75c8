"""`handmesh bench --what eval`: the official FreiHAND scoring, ours against the official per-sample loop.

A FreiHAND-sized evaluation set (3,960 samples; quick: 400) of stand-in MANO hands in random poses and shapes, with
predictions of a plausible model (pose, shape and position perturbed: ~7 mm PA-MPJPE, ~30 mm unaligned), is written as
the official JSON files in a temporary folder. Timed once each:
  (a) `handmesh evaluate` as a whole: orjson parsing and validation, the measures, scores.json, CSV and plot, plus
      what a process's first F-score costs once: getting the numba kernel ready (`fscore.load_kernel`, timed just
      before (a) as eval_numba_first_call_s and added to it);
  (b) the measures alone (`score_arrays` on arrays in memory);
  (c) the official way: stdlib `json.load` of the three files, then `metrics_reference.evaluate_reference`
      (per-sample scipy Procrustes and cKDTree F-scores).
  (p) `handmesh evaluate` as its own process (`python -m handmesh.cli evaluate`, eval_threads threads): interpreter
      start, imports and the kernel load included, as a user runs it.
Goals: eval_speedup_process = (c) / (p) >= 5 (and eval_speedup_total = (c) / (a)), eval_speedup_measures =
(c without loading) / (b) >= 20. The `_cpu` ratios compare CPU seconds instead of wall-clock ones (steadier on a
busy machine; (b) at 1 thread; (p) the child process's).
The kernel is compiled once per install and numba version and cached on disk; eval_numba_cache says which case this
run met. warm: the first call only loaded it, (b) excludes that load. cold: the first call compiled it, and that
time is added to (a) and to every (b) figure.
Results with their machine and date, and where the time goes: docs/results.md ("Evaluation").
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import torch

from handmesh.bench.timing import DEFAULT_THREADS
from handmesh.fscore import load_kernel
from handmesh.mano import ManoLayer
from handmesh.metrics_reference import evaluate_reference
from handmesh.predjson import GT_FILES
from handmesh.scoring import evaluate, score_arrays
from handmesh.standin import write_standin
from handmesh.threads import torch_threads

FULL_SAMPLES = 3960  # FreiHAND's evaluation split
QUICK_SAMPLES = 400


def make_evaluation_set(mano: ManoLayer, num: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ground-truth hands and perturbed predictions, camera frame, metres: gt_xyz/pred_xyz (num, 21, 3),
    gt_verts/pred_verts (num, 778, 3), float64."""
    generator = torch.Generator().manual_seed(seed)
    normal = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("gt_xyz", "gt_verts", "pred_xyz", "pred_verts")}
    for start in range(0, num, 500):
        batch = min(500, num - start)
        pose = normal(batch, 48) * 0.25
        pose[:, :3] = normal(batch, 3) * 1.5  # any global orientation
        betas = normal(batch, 10) * 0.8
        position = normal(batch, 1, 3) * torch.tensor([0.05, 0.05, 0.08]) + torch.tensor([0.0, 0.0, 0.7])
        with torch.no_grad():
            gt = mano(mano.pose_from_axis_angle(pose), betas)
            pred = mano(mano.pose_from_axis_angle(pose + normal(batch, 48) * 0.12), betas + normal(batch, 10) * 0.5)
        pred_position = position + normal(batch, 1, 3) * 0.015
        for name, value in (("gt_xyz", gt.keypoints + position), ("gt_verts", gt.vertices + position),
                            ("pred_xyz", pred.keypoints + pred_position),
                            ("pred_verts", pred.vertices + pred_position)):
            parts[name].append(value.double().numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def _official_load(gt_root: Path, pred_path: Path):
    """What the official script does: stdlib json for the annotations and the predictions."""
    with open(gt_root / GT_FILES[0]) as xyz_file, open(gt_root / GT_FILES[1]) as verts_file:
        xyz, verts = json.load(xyz_file), json.load(verts_file)
    with open(pred_path) as pred_file:
        pred = json.load(pred_file)
    return xyz, verts, pred[0], pred[1]


def _seconds(fn):
    """-> (wall-clock seconds, this process's CPU seconds, fn's result). On a shared machine the CPU time of
    single-threaded work is the steadier measure of how much work it is."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _evaluate_process(gt_root: Path, pred_path: Path, out: Path) -> tuple[float, float]:
    """(wall-clock, CPU seconds) of `handmesh evaluate` run as its own process, with this process's handmesh."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": str(DEFAULT_THREADS),
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "handmesh.cli", "evaluate", "--gt", str(gt_root), "--pred", str(pred_path),
               "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"`handmesh evaluate` exited {done.returncode}: {done.stderr[-1000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run(quick: bool = False) -> dict:
    """Flat dict: seconds of (a), (b), (c), the speedups, and the largest relative difference of the 12 scores."""
    num = QUICK_SAMPLES if quick else FULL_SAMPLES
    with tempfile.TemporaryDirectory(prefix="handmesh-bench-eval-") as temp, torch_threads(DEFAULT_THREADS):
        temp = Path(temp)
        write_standin(temp / "mano")
        data = make_evaluation_set(ManoLayer.from_dir(temp / "mano"), num)
        gt_root = temp / "FreiHAND_pub_v2"
        gt_root.mkdir()
        (gt_root / GT_FILES[0]).write_bytes(orjson.dumps(data["gt_xyz"], option=orjson.OPT_SERIALIZE_NUMPY))
        (gt_root / GT_FILES[1]).write_bytes(orjson.dumps(data["gt_verts"], option=orjson.OPT_SERIALIZE_NUMPY))
        pred_path = temp / "pred.json"
        pred_path.write_bytes(orjson.dumps([data["pred_xyz"], data["pred_verts"]], option=orjson.OPT_SERIALIZE_NUMPY))
        megabytes = sum(path.stat().st_size for path in (gt_root / GT_FILES[0], gt_root / GT_FILES[1], pred_path)) / 1e6
        arrays = (data["gt_xyz"], data["gt_verts"], data["pred_xyz"], data["pred_verts"])

        kernel_s, kernel_cpu_s, warm = _seconds(load_kernel)  # what a process's first F-score does
        compile_s, compile_cpu_s = (0.0, 0.0) if warm else (kernel_s, kernel_cpu_s)
        total_s, total_cpu_s, ours = _seconds(lambda: evaluate(gt_root, pred_path, temp / "out", progress=False))
        total_s, total_cpu_s = total_s + kernel_s, total_cpu_s + kernel_cpu_s
        measures_s, _, _ = _seconds(lambda: score_arrays(*arrays, progress=False))
        with torch_threads(1):
            measures_1thread_s, measures_cpu_s, _ = _seconds(lambda: score_arrays(*arrays, progress=False))
        measures_s, measures_1thread_s, measures_cpu_s = (
            measures_s + compile_s, measures_1thread_s + compile_s, measures_cpu_s + compile_cpu_s)
        process_s, process_cpu_s = _evaluate_process(gt_root, pred_path, temp / "out_process")
        load_s, load_cpu_s, loaded = _seconds(lambda: _official_load(gt_root, pred_path))
        reference_s, reference_cpu_s, theirs = _seconds(lambda: evaluate_reference(*loaded, progress=True))

    ours_scores = ours.scores.as_dict()
    difference = max(abs(ours_scores[key] - value) / max(abs(value), 1e-12) for key, value in theirs.items())
    return {
        "eval_samples": num,
        "eval_json_mb": round(megabytes, 1),
        "eval_threads": DEFAULT_THREADS,
        "eval_numba_cache": "warm" if warm else "cold",
        "eval_numba_first_call_s": round(kernel_s, 2),
        "eval_total_s": round(total_s, 2),
        "eval_process_s": round(process_s, 2),
        "eval_measures_s": round(measures_s, 2),
        "eval_measures_1thread_s": round(measures_1thread_s, 2),
        "eval_official_load_s": round(load_s, 2),
        "eval_official_measures_s": round(reference_s, 2),
        "eval_official_total_s": round(load_s + reference_s, 2),
        "eval_speedup_total": round((load_s + reference_s) / total_s, 2),
        "eval_speedup_process": round((load_s + reference_s) / process_s, 2),
        "eval_speedup_measures": round(reference_s / measures_s, 2),
        "eval_speedup_measures_1thread": round(reference_s / measures_1thread_s, 2),
        "eval_speedup_total_cpu": round((load_cpu_s + reference_cpu_s) / total_cpu_s, 2),
        "eval_speedup_process_cpu": round((load_cpu_s + reference_cpu_s) / process_cpu_s, 2),
        "eval_speedup_measures_cpu": round(reference_cpu_s / measures_cpu_s, 2),  # both single-threaded
        "eval_max_rel_diff": float(f"{difference:.3g}"),
        "eval_pa_mpjpe_mm": round(ours_scores["pa_mpjpe_mm"], 3),
        "eval_f5": round(ours_scores["f5"], 4),
    }
