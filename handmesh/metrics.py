"""The official FreiHAND measures, batched in torch, and their exact accumulation over batches (`ScoreTotals`).

Protocol (docs/evaluation.md), per sample:
- unaligned errors: Euclidean distance per keypoint / vertex in the camera frame (no root centring);
- aligned (PA) errors: similarity Procrustes fitted separately on joints and on vertices (`fit_similarity`), with a
  reflection allowed exactly as in `scipy.linalg.orthogonal_procrustes`; a predicted mesh without vertex
  correspondence (not as many vertices as the ground truth) is moved by the transform fitted on the joints;
- F@5mm and F@15mm from nearest-neighbour vertex distances both ways, strict `<`; raw and aligned vertices
  (`handmesh.fscore`).
Aggregation: errors averaged per keypoint over samples, then over keypoints; AUC of the PCK curve (`<=`, 100 thresholds
from 0 to 50 mm) per keypoint, normalised to [0, 1], averaged over keypoints; F-scores averaged over samples.

All maths runs in float64 on the inputs' device whatever the autocast (`geometry.in_float32`), torch's ops on one CPU
thread (`ScoreTotals.update`: many small ops lose more to thread synchronisation than they gain); the F-scores'
exact nearest-neighbour search is a numba kernel on the CPU that splits the samples over the caller's torch thread
count (`handmesh.fscore`).
`handmesh/metrics_reference.py` is the slow per-sample numpy/scipy version of the official loop; the tests check that
both agree to 1e-6 on every score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from handmesh.fscore import F_THRESHOLDS_M, f_scores
from handmesh.geometry import in_float32
from handmesh.joints import NUM_KEYPOINTS, NUM_VERTICES
from handmesh.threads import torch_threads

PCK_RANGE_M = (0.0, 0.05)  # the AUC integrates the PCK curve over 0-50 mm ...
PCK_STEPS = 100  # ... sampled at 100 thresholds
NORM_EPS = 1e-8  # the official script adds this to both Frobenius norms before dividing
PER_SAMPLE_KEYS = ("pa_mpjpe_mm", "pa_mpvpe_mm", "mpjpe_mm", "mpvpe_mm", "f5", "f15", "f5_unaligned", "f15_unaligned")


def pck_thresholds(device: torch.device | str | None = None) -> torch.Tensor:
    """(PCK_STEPS,) float64 metres, bit-identical to the official `np.linspace(0.0, 0.05, 100)`."""
    return torch.from_numpy(np.linspace(PCK_RANGE_M[0], PCK_RANGE_M[1], PCK_STEPS)).to(device)


@dataclass(frozen=True)
class SimilarityTransform:
    """x -> (x - source_centre) @ rotation.T * scale + target_centre, per sample; float64."""

    rotation: torch.Tensor  # (B, 3, 3) orthogonal; det may be -1 (a reflection), as scipy allows
    scale: torch.Tensor  # (B,)
    source_centre: torch.Tensor  # (B, 3) metres, centroid of the fitted prediction
    target_centre: torch.Tensor  # (B, 3) metres, centroid of the ground truth

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """(B, M, 3) metres -> (B, M, 3) float64 metres."""
        centred = points.double() - self.source_centre[:, None]
        linear = self.rotation.transpose(1, 2) * self.scale[:, None, None]  # (B, 3, 3): one fused multiply-add below
        return torch.baddbmm(self.target_centre[:, None], centred, linear)


@in_float32
def fit_similarity(pred: torch.Tensor, gt: torch.Tensor) -> SimilarityTransform:
    """Official `align_w_scale`: centre both (B, N, 3) sets, divide each by its Frobenius norm (+1e-8), solve
    `R, s = orthogonal_procrustes(gt_n, pred_n)` (R = U Vh from the SVD of gt_n^T pred_n, s = sum of its singular
    values) and map pred_n @ R.T * s * |gt_c| + mean(gt). Returned as one transform of the unnormalised prediction."""
    pred, gt = pred.double(), gt.double()
    pred_centre, gt_centre = pred.mean(1), gt.mean(1)  # (B, 3)
    pred_c, gt_c = pred - pred_centre[:, None], gt - gt_centre[:, None]
    pred_norm = torch.linalg.matrix_norm(pred_c) + NORM_EPS  # (B,) Frobenius
    gt_norm = torch.linalg.matrix_norm(gt_c) + NORM_EPS
    cross = gt_c.transpose(1, 2) @ pred_c / (gt_norm * pred_norm)[:, None, None]  # (B, 3, 3) of the normalised sets
    u, singular, vh = torch.linalg.svd(cross)
    return SimilarityTransform(u @ vh, singular.sum(-1) * gt_norm / pred_norm, pred_centre, gt_centre)


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) prediction aligned onto (B, N, 3) ground truth with the official similarity Procrustes; float64."""
    return fit_similarity(pred, gt).apply(pred)


