"""Scoring a pred.json with the official FreiHAND protocol: the scores, a per-sample table, PCK curves, a text table.

`evaluate(gt_root, pred_path, out_dir)` reads the ground truth and the predictions, scores them (`score_arrays`) and
writes out_dir/scores.json (the 12 official scores), out_dir/per_sample.csv (one row per sample, in evaluation order)
and out_dir/pck_curves.png. The two JSON files are parsed side by side in two forked processes while this one loads
torch and the pure measures (`handmesh.metrics`); the plot loads matplotlib's Agg canvas when drawn.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from handmesh.atomic import write_bytes_atomic
from handmesh.errors import HandmeshError, PredictionFileError
from handmesh.joints import NUM_VERTICES
from handmesh.predjson import read_eval_ground_truth, read_pred_json, read_pred_meta

if TYPE_CHECKING:  # torch and the measures load when scoring starts, after the files have begun parsing
    import torch

    from handmesh.metrics import FreiHANDScores, PCKCurves

BATCH_SIZE = 256  # samples per metric update (memory only)
OUTPUT_FILES = ("scores.json", "per_sample.csv", "pck_curves.png")


@dataclass(frozen=True)
class EvaluationResult:
    scores: FreiHANDScores
    curves: PCKCurves
    per_sample: dict[str, torch.Tensor]  # PER_SAMPLE_KEYS -> (N,) float64, evaluation order
    num_vertices: int  # vertices per predicted mesh (778 for MANO)

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.per_sample.values())))


def score_arrays(xyz_gt: np.ndarray, verts_gt: np.ndarray, xyz_pred: np.ndarray, verts_pred: np.ndarray,
                 device: torch.device | str = "cpu", batch_size: int = BATCH_SIZE,
                 progress: bool = True) -> EvaluationResult:
    """(N, 21, 3), (N, 778, 3), (N, 21, 3), (N, V, 3) metres, evaluation order -> scores, curves, per-sample values."""
    import torch

    from handmesh.metrics import PER_SAMPLE_KEYS, ScoreTotals

    if len(xyz_pred) != len(xyz_gt):
        raise PredictionFileError(f"expected {len(xyz_gt)} predictions (one per ground-truth sample, in evaluation "
                                  f"order), found {len(xyz_pred)}; predict the whole evaluation split")
    totals = ScoreTotals.zeros(verts_gt.shape[1], device)
    rows: list[dict[str, torch.Tensor]] = []
    starts = range(0, len(xyz_gt), batch_size)
    if progress:
        from handmesh.progress import progress_bar

        starts = progress_bar(starts, desc="scoring", unit="batch")
    for start in starts:
        batch = slice(start, start + batch_size)
        arrays = (xyz_pred, verts_pred, xyz_gt, verts_gt)
        rows.append(totals.update(*(torch.from_numpy(array[batch]).to(device) for array in arrays)).per_sample())
    per_sample = {key: torch.cat([row[key] for row in rows]) for key in PER_SAMPLE_KEYS}
    return EvaluationResult(totals.scores(), totals.curves(), per_sample, verts_pred.shape[1])


def evaluate(gt_root: str | os.PathLike, pred_path: str | os.PathLike, out_dir: str | os.PathLike,
             device: torch.device | str = "cpu", batch_size: int = BATCH_SIZE,
             progress: bool = True) -> EvaluationResult:
    """Read, score and write OUTPUT_FILES into `out_dir` (atomically); the PNG's caption names the hand model of
    the predictions when pred.json has a sidecar (`predjson.read_pred_meta`)."""
    out_dir = Path(out_dir)
    device, (xyz_gt, verts_gt), (xyz_pred, verts_pred) = read_while(
        lambda: _load_scoring(device), (read_eval_ground_truth, gt_root), (read_pred_json, pred_path))
    result = score_arrays(xyz_gt, verts_gt, xyz_pred, verts_pred, device, batch_size, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_dir / "scores.json", orjson.dumps(result.scores.as_dict(), option=orjson.OPT_INDENT_2))
    write_bytes_atomic(out_dir / "per_sample.csv", per_sample_csv(result.per_sample).encode())
    write_bytes_atomic(out_dir / "pck_curves.png", pck_plot_png(result.curves, result.scores, provenance(pred_path)))
    return result


def read_while(meanwhile: Callable[[], object], *reads: tuple[Callable, str | os.PathLike]) -> tuple:
    """(meanwhile(), reader(path) for each (reader, path) in `reads`): on Linux each read runs in its own forked
    process while this one runs `meanwhile` (e.g. loading torch), elsewhere one after the other. Errors are raised
    as the reader raised them, `meanwhile`'s first, then the reads' in order.

    fork is the one start method that needs no importable `__main__` (a user's script without a main guard works);
    the workers only parse bytes (numpy, orjson), which is safe in a child of a process that has threads, as
    torch's DataLoader workers are."""
    if sys.platform != "linux" or len(reads) < 2:
        value = meanwhile()
        return (value, *(reader(path) for reader, path in reads))
    with multiprocessing.get_context("fork").Pool(len(reads)) as pool:  # leaving it stops the workers, on errors too
        pending = [pool.apply_async(reader, (path,)) for reader, path in reads]
        value = meanwhile()
        return (value, *(result.get() for result in pending))


def _load_scoring(device: torch.device | str) -> torch.device:
    """What scoring needs besides the arrays, loaded while they parse: torch and the device, the measures and their
    numba kernel, the plot's canvas."""
    import matplotlib.backends.backend_agg  # noqa: F401

    from handmesh.fscore import load_kernel

    load_kernel()
    return resolve_device(device)


def resolve_device(name: torch.device | str) -> torch.device:
    """--device text (or a device) -> torch.device, refused clearly when unknown or unavailable."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise HandmeshError(f"--device: expected cpu or cuda, found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HandmeshError(f"--device {name}: expected an available CUDA device, found none; use --device cpu")
    return device


def provenance(pred_path: str | os.PathLike) -> str | None:
    """One caption line from pred.json's sidecar: which hand model made the predictions (None without a sidecar)."""
    meta = read_pred_meta(pred_path)
    if meta is None:
        return None
    kind = "the STAND-IN hand model (not MANO): illustrative numbers" if meta.get("is_standin") else "MANO"
    return f"predictions made with {kind}; checkpoint {Path(str(meta.get('checkpoint', '?'))).name}"


def per_sample_csv(per_sample: dict[str, torch.Tensor]) -> str:
    """CSV text: `index` then the columns of `per_sample` (`metrics.PER_SAMPLE_KEYS` in order; errors in mm, F in
    [0, 1]; empty where undefined)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", *per_sample])
    columns = [values.tolist() for values in per_sample.values()]
    for index, row in enumerate(zip(*columns)):
        writer.writerow([index, *("" if math.isnan(value) else f"{value:.6g}" for value in row)])
    return text.getvalue()


def pck_plot_png(curves: PCKCurves, scores: FreiHANDScores, caption: str | None = None) -> bytes:
    """PNG bytes: PCK curves of keypoints and vertices, aligned and unaligned, AUC in the legend; `caption` (e.g.
    the hand model) under the panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas, no pyplot, no global backend
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2 if caption is None else 4.5), dpi=100)
    FigureCanvasAgg(figure)
    x = curves.thresholds_mm.cpu().numpy()
    panels = [("keypoints (21)", curves.joints_pa, scores.auc_pa_joints, curves.joints, scores.auc_joints),
              ("vertices", curves.verts_pa, scores.auc_pa_verts, curves.verts, scores.auc_verts)]
    for column, (title, aligned, auc_aligned, raw, auc_raw) in enumerate(panels):
        axes = figure.add_subplot(1, 2, column + 1)
        if aligned is None:
            axes.text(0.5, 0.5, "no vertex correspondence\n(mesh is not 778 vertices)", ha="center", va="center",
                      transform=axes.transAxes)  # the panel's centre, not data coordinates
        else:
            axes.plot(x, aligned.cpu().numpy(), label=f"aligned (PA), AUC {auc_aligned:.3f}")
            axes.plot(x, raw.cpu().numpy(), label=f"unaligned, AUC {auc_raw:.3f}")
            axes.legend(loc="lower right")
        axes.set(title=f"PCK, {title}", xlabel="threshold (mm)", ylabel="share of points within", xlim=(0, 50),
                 ylim=(0, 1.01))
        axes.grid(alpha=0.3)
    bottom = 0.13  # fixed margins that fit these labels (tight_layout would draw the figure once more to measure)
    if caption is not None:
        figure.text(0.5, 0.015, caption, ha="center", va="bottom", fontsize=9, color="darkred")
        bottom = 0.19
    figure.subplots_adjust(left=0.07, right=0.985, bottom=bottom, top=0.92, wspace=0.2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def format_table(scores: FreiHANDScores, num_samples: int, num_vertices: int) -> str:
    """The papers' table (aligned row) plus the unaligned row and AUCs."""
    number = lambda value, digits: "n/a" if value is None else f"{value:.{digits}f}"  # noqa: E731
    rows = [("aligned (PA)", scores.pa_mpjpe_mm, scores.pa_mpvpe_mm, scores.f5, scores.f15, scores.auc_pa_joints,
             scores.auc_pa_verts),
            ("unaligned", scores.mpjpe_mm, scores.mpvpe_mm, scores.f5_unaligned, scores.f15_unaligned,
             scores.auc_joints, scores.auc_verts)]
    lines = [f"FreiHAND official protocol: {num_samples} samples",
             f"{'':14}{'MPJPE mm':>10}{'MPVPE mm':>10}{'F@5mm':>8}{'F@15mm':>8}{'AUC kp':>8}{'AUC vert':>9}"]
    for name, mpjpe, mpvpe, f5, f15, auc_kp, auc_v in rows:
        lines.append(f"{name:14}{number(mpjpe, 2):>10}{number(mpvpe, 2):>10}{number(f5, 3):>8}{number(f15, 3):>8}"
                     f"{number(auc_kp, 3):>8}{number(auc_v, 3):>9}")
    lines.append("Papers report the aligned row: PA-MPJPE, PA-MPVPE (mm), F@5mm, F@15mm.")
    if num_vertices != NUM_VERTICES:
        lines.append(f"Note: the predicted meshes have {num_vertices} vertices, not {NUM_VERTICES}: vertex errors are "
                     "undefined; F-scores use the transform fitted on the keypoints.")
    return "\n".join(lines)
