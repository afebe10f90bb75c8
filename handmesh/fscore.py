"""The official F-score between two vertex sets, batched: nearest-neighbour distances both ways, strict `<`.

precision = share of gt points whose nearest predicted point is closer than t; recall = share of predicted points whose
nearest gt point is closer than t; F = 2PR / (P + R), 0 when both are 0 (lmb-freiburg/freihand `calculate_fscore`).
The protocol needs nothing from the distances but these comparisons: for each point and threshold, whether some point
of the other set is strictly closer than t. `nearest_counts` answers exactly that, and nothing more.

Method (`_close_counts`, a numba kernel compiled on first use and cached on disk; samples run in parallel on
`threads` threads): per sample, each set is binned into a uniform grid whose cell is the largest threshold (cells
sorted with z fastest, so a column of cells is one contiguous run of points). A query point scans the points of its own
column and of the 8 neighbouring columns, each only over the z-range that the threshold's sphere can reach, nearest
column first, keeping the smallest squared distance; it stops as soon as every threshold is decided, and once a
larger threshold is met it only reaches as far as the smaller undecided one. Exact: squared distances are summed in
float64 in scipy's k-d tree order ((dx^2 + dy^2) + dz^2, no fused multiply-add), and `d < t` is decided as
`d^2 < limit(t)` with `limit(t)` the smallest double whose square root is >= t (sqrt is correctly rounded, so this is
the tree's own `sqrt(d^2) < t`, including points exactly at a threshold). The grid reach carries a small margin so
that rounding in the cell arithmetic never drops a point closer than a threshold. Non-finite points are never anyone's
neighbour; widely spread sets get coarser cells (at most `MAX_CELLS_PER_POINT` cells a point), down to one cell.
Tensors on another device are scored on the CPU and the counts returned to their device.

Why a grid kernel: it is exact like the official k-d trees and over ten times faster on hand-sized sets; the timings
and the designs tried are in docs/results.md ("The F-score kernel").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import torch

F_THRESHOLDS_M = (0.005, 0.015)  # F@5mm, F@15mm
PARTS_PER_THREAD = 4  # samples are split into this many parts a thread
MAX_CELLS_PER_POINT = 8  # grid memory bound: cells double in size until there are at most this many a point (+64)
# The grid reach is each threshold plus these margins, so that rounding in the cell arithmetic (a few ulps of the
# largest coordinate) never puts a point closer than the threshold outside the scanned cells.
_REACH_RELATIVE = 1e-6
_REACH_ULPS = 64
_EPS = float(np.finfo(np.float64).eps)
# Column offsets (x, y) around a query's column, nearest first: an early find ends the scan sooner.
_COLUMNS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1], [-1, -1], [-1, 1], [1, -1], [1, 1]], np.int64)


@dataclass(frozen=True)
class FScores:
    fscore: torch.Tensor  # (B, T) 2PR / (P + R), 0 where P + R = 0
    precision: torch.Tensor  # (B, T) share of gt points whose nearest predicted point is closer than t
    recall: torch.Tensor  # (B, T) share of predicted points whose nearest gt point is closer than t


def f_score(gt: torch.Tensor, pred: torch.Tensor, thresholds: tuple[float, ...] = F_THRESHOLDS_M) -> FScores:
    """Official F-score between point sets gt (B, N, 3) and pred (B, M, 3), metres, at each threshold (metres)."""
    return f_scores(gt, [pred], thresholds)[0]


def f_scores(gt: torch.Tensor, preds: Sequence[torch.Tensor],
             thresholds: tuple[float, ...] = F_THRESHOLDS_M, threads: int | None = None) -> list[FScores]:
    """`f_score` of each prediction (B, M_i, 3) against the same gt (B, N, 3), in one pass over the samples (the
    measures score raw and aligned predictions against one ground truth); float64 on gt's device."""
    scores = []
    for pred, (gt_close, pred_close) in zip(preds, nearest_counts(gt, preds, thresholds, threads)):
        precision = gt_close.double() / gt.shape[1]
        recall = pred_close.double() / pred.shape[1]
        total = precision + recall
        fscore = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-300), torch.zeros_like(total))
        scores.append(FScores(fscore, precision, recall))
    return scores


