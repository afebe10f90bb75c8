"""The official F-score between two vertex sets, batched: nearest-neighbour distances both ways, strict `<`.

precision = share of gt points whose nearest predicted point is closer than t; recall = share of predicted points whose
nearest gt point is closer than t; F = 2PR / (P + R), 0 when both are 0 (lmb-freiburg/freihand `calculate_fscore`).

Nearest neighbours (`nearest_counts`, one implementation for CPU and GPU): per sample, squared distances from a float32
GEMM (|a|^2 + |b|^2 - 2 a.b, one matrix gives both directions), restricted to pairs that can be closer than the
largest threshold: both sets are sorted along the ground truth's principal axis, its points are cut into `ROW_BLOCKS`
slabs, and each slab is compared only with the predicted points whose projection lies within the largest threshold
of the slab's projection range (a projection never exceeds a distance, so no pair closer than any threshold is
skipped, in either direction). Points whose
nearest squared distance lies within the GEMM's rounding band of a threshold are recomputed exactly in float64 from
the given coordinates, summed in scipy's order ((dx^2 + dy^2) + dz^2), so every decision is the one the official
script's k-d trees make.
Measured on 256 FreiHAND-sized hand pairs (raw and aligned predictions), one thread, on the shared 2-core machine
at load 6-7, CPU time per pair: per-sample scipy `cKDTree`s 1.41 ms, a full float32 GEMM (ROW_BLOCKS = 1) 1.86 ms
(cache-bound), 2 / 4 / 6 / 8 slabs 0.78 / 0.77 / 0.75 / 0.94 ms. Threads do not pay here: with 2 torch threads
the small GEMMs ran 17x slower (OpenMP barriers on a busy machine), and 2 Python threads gained nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

F_THRESHOLDS_M = (0.005, 0.015)  # F@5mm, F@15mm
ROW_BLOCKS = 4  # ground-truth slabs per sample along the principal axis
CHUNK = 64  # samples sorted and projected together
# A K = 5 GEMM's squared distances are off by at most ~30 eps R^2 (5 products, the rounded norms and coordinates;
# R = largest distance from the ground truth's centroid; 4.5 eps R^2 measured in float32 on hands and Gaussian
# clouds): points within 64 eps R^2 of a threshold are recomputed.
_BAND_ULPS = 64
_WINDOW_MARGIN = 1e-6  # relative: slab windows reach this much beyond the largest threshold (float64 projections)


@dataclass(frozen=True)
class FScores:
    fscore: torch.Tensor  # (B, T) 2PR / (P + R), 0 where P + R = 0
    precision: torch.Tensor  # (B, T) share of gt points whose nearest predicted point is closer than t
    recall: torch.Tensor  # (B, T) share of predicted points whose nearest gt point is closer than t


def f_score(gt: torch.Tensor, pred: torch.Tensor, thresholds: tuple[float, ...] = F_THRESHOLDS_M) -> FScores:
    """Official F-score between point sets gt (B, N, 3) and pred (B, M, 3), metres, at each threshold (metres)."""
    t = torch.tensor(thresholds, dtype=torch.float64, device=gt.device)
    gt_close, pred_close = nearest_counts(gt.double(), pred.double(), t)
    precision = gt_close.double() / gt.shape[1]
    recall = pred_close.double() / pred.shape[1]
    total = precision + recall
    fscore = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-300), torch.zeros_like(total))
    return FScores(fscore, precision, recall)


def nearest_counts(gt: torch.Tensor, pred: torch.Tensor, thresholds: torch.Tensor, row_blocks: int = ROW_BLOCKS,
                   chunk_size: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """gt (B, N, 3), pred (B, M, 3) float64 metres, thresholds (T,) float64 -> ((B, T) gt points with a predicted
    point strictly closer than t, (B, T) predicted points with a gt point strictly closer than t); int64, exact."""
    with one_thread():
        return _nearest_counts(gt, pred, thresholds, row_blocks, chunk_size)


@contextlib.contextmanager
def one_thread():
    """Run torch's CPU ops on one thread, then restore the caller's setting. The measures' many small GEMMs and
    reductions ran 17x slower on 2 threads than on 1 on the shared 2-core machine (OpenMP barriers of a busy pool)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _nearest_counts(gt: torch.Tensor, pred: torch.Tensor, thresholds: torch.Tensor, row_blocks: int,
                    chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gt_counts, pred_counts = [], []
    for start in range(0, gt.shape[0], chunk_size):
        g, p = gt[start:start + chunk_size], pred[start:start + chunk_size]
        g_sorted, g_key, p_sorted, p_key = _sorted_along_principal_axis(g, p)
        centre = g.mean(1, keepdim=True)  # (C, 1, 3) small coordinates keep the GEMM's cancellation error small
        gc, pc = g_sorted - centre, p_sorted - centre  # (C, N, 3), (C, M, 3) float64, sorted along the axis
        band = _BAND_ULPS * torch.finfo(torch.float32).eps * torch.maximum(
            _square_norm(gc).amax(-1), _square_norm(pc).amax(-1))  # (C,) m^2
        row_min, col_min = _windowed_min_d2(gc.float(), g_key, pc.float(), p_key,
                                            float(thresholds.max()) * (1 + _WINDOW_MARGIN), row_blocks)
        gt_counts.append(_count_closer(row_min, band, g_sorted, p, thresholds))
        pred_counts.append(_count_closer(col_min, band, p_sorted, g, thresholds))
    return torch.cat(gt_counts), torch.cat(pred_counts)


def _square_norm(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (...) x^2 + y^2 + z^2 summed in that order (scipy's k-d tree order; torch's sum over 3 may not)."""
    return points[..., 0].square() + points[..., 1].square() + points[..., 2].square()


def _sorted_along_principal_axis(g: torch.Tensor, p: torch.Tensor):
    """g (C, N, 3), p (C, M, 3) -> both sorted by their projection on the principal axis of g: (C, N, 3) points,
    (C, N) projections, (C, M, 3), (C, M); float64 metres, the coordinates exactly as given."""
    gc = g - g.mean(1, keepdim=True)
    axis = torch.linalg.eigh(gc.transpose(1, 2) @ gc).eigenvectors[..., -1:]  # (C, 3, 1) unit: largest variance
    g_key, g_order = (g @ axis)[..., 0].sort(1)
    p_key, p_order = (p @ axis)[..., 0].sort(1)
    return _take_rows(g, g_order), g_key, _take_rows(p, p_order), p_key


def _take_rows(points: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """points (C, N, 3), order (C, N) -> points[c, order[c]] (C, N, 3); a flat row index (torch.gather is slower)."""
    flat = order + torch.arange(order.shape[0], device=order.device)[:, None] * points.shape[1]
    return points.reshape(-1, 3).index_select(0, flat.reshape(-1)).view(points.shape)


def _windowed_min_d2(gc: torch.Tensor, g_key: torch.Tensor, pc: torch.Tensor, p_key: torch.Tensor, reach: float,
                     row_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gc (C, N, 3), pc (C, M, 3) float32 centred, sorted by their float64 projections g_key (C, N), p_key (C, M).
    -> ((C, N), (C, M)) float64: smallest squared distance (m^2, float32 accuracy) to the other set among pairs whose
    projections differ by at most `reach` (inf where there is none). Exact for every pair closer than `reach`."""
    num_g = gc.shape[1]
    left = torch.cat([gc, _square_norm(gc)[..., None], torch.ones_like(gc[..., :1])], -1)  # (C, N, 5)
    right = torch.cat([-2.0 * pc, torch.ones_like(pc[..., :1]), _square_norm(pc)[..., None]], -1)
    right = right.transpose(1, 2).contiguous()  # (C, 5, M): left @ right = squared distances
    edges = [num_g * k // row_blocks for k in range(row_blocks + 1)]
    blocks = [(first, last) for first, last in zip(edges[:-1], edges[1:]) if last > first]
    bounds = torch.stack([torch.stack([g_key[:, first] - reach, g_key[:, last - 1] + reach], -1)
                          for first, last in blocks], 1)  # (C, blocks, 2) projection range of each slab's partners
    columns = torch.stack([torch.searchsorted(p_key, bounds[..., 0].contiguous()),
                           torch.searchsorted(p_key, bounds[..., 1].contiguous(), right=True)], -1).tolist()
    slabs = [part.unbind(0) for part in left.split([last - first for first, last in blocks], 1)]  # [block][c]
    row_parts = []  # (slab,) float32 m^2 per sample and slab, in (C, N) order
    col_min = torch.full(p_key.shape, float("inf"), device=gc.device)  # (C, M)
    for c, (right_c, col_c) in enumerate(zip(right.unbind(0), col_min.unbind(0))):  # views: slicing costs more
        for slab, (lo, hi) in zip(slabs, columns[c]):
            if hi == lo:  # no predicted point near the slab
                row_parts.append(torch.full(slab[c].shape[:1], float("inf"), device=gc.device))
                continue
            d2 = slab[c] @ right_c.narrow(1, lo, hi - lo)  # (slab, window) m^2
            row_parts.append(d2.amin(1))
            window = col_c.narrow(0, lo, hi - lo)
            torch.minimum(window, d2.amin(0), out=window)
    row_min = torch.cat(row_parts).view(g_key.shape)
    return row_min.double(), col_min.double()


def _count_closer(d2: torch.Tensor, band: torch.Tensor, queries: torch.Tensor, points: torch.Tensor,
                  thresholds: torch.Tensor) -> torch.Tensor:
    """d2 (C, N) squared nearest distances within band (C,) of the exact ones (or inf: none closer than any
    threshold); queries (C, N, 3), points (C, M, 3) float64 metres as given -> (C, T) how many queries have their
    nearest point strictly closer than each threshold. Rows within the band of a threshold are recomputed exactly."""
    d2 = d2.clamp(min=0.0)
    squares = (thresholds**2).tolist()  # T is small: 2-D comparisons beat a broadcast (C, N, T) on the CPU
    ambiguous = torch.stack([(d2 - square).abs() <= band[:, None] for square in squares]).any(0)  # (C, N)
    if ambiguous.any():
        c, n = ambiguous.nonzero(as_tuple=True)
        d2[c, n] = _square_norm(queries[c, n][:, None, :] - points[c]).amin(-1)  # (A,) exact float64
    distance = d2.sqrt()
    return torch.stack([(distance < t).sum(1) for t in thresholds.tolist()], 1)
