"""The official F-score between two vertex sets, batched: nearest-neighbour distances both ways, strict `<`.

precision = share of gt points whose nearest predicted point is closer than t; recall = share of predicted points whose
nearest gt point is closer than t; F = 2PR / (P + R), 0 when both are 0 (lmb-freiburg/freihand `calculate_fscore`).

Nearest neighbours (`nearest_counts`, one implementation for CPU and GPU): per sample, squared distances from a float32
GEMM (|a|^2 + |b|^2 - 2 a.b, one matrix gives both directions), restricted to pairs that can be closer than the
largest threshold: both sets are sorted along the ground truth's principal axis, its points are cut into `ROW_BLOCKS`
slabs, and each slab is compared only with the predicted points whose projection lies within the largest threshold
of the slab's projection range (a projection never exceeds a distance, so no pair closer than any threshold is
skipped, in either direction). Points whose nearest squared distance lies within the GEMM's rounding band of a
threshold are recomputed exactly in float64 from the given coordinates, summed in scipy's order
((dx^2 + dy^2) + dz^2), so every decision is the one the official script's k-d trees make. `f_scores` scores several
predictions (the raw and the aligned mesh) against one ground truth with one principal axis and ordering.

Measured on 256 FreiHAND-sized hand pairs (raw and aligned predictions), one thread, on the shared 2-core machine
at load 6-7, CPU time per pair: per-sample scipy `cKDTree`s 1.41 ms, a full float32 GEMM (ROW_BLOCKS = 1) 1.86 ms
(cache-bound), 2 / 4 / 6 / 8 slabs 0.78 / 0.77 / 0.75 / 0.94 ms. Sharing the ground truth's ordering between the raw
and aligned predictions and sorting CPU rows with numpy (13 vs 44 us a row) took 1.17x less CPU on 1,024 bench hands
(load ~3.7). The floor of this design: a (195 x 330) mm with both minima costs ~0.85 ns a pair of points, and each
of the ~20 ops per pair ~5 us of dispatch on the loaded machine.
Tried and slower here (same bench hands, load 3-4, CPU time against these slabs):
- bounds from the vertex correspondence (each point against the 8 points nearest its index in a reference hand)
  decide 64 % / 97 % of the aligned points at 5 / 15 mm but only 3 % / 27 % of the raw ones (~26 mm off); searching
  only the undecided points (batched per-direction windows, or a 5 mm reach plus full rows) ran at 0.3-1.0x: the
  bounds and the bookkeeping cost more than the GEMM entries they save;
- lower bounds from clusters of 6-25 points cut GEMM entries 2.5-5x on paper, but blocks that small cost 17-54 ns
  an entry in torch (batched small GEMMs alone 5-20 ns, reductions over small dimensions ~3 ns);
- slabs of 32-130 rows of all samples batched into one bmm per window width: 0.8-1.1x.
Threads do not pay here: with 2 torch threads the small GEMMs ran 17x slower (OpenMP barriers on a busy machine),
and 2 Python threads gained nothing (load 2.7: no idle core to gain from).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
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
    return f_scores(gt, [pred], thresholds)[0]


def f_scores(gt: torch.Tensor, preds: Sequence[torch.Tensor],
             thresholds: tuple[float, ...] = F_THRESHOLDS_M) -> list[FScores]:
    """`f_score` of each prediction (B, M_i, 3) against the same gt (B, N, 3): the gt's principal axis and ordering
    are computed once (the measures score raw and aligned predictions against one ground truth)."""
    t = torch.tensor(thresholds, dtype=torch.float64, device=gt.device)
    scores = []
    for pred, (gt_close, pred_close) in zip(preds, nearest_counts(gt.double(), [p.double() for p in preds], t)):
        precision = gt_close.double() / gt.shape[1]
        recall = pred_close.double() / pred.shape[1]
        total = precision + recall
        fscore = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-300), torch.zeros_like(total))
        scores.append(FScores(fscore, precision, recall))
    return scores


def nearest_counts(gt: torch.Tensor, preds: Sequence[torch.Tensor], thresholds: torch.Tensor,
                   row_blocks: int = ROW_BLOCKS, chunk_size: int = CHUNK) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """gt (B, N, 3), each pred (B, M, 3) float64 metres, thresholds (T,) float64 -> per pred ((B, T) gt points with a
    predicted point strictly closer than t, (B, T) predicted points with a gt point strictly closer than t); int64,
    exact."""
    with one_thread():
        return _nearest_counts(gt, preds, thresholds, row_blocks, chunk_size)


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


def _nearest_counts(gt: torch.Tensor, preds: Sequence[torch.Tensor], thresholds: torch.Tensor, row_blocks: int,
                    chunk_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    counts = [([], []) for _ in preds]  # per pred: gt-side and pred-side (C, T) counts of each chunk
    reach = float(thresholds.max()) * (1 + _WINDOW_MARGIN)
    for start in range(0, gt.shape[0], chunk_size):
        g = gt[start:start + chunk_size]
        centre = g.mean(1, keepdim=True)  # (C, 1, 3) small coordinates keep the GEMM's cancellation error small
        axis = _principal_axis(g - centre)  # (C, 3, 1)
        g_key, g_order = _sort_rows((g @ axis)[..., 0])
        g_sorted = _take_rows(g, g_order)
        gc = g_sorted - centre  # (C, N, 3) float64, sorted along the axis
        g_extent = _square_norm(gc).amax(-1)  # (C,) m^2
        left = _gemm_rows(gc.float())  # (C, N, 5)
        for pred, (gt_parts, pred_parts) in zip(preds, counts):
            p = pred[start:start + chunk_size]
            p_key, p_order = _sort_rows((p @ axis)[..., 0])
            p_sorted = _take_rows(p, p_order)
            pc = p_sorted - centre  # (C, M, 3) float64, sorted along the same axis
            band = _BAND_ULPS * torch.finfo(torch.float32).eps * torch.maximum(g_extent, _square_norm(pc).amax(-1))
            row_min, col_min = _windowed_min_d2(left, g_key, pc.float(), p_key, reach, row_blocks)
            gt_parts.append(_count_closer(row_min, band, g_sorted, p, thresholds))
            pred_parts.append(_count_closer(col_min, band, p_sorted, g, thresholds))
    return [(torch.cat(gt_parts), torch.cat(pred_parts)) for gt_parts, pred_parts in counts]


def _square_norm(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (...) x^2 + y^2 + z^2 summed in that order (scipy's k-d tree order; torch's sum over 3 may not)."""
    return points[..., 0].square() + points[..., 1].square() + points[..., 2].square()


