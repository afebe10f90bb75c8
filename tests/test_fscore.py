"""The F-scores' nearest-neighbour kernel decides exactly like scipy's k-d trees (the official script's decisions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from handmesh.fscore import nearest_counts, squared_limit

THRESHOLDS = (0.005, 0.015, 0.002)  # not in ascending order on purpose


def tree_counts(gt: np.ndarray, pred: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """What the official script decides: scipy k-d tree nearest distances both ways, strict `<`; (B, T) each.
    Non-finite points take no part (a tree of the finite ones; a non-finite query has no neighbour)."""
    t = np.asarray(thresholds)

    def close(queries, points):
        finite_points = points[np.isfinite(points).all(1)]
        distances = np.full(len(queries), np.inf)
        finite = np.isfinite(queries).all(1)
        if len(finite_points):
            distances[finite] = cKDTree(finite_points).query(queries[finite])[0]
        return (distances[:, None] < t).sum(0)

    return (np.array([close(g, p) for g, p in zip(gt, pred)]),
            np.array([close(p, g) for g, p in zip(gt, pred)]))


def kernel_counts(gt: np.ndarray, preds: list[np.ndarray], thresholds, threads: int = 1):
    return [(gt_close.numpy(), pred_close.numpy()) for gt_close, pred_close in
            nearest_counts(torch.from_numpy(gt), [torch.from_numpy(p) for p in preds], thresholds, threads)]


def test_squared_limit_is_the_smallest_square_whose_root_reaches_the_threshold():
    for t in (0.005, 0.015, 2.0**-8, 0.1, 1e-7, 3.0, 0.0123456789):
        limit = squared_limit(t)
        assert math.sqrt(limit) >= t and math.sqrt(math.nextafter(limit, 0.0)) < t
        assert abs(limit - t * t) <= 4 * math.ulp(t * t)


@pytest.mark.parametrize("spread", [0.03, 0.3])  # hand-dense clouds (many candidates) and sparse ones
@pytest.mark.parametrize("threads", [1, 3])
def test_kernel_agrees_with_the_trees_on_random_clouds_with_points_at_the_thresholds(spread, threads):
    rng = np.random.default_rng(11)
    batch = 6
    gt = rng.normal(size=(batch, 300, 3)) * spread + [0.0, 0.0, 0.6]
    pred = gt[:, :250] + rng.normal(size=(batch, 250, 3)) * 0.008  # another count: no vertex correspondence
    # exactly 5 mm / 15 mm apart along an axis (as float64 coordinates)
    pred[:, :40] = gt[:, :40] + [0.005, 0.0, 0.0]
    pred[:, 40:80] = gt[:, 40:80] + [0.0, -0.015, 0.0]
    # 5 / 15 / 2 mm apart in random directions: squared distances within a few ulps of t^2, decided by rounding alone
    direction = rng.normal(size=(batch, 120, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    pred[:, 80:200] = gt[:, 80:200] + direction * np.repeat(THRESHOLDS, 40)[None, :, None]
    pred[4, 200:] += [0.5, 0.0, 0.0]  # far from every gt point
    pred[5, 249] = [1e3, 0.0, 0.0]  # an outlier 1 km away: the grid gets coarser cells
    gt[3, 299] = [0.0, -2e5, 0.0]  # ... and in the ground truth
    other = gt[:, :290] + rng.normal(size=(batch, 290, 3)) * 0.004  # a second prediction scored in the same pass
    [(gt_close, pred_close), (other_gt_close, other_pred_close)] = kernel_counts(gt, [pred, other], THRESHOLDS,
                                                                                  threads)
    expected_gt, expected_pred = tree_counts(gt, pred, THRESHOLDS)
    np.testing.assert_array_equal(gt_close, expected_gt)
    np.testing.assert_array_equal(pred_close, expected_pred)
    for got, expected in zip((other_gt_close, other_pred_close), tree_counts(gt, other, THRESHOLDS)):
        np.testing.assert_array_equal(got, expected)
    if spread == 0.3:  # sparse: the random-direction pairs are each other's nearest; rounding splits them both ways
        distances = np.linalg.norm(pred[:, 80:200] - gt[:, 80:200], axis=-1).reshape(batch, 3, 40)
        for k, t in enumerate(THRESHOLDS):
            assert 0 < (distances[:, k] < t).sum() < distances[:, k].size


def test_points_just_under_the_threshold_are_found_from_every_position_in_a_cell():
    # One pair a sample, 15 mm - 1 nm apart along x, swept in 5 um steps over two cell widths (cells are the largest
    # threshold and a hair; they start at the anchor, the lowest coordinate). Wherever a cell boundary falls between
    # the pair, the gt point's gap to its partner's column is up to the threshold itself: a search that reaches
    # less than a full threshold into the neighbouring column (0.1 % less: 15 um) misses some partners.
    start = np.arange(6000) * 5e-6 + 0.03  # metres
    pred = np.zeros((len(start), 2, 3))
    pred[:, 1, 0], pred[:, 1, 1] = start, 0.5  # the anchor (0, 0, 0) is 0.5 m away from the pair
    gt = pred[:, 1:] + [0.015 - 1e-9, 0.0, 0.0]
    [(gt_close, pred_close)] = kernel_counts(gt, [pred], (0.015,))
    assert gt_close.min() == 1 and pred_close.min() == 1
    assert (pred_close == 2).sum() == 0  # the anchor has no gt point near it


def test_non_finite_points_are_nobodys_neighbours_and_huge_coordinates_share_one_cell():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(3, 50, 3)) * 0.05
    pred = gt + rng.normal(size=gt.shape) * 0.004
    pred[0, :5] = np.nan
    pred[0, 5:8] = [np.inf, 0.0, -np.inf]
    gt[1, :4] = np.nan
    gt[2, 0] = [1e300, 0.0, 0.0]  # the extents overflow: one cell holds every point
    pred[2, 0] = [1e300, 0.0, 0.002]
    [(gt_close, pred_close)] = kernel_counts(gt, [pred], THRESHOLDS)
    expected_gt, expected_pred = tree_counts(gt, pred, THRESHOLDS)
    np.testing.assert_array_equal(gt_close, expected_gt)
    np.testing.assert_array_equal(pred_close, expected_pred)
    assert pred_close[0, 0] <= 42 and gt_close[1, 0] <= 46  # the non-finite points counted nowhere


def test_nearest_counts_on_hand_worked_points():
    u = 2.0**-8  # every distance below is exact in binary; gt A(0,0,0) B(3u,0,0) C(8u,0,0), pred P(0,u,0) Q(3u,2u,0)
    hand_gt = np.array([[[0, 0, 0], [3 * u, 0, 0], [8 * u, 0, 0]]], dtype=np.float64)
    hand_pred = np.array([[[0, u, 0], [3 * u, 2 * u, 0]]], dtype=np.float64)
    [(gt_close, pred_close)] = kernel_counts(hand_gt, [hand_pred], (u, 1.5 * u, 2 * u, 3 * u, 6 * u))
    # gt -> nearest pred: u, 2u, sqrt(29) u; pred -> nearest gt: u, 2u; strict `<`
    assert gt_close.tolist() == [[0, 1, 1, 2, 3]] and pred_close.tolist() == [[0, 1, 1, 2, 2]]


def test_thresholds_must_be_positive_distances():
    points = torch.zeros(1, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="positive finite"):
        nearest_counts(points, [points], (0.005, -1.0))
