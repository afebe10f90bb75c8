"""`handmesh evaluate --gt ROOT --pred pred.json --out DIR`: score predictions with the official FreiHAND protocol.

Writes DIR/scores.json (the 12 official scores), DIR/per_sample.csv (one row per sample, sorted by index) and
DIR/pck_curves.png, and prints the table in the papers' format. The worst samples by PA-MPJPE:
`sort -t, -k2,2 -g -r DIR/per_sample.csv | head` (column 2; PA-MPVPE is column 3, F@5mm column 6).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from handmesh.errors import HandmeshError, PredictionFileError
from handmesh.joints import NUM_VERTICES

if TYPE_CHECKING:  # torch and the metrics load when used, so `--help` stays fast
    import torch

    from handmesh.metrics import FreiHANDScores, PCKCurves

BATCH_SIZE = 256  # samples per metric update


@dataclass(frozen=True)
class EvaluationResult:
    scores: FreiHANDScores
    curves: PCKCurves
    per_sample: dict[str, torch.Tensor]  # PER_SAMPLE_KEYS -> (N,) float64, evaluation order
    num_vertices: int  # vertices per predicted mesh (778 for MANO)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Worst samples: sort -t, -k2,2 -g -r DIR/per_sample.csv | head  (column 2 is PA-MPJPE in mm)"
    parser.add_argument("--gt", required=True, type=Path,
                        help="FreiHAND_pub_v2-style folder with evaluation_xyz.json and evaluation_verts.json")
    parser.add_argument("--pred", required=True, type=Path,
                        help="official prediction file [xyz_list, verts_list], metres, evaluation order")
    parser.add_argument("--out", required=True, type=Path, help="folder for scores.json, per_sample.csv, plots")
    parser.add_argument("--device", default="cpu", help="torch device for the measures: cpu (default) or cuda")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="samples per batch (memory only)")


def resolve_device(name: str) -> torch.device:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise HandmeshError(f"--device: expected cpu or cuda, found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HandmeshError(f"--device {name}: expected an available CUDA device, found none; use --device cpu")
    return device


def score_arrays(xyz_gt, verts_gt, xyz_pred, verts_pred, device: torch.device | str = "cpu",
                 batch_size: int = BATCH_SIZE, progress: bool = True) -> EvaluationResult:
    """(N, 21, 3), (N, 778, 3), (N, 21, 3), (N, V, 3) metres (numpy) -> scores, curves and per-sample values."""
    import torch
    from tqdm import tqdm

    from handmesh.metrics import FreiHANDMetric

    if len(xyz_pred) != len(xyz_gt):
        raise PredictionFileError(f"expected {len(xyz_gt)} predictions (one per ground-truth sample, in evaluation "
                                  f"order), found {len(xyz_pred)}; predict the whole evaluation split")
    metric = FreiHANDMetric(num_vertices=verts_gt.shape[1], keep_per_sample=True).to(device)
    for start in tqdm(range(0, len(xyz_gt), batch_size), desc="scoring", unit="batch", disable=not progress,
                      file=sys.stderr):
        batch = slice(start, start + batch_size)
        arrays = (xyz_pred, verts_pred, xyz_gt, verts_gt)
        metric.update(*(torch.from_numpy(array[batch]).to(device) for array in arrays))
    return EvaluationResult(metric.compute(), metric.curves(), metric.per_sample(), verts_pred.shape[1])


def evaluate(gt_root: Path, pred_path: Path, out_dir: Path, device: torch.device | str = "cpu",
             batch_size: int = BATCH_SIZE, progress: bool = True) -> EvaluationResult:
    """Read, score and write everything; the function behind the command (and the benchmark)."""
    import orjson

    from handmesh.predjson import read_eval_ground_truth, read_pred_json, write_atomic

    xyz_gt, verts_gt = read_eval_ground_truth(gt_root)
    xyz_pred, verts_pred = read_pred_json(pred_path)
    result = score_arrays(xyz_gt, verts_gt, xyz_pred, verts_pred, device, batch_size, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "scores.json", orjson.dumps(result.scores.as_dict(), option=orjson.OPT_INDENT_2))
    write_atomic(out_dir / "per_sample.csv", per_sample_csv(result.per_sample).encode())
    write_atomic(out_dir / "pck_curves.png", pck_plot_png(result.curves, result.scores))
    return result


def per_sample_csv(per_sample: dict[str, torch.Tensor]) -> str:
    """CSV text: `index` then PER_SAMPLE_KEYS (errors in mm, F in [0, 1]; empty where undefined)."""
    from handmesh.metrics import PER_SAMPLE_KEYS

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", *PER_SAMPLE_KEYS])
    columns = [per_sample[key].tolist() for key in PER_SAMPLE_KEYS]
    for index, row in enumerate(zip(*columns)):
        writer.writerow([index, *("" if math.isnan(value) else f"{value:.6g}" for value in row)])
    return text.getvalue()


def pck_plot_png(curves: PCKCurves, scores: FreiHANDScores) -> bytes:
    """PNG bytes: PCK curves of keypoints and vertices, aligned and unaligned, AUC in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas, no pyplot, no global backend
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), dpi=100)
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
    # Fixed margins that fit these labels: tight_layout drew the whole figure once more to measure it (0.18 of 0.59 s)
    figure.subplots_adjust(left=0.07, right=0.985, bottom=0.13, top=0.92, wspace=0.2)
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


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise HandmeshError(f"--batch-size: expected a positive number, found {args.batch_size}")
    result = evaluate(args.gt, args.pred, args.out, device, args.batch_size)
    print(format_table(result.scores, len(next(iter(result.per_sample.values()))), result.num_vertices))
    print(f"wrote {args.out / 'scores.json'}, {args.out / 'per_sample.csv'}, {args.out / 'pck_curves.png'}")
    return 0