def nearest_counts(gt: torch.Tensor, preds: Sequence[torch.Tensor], thresholds: Sequence[float],
                   threads: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """gt (B, N, 3), each pred (B, M_i, 3) metres, thresholds (T,) metres in any order -> per pred ((B, T) gt points
    with a predicted point strictly closer than t, (B, T) predicted points with a gt point strictly closer than t);
    int64 on gt's device, exact (the decisions of per-sample k-d trees). threads: parallel samples (default: torch's
    thread count)."""
    thresholds = [float(t) for t in thresholds]
    if not all(t > 0 and math.isfinite(t) for t in thresholds):
        raise ValueError(f"thresholds: expected positive finite distances in metres, found {thresholds}")
    order = np.argsort(thresholds, kind="stable")  # the kernel decides thresholds in ascending order
    limits = np.array([squared_limit(thresholds[k]) for k in order])
    sets = [points.detach().to("cpu", torch.float64) for points in (gt, *preds)]
    flat = torch.cat(sets, 1).numpy()  # (B, N + sum M, 3): one copy
    bounds = np.cumsum([0, gt.shape[1], *(pred.shape[1] for pred in preds)])  # set s is flat[:, bounds[s]:bounds[s+1]]
    threads = max(torch.get_num_threads() if threads is None else threads, 1)
    # Several parts a thread: on a busy machine a thread that falls behind leaves less work unshared at the end.
    parts = np.array_split(np.arange(flat.shape[0]), 1 if threads == 1 else PARTS_PER_THREAD * threads)
    parts = [slice(part[0], part[-1] + 1) for part in parts if len(part)]
    run = lambda part: _close_counts(flat[part], bounds, limits, np.array(thresholds)[order])  # noqa: E731
    if len(parts) == 1:
        counts = [run(parts[0])]
    else:  # the kernel releases the GIL: Python threads run it in parallel
        with ThreadPoolExecutor(threads) as pool:
            counts = list(pool.map(run, parts))
    gt_close = np.concatenate([gt_part for gt_part, _ in counts], axis=1)  # (P, B, T)
    pred_close = np.concatenate([pred_part for _, pred_part in counts], axis=1)  # (P, B, T)
    inverse = np.argsort(order)
    return [(torch.from_numpy(gt_close[p][:, inverse]).to(gt.device),
             torch.from_numpy(pred_close[p][:, inverse]).to(gt.device)) for p in range(len(preds))]


def load_kernel() -> bool:
    """Get the nearest-neighbour kernel ready in this process, as the first F-score would: load it from numba's
    on-disk cache, or compile it when the cache is cold (once per install and numba version). -> True if it came from
    the cache."""
    _close_counts(np.zeros((1, 2, 3)), np.array([0, 1, 2]), np.array([1.0]), np.array([1.0]))
    return sum(_close_counts.stats.cache_misses.values()) == 0


def squared_limit(threshold: float) -> float:
    """The smallest double x with sqrt(x) >= threshold: for d^2 >= 0, sqrt(d^2) < threshold <=> d^2 < x (IEEE sqrt
    is correctly rounded, hence monotonic)."""
    x = threshold * threshold
    while math.sqrt(x) >= threshold:
        x = math.nextafter(x, -math.inf)
    while math.sqrt(x) < threshold:
        x = math.nextafter(x, math.inf)
    return x


@numba.njit(cache=True, nogil=True)
def _bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """points (N, 3) -> (lowest (3,), highest (3,)) coordinates of the finite points; lowest > highest if none."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for i in range(points.shape[0]):
        if np.isfinite(points[i, 0]) and np.isfinite(points[i, 1]) and np.isfinite(points[i, 2]):
            for a in range(3):
                lo[a] = min(lo[a], points[i, a])
                hi[a] = max(hi[a], points[i, a])
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _grid(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, cell: float):
    """points (N, 3) with finite bounds lo, hi (3,) -> (xyz (3, F) finite points sorted by cell, start (cells + 1,)
    first point of each cell, dims (3,) cells along x, y, z, cell size; inf: one cell holds every finite point).
    Cell (ix, iy, iz) = floor((p - lo) / cell), numbered (ix * dims[1] + iy) * dims[2] + iz."""
    n = points.shape[0]
    dims = np.ones(3, np.int64)
    while lo[0] <= hi[0]:
        total = 1.0
        for a in range(3):
            total *= math.floor((hi[a] - lo[a]) / cell) + 1.0
        if not math.isfinite(total):  # the extent itself overflows: one cell
            break
        if total <= MAX_CELLS_PER_POINT * n + 64:
            for a in range(3):
                dims[a] = int(math.floor((hi[a] - lo[a]) / cell)) + 1
            break
        cell *= 2.0
    if dims[0] * dims[1] * dims[2] == 1:
        cell = np.inf
    cells = dims[0] * dims[1] * dims[2]
    index = np.full(n, -1, np.int64)
    start = np.zeros(cells + 2, np.int64)
    for i in range(n):
        if not (np.isfinite(points[i, 0]) and np.isfinite(points[i, 1]) and np.isfinite(points[i, 2])):
            continue
        c = 0
        if math.isfinite(cell):
            for a in range(3):
                c = c * dims[a] + min(int(math.floor((points[i, a] - lo[a]) / cell)), dims[a] - 1)
        index[i] = c
        start[c + 2] += 1
    for c in range(2, cells + 2):
        start[c] += start[c - 1]
    xyz = np.empty((3, start[cells + 1]))
    for i in range(n):  # counting sort; start[c + 1] walks through cell c's slots
        c = index[i]
        if c >= 0:
            slot = start[c + 1]
            start[c + 1] = slot + 1
            for a in range(3):
                xyz[a, slot] = points[i, a]
    return xyz, start[:cells + 1], dims, cell


@numba.njit(cache=True, nogil=True)
def _count_close(queries, points, xyz, start, lo, dims, cell, limits, reaches, out) -> None:
    """queries (M, 3), the other set's points (N, 3) and `_grid` (xyz, start, lo, dims, cell), limits (T,) ascending
    `squared_limit`s, reaches (T,) metres -> out (T,) += queries whose nearest point is closer than each threshold.
    With as many points as queries (vertex correspondence) each query starts from its own index's point: a close
    partner decides the larger thresholds before any cell is scanned."""
    count = limits.shape[0]
    single = not math.isfinite(cell)
    reach2 = (reaches / cell) ** 2  # (T,) in cells, squared
    for i in range(queries.shape[0]):
        qx, qy, qz = queries[i, 0], queries[i, 1], queries[i, 2]
        if not (np.isfinite(qx) and np.isfinite(qy) and np.isfinite(qz)):
            continue
        best = np.inf  # smallest squared distance scanned, m^2
        if points.shape[0] == queries.shape[0]:
            dx, dy, dz = qx - points[i, 0], qy - points[i, 1], qz - points[i, 2]
            partner = (dx * dx + dy * dy) + dz * dz
            if partner < best:  # false for NaN (a non-finite partner)
                best = partner
        if single:
            for j in range(start[0], start[1]):
                dx, dy, dz = qx - xyz[0, j], qy - xyz[1, j], qz - xyz[2, j]
                best = min(best, (dx * dx + dy * dy) + dz * dz)
        else:
            ux, uy, uz = (qx - lo[0]) / cell, (qy - lo[1]) / cell, (qz - lo[2]) / cell  # in cells
            if not (-1.0 <= ux < dims[0] + 1.0 and -1.0 <= uy < dims[1] + 1.0 and -1.0 <= uz < dims[2] + 1.0):
                continue  # farther than a cell (>= every reach) from every point
            cx, cy = math.floor(ux), math.floor(uy)
            undecided = count  # thresholds 0 .. undecided - 1 are not met yet
            while undecided > 0 and best < limits[undecided - 1]:
                undecided -= 1
            for o in range(_COLUMNS.shape[0] if undecided > 0 else 0):
                ix, iy = cx + _COLUMNS[o, 0], cy + _COLUMNS[o, 1]
                if ix < 0 or ix >= dims[0] or iy < 0 or iy >= dims[1]:
                    continue
                gx, gy = max(ix - ux, ux - (ix + 1), 0.0), max(iy - uy, uy - (iy + 1), 0.0)  # gap to the column
                half2 = reach2[undecided - 1] - gx * gx - gy * gy  # squared half-height of the sphere there
                if half2 < 0.0:
                    continue
                half = math.sqrt(half2)
                z0, z1 = max(math.floor(uz - half), 0), min(math.floor(uz + half), dims[2] - 1)
                column = (ix * dims[1] + iy) * dims[2]
                for j in range(start[column + z0], start[column + z1 + 1]):  # empty when z0 > z1
                    dx, dy, dz = qx - xyz[0, j], qy - xyz[1, j], qz - xyz[2, j]
                    best = min(best, (dx * dx + dy * dy) + dz * dz)
                while undecided > 0 and best < limits[undecided - 1]:
                    undecided -= 1
                if undecided == 0:
                    break
        for k in range(count):
            if best < limits[k]:
                out[k] += 1


@numba.njit(cache=True, nogil=True)
def _close_counts(flat, bounds, limits, thresholds):
    """flat (B, N + sum M, 3) metres: set 0 (gt) and the predictions side by side, set s = flat[:, bounds[s]:bounds[s
    + 1]]; limits (T,) ascending `squared_limit`s of thresholds (T,) -> (P, B, T) gt points with a predicted point
    closer than each threshold, (P, B, T) predicted points with a gt point closer."""
    sets, batch, count = bounds.shape[0] - 1, flat.shape[0], limits.shape[0]
    gt_close = np.zeros((sets - 1, batch, count), np.int64)
    pred_close = np.zeros((sets - 1, batch, count), np.int64)
    for b in range(batch):
        lows, highs = np.empty((sets, 3)), np.empty((sets, 3))
        largest = 0.0  # largest finite coordinate magnitude of the sample, m
        for s in range(sets):
            lows[s], highs[s] = _bounds(flat[b, bounds[s]:bounds[s + 1]])
            if lows[s, 0] <= highs[s, 0]:
                largest = max(largest, np.abs(lows[s]).max(), np.abs(highs[s]).max())
        reaches = thresholds * (1.0 + _REACH_RELATIVE) + _REACH_ULPS * _EPS * largest
        gt = flat[b, bounds[0]:bounds[1]]
        g_xyz, g_start, g_dims, g_cell = _grid(gt, lows[0], highs[0], reaches[-1])
        for s in range(1, sets):
            pred = flat[b, bounds[s]:bounds[s + 1]]
            p_xyz, p_start, p_dims, p_cell = _grid(pred, lows[s], highs[s], reaches[-1])
            _count_close(gt, pred, p_xyz, p_start, lows[s], p_dims, p_cell, limits, reaches, gt_close[s - 1, b])
            _count_close(pred, gt, g_xyz, g_start, lows[0], g_dims, g_cell, limits, reaches, pred_close[s - 1, b])
    return gt_close, pred_close
