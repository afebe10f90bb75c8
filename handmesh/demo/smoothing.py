"""Temporal smoothing of per-frame hand outputs with the One Euro filter (Casiez, Roussel, Vogel; CHI 2012).

A low-pass filter whose cutoff rises with speed: still hands stop jittering, moving hands do not lag. Each array
element is filtered on its own (its own speed and cutoff).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from handmesh.demo.crop import Box, HandEstimate


def smoothing_factor(cutoff: float, dt: float) -> float:
    """alpha of an exponential low-pass with `cutoff` Hz sampled every dt seconds: r / (r + 1), r = 2 pi cutoff dt."""
    r = 2.0 * math.pi * cutoff * dt
    return r / (r + 1.0)


class OneEuroFilter:
    """x_hat = x_hat' + alpha(cutoff) (x - x_hat'), cutoff = min_cutoff + beta |dx_hat|, dx_hat low-passed at d_cutoff.

    min_cutoff and d_cutoff in Hz; beta in 1 / (units of x); timestamps in seconds. The first sample passes through.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None  # last filtered value
        self._dx: np.ndarray | None = None  # last filtered derivative, units of x per second
        self._t = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: keep the last estimate
            return self._x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + smoothing_factor(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        r = 2.0 * np.pi * cutoff * dt
        self._x = self._x + r / (r + 1.0) * (x - self._x)
        self._t = t
        return self._x.copy()


@dataclass(frozen=True)
class SmoothingParams:
    """One Euro settings per kind of quantity (beta is per unit of the quantity)."""

    min_cutoff: float = 1.5  # Hz
    beta_pixels: float = 0.01  # 1/px: 300 px/s adds 3 Hz
    beta_metres: float = 5.0  # 1/m: 0.6 m/s adds 3 Hz
    d_cutoff: float = 1.0  # Hz


class HandSmoother:
    """Per-track One Euro filters for the crop box (px) and the 3D outputs (metres). Tracks are keyed by track_id."""

    def __init__(self, params: SmoothingParams = SmoothingParams()):
        self.params = params
        self._filters: dict[tuple[int, str], OneEuroFilter] = {}
        self._was_on = True

    def follow(self, on: bool) -> bool:
        """Follow the live on/off switch: when switched back on, forget the stale state. Returns `on`."""
        if on and not self._was_on:
            self.reset()
        self._was_on = on
        return on

    def _filter(self, track_id: int, kind: str, beta: float) -> OneEuroFilter:
        key = (track_id, kind)
        if key not in self._filters:
            self._filters[key] = OneEuroFilter(self.params.min_cutoff, beta, self.params.d_cutoff)
        return self._filters[key]

    def box(self, track_id: int, box: Box, t: float) -> Box:
        cx, cy, size = self._filter(track_id, "box", self.params.beta_pixels)(box.as_array(), t)
        return Box(float(cx), float(cy), float(size))

    def hand(self, hand: HandEstimate, t: float, K: np.ndarray) -> HandEstimate:
        """Smooths vertices and 3D keypoints together (metres); the 2D keypoints become the smoothed 3D keypoints
        projected through the frame's K (3, 3) px, so the skeleton, the mesh and the tracker's box agree."""
        n = len(hand.vertices)
        points = self._filter(hand.track_id, "3d", self.params.beta_metres)(
            np.concatenate([hand.vertices, hand.keypoints_3d]), t
        )  # (778 + 21, 3)
        uvw = points[n:] @ np.asarray(K, dtype=np.float64).T
        keypoints_2d = uvw[:, :2] / np.maximum(uvw[:, 2:], 1e-6)  # (21, 2) px
        return replace(
            hand,
            vertices=points[:n].astype(np.float32),
            keypoints_3d=points[n:].astype(np.float32),
            keypoints_2d=keypoints_2d.astype(np.float32),
        )

    def keep(self, track_ids: set[int]) -> None:
        """Forget the filters of tracks that ended (a hand that comes back starts fresh)."""
        self._filters = {key: f for key, f in self._filters.items() if key[0] in track_ids}

    def reset(self) -> None:
        self._filters.clear()