def pck_counts(errors: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """errors (B, K) metres, thresholds (T,) ascending -> (K, T) int64: samples with error <= threshold."""
    bins = torch.searchsorted(thresholds, errors.double().contiguous())  # (B, K): error <= t_j  <=>  bin <= j
    hist = torch.zeros(errors.shape[1], len(thresholds) + 1, dtype=torch.int64, device=errors.device)
    hist.scatter_add_(1, bins.T, torch.ones_like(bins.T))
    return hist.cumsum(1)[:, :-1]


def auc_from_counts(counts: torch.Tensor, num_samples: int, thresholds: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(K, T) PCK counts over num_samples -> (AUC in [0, 1] averaged over keypoints, (T,) mean PCK curve)."""
    curves = counts.double() / num_samples  # (K, T)
    norm = torch.trapezoid(torch.ones_like(thresholds), thresholds)
    return float((torch.trapezoid(curves, thresholds, dim=1) / norm).mean()), curves.mean(0)


def pck_auc(errors: torch.Tensor) -> tuple[float, torch.Tensor]:
    """errors (N, K) metres over N samples -> (official AUC over 0-50 mm in [0, 1], (100,) PCK curve)."""
    thresholds = pck_thresholds(errors.device)
    return auc_from_counts(pck_counts(errors, thresholds), errors.shape[0], thresholds)


@dataclass(frozen=True)
class SampleErrors:
    """Per-sample errors of one batch: what `ScoreTotals` accumulates and `handmesh evaluate` lists; float64."""

    joint: torch.Tensor  # (B, 21) metres, unaligned keypoint errors in the camera frame
    joint_pa: torch.Tensor  # (B, 21) metres, after Procrustes on the joints
    vertex: torch.Tensor | None  # (B, 778) metres; None when the prediction lacks vertex correspondence
    vertex_pa: torch.Tensor | None  # (B, 778) metres, after Procrustes on the vertices
    f: torch.Tensor  # (B, 2) F@5mm, F@15mm of the raw vertices
    f_pa: torch.Tensor  # (B, 2) F@5mm, F@15mm of the aligned vertices

    def per_sample(self) -> dict[str, torch.Tensor]:
        """PER_SAMPLE_KEYS -> (B,) float64: errors in mm (NaN for vertex errors without correspondence), F in [0, 1]."""
        nan = torch.full_like(self.joint[:, 0], float("nan"))
        return {
            "pa_mpjpe_mm": self.joint_pa.mean(1) * 1000.0,
            "pa_mpvpe_mm": nan if self.vertex_pa is None else self.vertex_pa.mean(1) * 1000.0,
            "mpjpe_mm": self.joint.mean(1) * 1000.0,
            "mpvpe_mm": nan if self.vertex is None else self.vertex.mean(1) * 1000.0,
            "f5": self.f_pa[:, 0], "f15": self.f_pa[:, 1], "f5_unaligned": self.f[:, 0], "f15_unaligned": self.f[:, 1],
        }


@in_float32
def sample_errors(pred_keypoints: torch.Tensor, pred_vertices: torch.Tensor, gt_keypoints: torch.Tensor,
                  gt_vertices: torch.Tensor, threads: int | None = None) -> SampleErrors:
    """pred_keypoints (B, 21, 3), pred_vertices (B, V, 3), gt_keypoints (B, 21, 3), gt_vertices (B, 778, 3), metres,
    camera frame. V may differ from the ground truth's count (then only the F-scores use the vertices). threads: the
    F-scores' nearest-neighbour search scores this many parts of the batch in parallel (default: torch's count)."""
    batch = gt_keypoints.shape[0]
    if pred_keypoints.shape != gt_keypoints.shape or pred_keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints: expected pred and gt of shape (B, {NUM_KEYPOINTS}, 3), found "
                         f"{tuple(pred_keypoints.shape)} and {tuple(gt_keypoints.shape)}")
    if gt_vertices.dim() != 3 or gt_vertices.shape[0] != batch or gt_vertices.shape[2] != 3 \
            or pred_vertices.dim() != 3 or pred_vertices.shape[0] != batch or pred_vertices.shape[2] != 3:
        raise ValueError(f"vertices: expected pred (B, V, 3) and gt (B, {NUM_VERTICES}, 3) with B = {batch}, found "
                         f"{tuple(pred_vertices.shape)} and {tuple(gt_vertices.shape)}")
    pred_kp, gt_kp = pred_keypoints.double(), gt_keypoints.double()
    pred_v, gt_v = pred_vertices.double(), gt_vertices.double()
    joint = (pred_kp - gt_kp).norm(dim=-1)
    joint_pa = (procrustes_align(pred_kp, gt_kp) - gt_kp).norm(dim=-1)
    if pred_v.shape == gt_v.shape:
        vertex = (pred_v - gt_v).norm(dim=-1)
        aligned_v = procrustes_align(pred_v, gt_v)
        vertex_pa = (aligned_v - gt_v).norm(dim=-1)
    else:
        vertex = vertex_pa = None
        aligned_v = fit_similarity(pred_kp, gt_kp).apply(pred_v)
    raw_f, aligned_f = f_scores(gt_v, [pred_v, aligned_v], threads=threads)  # one pass for both
    return SampleErrors(joint, joint_pa, vertex, vertex_pa, raw_f.fscore, aligned_f.fscore)


def per_sample_scores(pred_keypoints: torch.Tensor, pred_vertices: torch.Tensor, gt_keypoints: torch.Tensor,
                      gt_vertices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Same inputs as `sample_errors` -> PER_SAMPLE_KEYS -> (B,) float64 (mm for errors)."""
    return sample_errors(pred_keypoints, pred_vertices, gt_keypoints, gt_vertices).per_sample()


@dataclass  # not frozen: torchmetrics' compute() wrapper rebuilds dataclasses field by field
class FreiHANDScores:
    """The official scores. Errors in mm, AUC and F in [0, 1]; f5/f15 are the aligned F-scores that papers report.
    Vertex errors and their AUC are None when the predicted meshes lack vertex correspondence (not 778 vertices)."""

    pa_mpjpe_mm: float
    pa_mpvpe_mm: float | None
    mpjpe_mm: float
    mpvpe_mm: float | None
    f5: float
    f15: float
    f5_unaligned: float
    f15_unaligned: float
    auc_pa_joints: float
    auc_pa_verts: float | None
    auc_joints: float
    auc_verts: float | None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


SCORE_KEYS = tuple(field.name for field in fields(FreiHANDScores))


@dataclass(frozen=True)
class PCKCurves:
    """Mean PCK curves (share of points with error <= threshold) over keypoints / vertices, as in the official plots."""

    thresholds_mm: torch.Tensor  # (100,) 0-50 mm
    joints: torch.Tensor  # (100,)
    joints_pa: torch.Tensor  # (100,)
    verts: torch.Tensor | None  # (100,); None without vertex correspondence
    verts_pa: torch.Tensor | None  # (100,)


@dataclass
class ScoreTotals:
    """Sums over samples of everything the official scores need. Every field is a sum, so the totals of parts add up
    to those of the whole exactly (what a DDP sync does), and memory is O(1) in the number of samples.

    totals.update(pred_keypoints (B, 21, 3), pred_vertices (B, V, 3), gt_keypoints (B, 21, 3),
    gt_vertices (B, 778, 3)), metres, camera frame; totals.scores() -> FreiHANDScores; totals.curves() -> PCKCurves.
    """

    joint_error_sum: torch.Tensor  # (21,) float64 metres, unaligned keypoint errors summed over samples
    joint_pck: torch.Tensor  # (21, PCK_STEPS) int64: samples with error <= each threshold
    joint_pa_error_sum: torch.Tensor  # (21,) after Procrustes
    joint_pa_pck: torch.Tensor  # (21, PCK_STEPS)
    vertex_error_sum: torch.Tensor  # (V,) float64 metres
    vertex_pck: torch.Tensor  # (V, PCK_STEPS)
    vertex_pa_error_sum: torch.Tensor  # (V,)
    vertex_pa_pck: torch.Tensor  # (V, PCK_STEPS)
    f_sum: torch.Tensor  # (2,) float64: F@5mm, F@15mm of the raw vertices
    f_pa_sum: torch.Tensor  # (2,) of the aligned vertices
    count: torch.Tensor  # () int64 samples
    vertex_count: torch.Tensor  # () int64 samples with vertex correspondence

    @classmethod
    def zeros(cls, num_vertices: int = NUM_VERTICES, device: torch.device | str | None = None) -> ScoreTotals:
        sizes = {"joint": NUM_KEYPOINTS, "joint_pa": NUM_KEYPOINTS, "vertex": num_vertices, "vertex_pa": num_vertices}
        values = {}
        for name, size in sizes.items():
            values[f"{name}_error_sum"] = torch.zeros(size, dtype=torch.float64, device=device)
            values[f"{name}_pck"] = torch.zeros(size, PCK_STEPS, dtype=torch.int64, device=device)
        f_zeros = lambda: torch.zeros(len(F_THRESHOLDS_M), dtype=torch.float64, device=device)  # noqa: E731
        count_zero = lambda: torch.zeros((), dtype=torch.int64, device=device)  # noqa: E731
        return cls(**values, f_sum=f_zeros(), f_pa_sum=f_zeros(), count=count_zero(), vertex_count=count_zero())

    def update(self, pred_keypoints: torch.Tensor, pred_vertices: torch.Tensor, gt_keypoints: torch.Tensor,
               gt_vertices: torch.Tensor) -> SampleErrors:
        """Adds one batch's errors (in place) and returns them."""
        if gt_vertices.shape[1:] != (self.vertex_error_sum.shape[0], 3):
            raise ValueError(f"gt_vertices: expected (B, {self.vertex_error_sum.shape[0]}, 3), found "
                             f"{tuple(gt_vertices.shape)}")
        threads = torch.get_num_threads()  # the F-scores' search runs samples in parallel on the caller's threads
        with torch_threads(1):  # small batched ops lose more to thread sync than they gain (docs/results.md)
            errors = sample_errors(pred_keypoints, pred_vertices, gt_keypoints, gt_vertices, threads)
            self.add(errors)
        return errors

    def add(self, errors: SampleErrors) -> None:
        """Adds per-sample errors in place (the tensors stay the same objects, so a Metric's states follow)."""
        thresholds = pck_thresholds(self.count.device)
        pairs = [("joint", errors.joint), ("joint_pa", errors.joint_pa)]
        if errors.vertex is not None:
            pairs += [("vertex", errors.vertex), ("vertex_pa", errors.vertex_pa)]
            self.vertex_count += errors.vertex.shape[0]
        for name, values in pairs:
            getattr(self, f"{name}_error_sum").add_(values.sum(0))
            getattr(self, f"{name}_pck").add_(pck_counts(values, thresholds))
        self.f_sum += errors.f.sum(0)
        self.f_pa_sum += errors.f_pa.sum(0)
        self.count += errors.joint.shape[0]

    def _vertices_defined(self) -> bool:
        count, vertex_count = int(self.count), int(self.vertex_count)
        if vertex_count not in (0, count):
            raise ValueError(f"{vertex_count} of {count} samples had vertex correspondence: a metric mixes meshes "
                             "with and without it; keep one kind of predicted mesh per metric")
        return vertex_count > 0

    def scores(self) -> FreiHANDScores:
        count = int(self.count)
        if count == 0:
            raise ValueError("no samples to score; call update() first")
        thresholds = pck_thresholds(self.count.device)

        def mean_mm(name: str) -> float:  # per keypoint over samples, then over keypoints
            return float((getattr(self, f"{name}_error_sum") / count).mean()) * 1000.0

        def auc(name: str) -> float:
            return auc_from_counts(getattr(self, f"{name}_pck"), count, thresholds)[0]

        verts = self._vertices_defined()
        f, f_pa = (self.f_sum / count).tolist(), (self.f_pa_sum / count).tolist()
        return FreiHANDScores(
            pa_mpjpe_mm=mean_mm("joint_pa"), pa_mpvpe_mm=mean_mm("vertex_pa") if verts else None,
            mpjpe_mm=mean_mm("joint"), mpvpe_mm=mean_mm("vertex") if verts else None,
            f5=f_pa[0], f15=f_pa[1], f5_unaligned=f[0], f15_unaligned=f[1],
            auc_pa_joints=auc("joint_pa"), auc_pa_verts=auc("vertex_pa") if verts else None,
            auc_joints=auc("joint"), auc_verts=auc("vertex") if verts else None,
        )

    def curves(self) -> PCKCurves:
        """Mean PCK curves from the accumulated counts (for plots)."""
        count, thresholds = int(self.count), pck_thresholds(self.count.device)
        curve = {name: auc_from_counts(getattr(self, f"{name}_pck"), max(count, 1), thresholds)[1]
                 for name in ("joint", "joint_pa", "vertex", "vertex_pa")}
        verts = self._vertices_defined()
        return PCKCurves(thresholds * 1000.0, curve["joint"], curve["joint_pa"],
                         curve["vertex"] if verts else None, curve["vertex_pa"] if verts else None)