def _principal_axis(centred: torch.Tensor) -> torch.Tensor:
    """centred (C, N, 3) -> (C, 3, 1) unit axis of largest variance (float64)."""
    return torch.linalg.eigh(centred.transpose(1, 2) @ centred).eigenvectors[..., -1:]


def _sort_rows(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (C, N) -> (sorted keys, order) along dim 1, as `keys.sort(1)` (ties in any order). On the CPU numpy's
    vectorised sort is used: 3.3x faster than torch's on (64, 778) float64 rows (13 vs 44 us a row, load ~3)."""
    if keys.device.type != "cpu":
        return keys.sort(1)
    order = torch.from_numpy(keys.detach().numpy().argsort(1))
    return keys.gather(1, order), order


def _take_rows(points: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """points (C, N, 3), order (C, N) -> points[c, order[c]] (C, N, 3); a flat row index (torch.gather is slower)."""
    flat = order + torch.arange(order.shape[0], device=order.device)[:, None] * points.shape[1]
    return points.reshape(-1, 3).index_select(0, flat.reshape(-1)).view(points.shape)


def _gemm_rows(points: torch.Tensor) -> torch.Tensor:
    """(C, N, 3) float32 centred -> (C, N, 5) rows [x, y, z, |p|^2, 1] of the squared-distance GEMM."""
    return torch.cat([points, _square_norm(points)[..., None], torch.ones_like(points[..., :1])], -1)


def _windowed_min_d2(left: torch.Tensor, g_key: torch.Tensor, pc: torch.Tensor, p_key: torch.Tensor, reach: float,
                     row_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """left (C, N, 5) `_gemm_rows` of the centred gt, pc (C, M, 3) float32 centred, sorted by their float64
    projections g_key (C, N), p_key (C, M). -> ((C, N), (C, M)) float64: smallest squared distance (m^2, float32
    accuracy) to the other set among pairs whose projections differ by at most `reach` (inf where there is none).
    Exact for every pair closer than `reach`."""
    num_g = left.shape[1]
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
    col_min = torch.full(p_key.shape, float("inf"), device=left.device)  # (C, M)
    for c, (right_c, col_c) in enumerate(zip(right.unbind(0), col_min.unbind(0))):  # views: slicing costs more
        for slab, (lo, hi) in zip(slabs, columns[c]):
            if hi == lo:  # no predicted point near the slab
                row_parts.append(torch.full(slab[c].shape[:1], float("inf"), device=left.device))
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
