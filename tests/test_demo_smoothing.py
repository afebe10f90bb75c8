"""One Euro filter against hand-computed values, and the per-track smoother."""

import math

import numpy as np
import pytest

from handmesh.demo.crop import Box, HandEstimate
from handmesh.demo.smoothing import HandSmoother, OneEuroFilter, SmoothingParams, smoothing_factor


def test_smoothing_factor():
    # r = 2 pi * 1 Hz * 0.1 s = 0.6283; alpha = r / (r + 1) = 0.38586
    assert smoothing_factor(1.0, 0.1) == pytest.approx(0.385869, abs=1e-6)


def test_one_euro_without_beta_is_an_exponential_low_pass():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert f(np.array([0.0]), 0.0)[0] == 0.0  # the first sample passes through
    a = 0.385869  # alpha(1 Hz, 0.1 s)
    assert f(np.array([1.0]), 0.1)[0] == pytest.approx(a, abs=1e-6)
    assert f(np.array([1.0]), 0.2)[0] == pytest.approx(a + a * (1 - a), abs=1e-6)  # 0.62266


def test_one_euro_with_beta_opens_up_with_speed():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    f(np.array([0.0, 0.0]), 0.0)
    out = f(np.array([1.0, 0.0]), 0.1)
    # element 0: dx = 10 /s, dx_hat = 0.385869 * 10 = 3.85869; cutoff = 1 + 0.5 * 3.85869 = 2.92934 Hz
    # r = 2 pi * 2.92934 * 0.1 = 1.84056; alpha = 1.84056 / 2.84056 = 0.647957
    r = 2 * math.pi * (1 + 0.5 * 3.85869) * 0.1
    assert out[0] == pytest.approx(r / (r + 1), abs=1e-5)
    assert out[0] == pytest.approx(0.647957, abs=1e-5)
    assert out[1] == 0.0


def test_one_euro_repeated_timestamp_keeps_the_estimate_and_reset_restarts():
    f = OneEuroFilter()
    f(np.array([0.0]), 0.0)
    first = f(np.array([1.0]), 0.1)
    np.testing.assert_array_equal(f(np.array([5.0]), 0.1), first)
    f.reset()
    assert f(np.array([5.0]), 0.2)[0] == 5.0


K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])


def hand(offset: float, track_id: int = 0) -> HandEstimate:
    """Every point at (offset, offset, 1 + offset) metres."""
    points = np.full((799, 3), offset, np.float32) + [0, 0, 1]
    return HandEstimate(
        vertices=points[:778], faces=np.zeros((1538, 3), np.int64), keypoints_3d=points[778:],
        keypoints_2d=np.zeros((21, 2), np.float32), box=Box(0, 0, 10), is_left=False, track_id=track_id,
    )


def test_hand_smoother_tracks_are_independent_and_switch_off_resets():
    params = SmoothingParams(min_cutoff=1.0, beta_pixels=0.0, beta_metres=0.0)
    smoother = HandSmoother(params)
    smoother.hand(hand(0.0, track_id=0), 0.0, K)
    smoother.hand(hand(5.0, track_id=1), 0.0, K)
    out = smoother.hand(hand(1.0, track_id=0), 0.1, K)
    a = 0.385869  # alpha(1 Hz, 0.1 s): x 0 -> 1 gives 0.385869, z 1 -> 2 gives 1.385869
    np.testing.assert_allclose(out.vertices[0], [a, a, 1 + a], atol=1e-6)
    np.testing.assert_allclose(out.keypoints_2d[0], [50 + 100 * a / (1 + a), 40 + 100 * a / (1 + a)], atol=1e-4)
    assert smoother.hand(hand(5.0, track_id=1), 0.1, K).vertices[0, 0] == pytest.approx(5.0)
    smoother.keep({1})  # track 0 ended: it starts afresh when seen again
    assert smoother.hand(hand(3.0, track_id=0), 0.2, K).vertices[0, 0] == pytest.approx(3.0)
    smoother.follow(False)
    assert smoother.follow(True)  # switched back on: stale state dropped
    assert smoother.hand(hand(7.0, track_id=1), 0.3, K).vertices[0, 0] == pytest.approx(7.0)


def test_box_smoothing():
    smoother = HandSmoother(SmoothingParams(min_cutoff=1.0, beta_pixels=0.0))
    smoother.box(0, Box(0, 0, 100), 0.0)
    box = smoother.box(0, Box(10, 0, 100), 0.1)
    assert box.cx == pytest.approx(3.85869, abs=1e-4) and box.size == pytest.approx(100)
