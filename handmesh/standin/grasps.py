"""Natural grasps and gestures of the stand-in hand, and their PCA (MANO's hands_components / hands_mean).

A pose is 45 axis-angle values: joints 1..15 in MANO's order, each a rotation about axes of the rest hand (MANO
composes them along the kinematic tree, so a joint's axes move with its parent). Fingers bend about their flexion
axes (positive toward the palm) and spread about their dorsal axes; the thumb's base (CMC) also swings out of the
palm's plane and turns its pad toward the fingers.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from handmesh.standin.anatomy import Anatomy

SEED = 20240611  # the grasp set is random but fixed
VARIANTS = 24  # random variants of every gesture
NOISE = 0.06  # radians: per-joint jitter of each variant

# Finger curl (MCP, PIP, DIP flexion, radians) per finger (index, middle, pinky, ring: MANO's order) and the
# thumb's (palmar swing, CMC flexion, MCP flexion, IP flexion); the pinch, tripod and OK thumbs were solved so
# that the thumb tip meets the finger tips.
_OPEN = (0.0, 0.0, 0.0)
_RELAXED = (0.25, 0.35, 0.2)
_CURLED = (1.45, 1.6, 0.9)
_HOOK = (0.1, 1.5, 1.1)
GESTURES = {
    "flat": ((_OPEN,) * 4, (0.0, 0.0, 0.0, 0.0)),
    "relaxed": ((_RELAXED,) * 4, (0.0, 0.2, 0.15, 0.15)),
    "cup": (((0.5, 0.6, 0.35),) * 4, (0.2, 0.5, 0.2, 0.2)),
    "cylinder": (((0.9, 1.1, 0.6),) * 4, (0.3, 0.8, 0.3, 0.3)),
    "fist": ((_CURLED,) * 4, (0.2, 1.2, 0.5, 0.6)),
    "point": ((_OPEN, _CURLED, _CURLED, _CURLED), (0.2, 1.1, 0.4, 0.5)),
    "pinch": (((0.55, 0.75, 0.45), _RELAXED, _RELAXED, _RELAXED), (-0.2, 0.76, 0.0, 0.0)),
    "tripod": (((0.6, 0.8, 0.4), (0.6, 0.8, 0.4), _RELAXED, _RELAXED), (-0.22, 0.88, 0.0, 0.0)),
    "ok": (((0.8, 0.9, 0.55), _OPEN, _OPEN, _OPEN), (0.07, 0.39, 0.25, 0.12)),
    "victory": ((_OPEN, _OPEN, _CURLED, _CURLED), (0.2, 1.1, 0.4, 0.5)),
    "thumbs-up": ((_CURLED,) * 4, (-0.1, -0.1, 0.0, 0.0)),
    "claw": ((_HOOK,) * 4, (0.1, 0.4, 0.3, 0.5)),
    "spread": ((_OPEN,) * 4, (-0.3, -0.3, 0.0, 0.0)),
}
_SPREAD = {"spread": (0.25, 0.02, -0.35, -0.15), "victory": (0.2, -0.15, 0.0, 0.0)}


def gesture_poses(anatomy: Anatomy, curls: np.ndarray, thumbs: np.ndarray, spreads: np.ndarray) -> np.ndarray:
    """(P, 45) axis-angle from per-finger curls (P, 4, 3) radians, the thumb's 4 values (P, 4) and per-finger
    spreads (P, 4) radians (fingers in MANO's order: index, middle, pinky, ring)."""
    count = len(curls)
    pose = np.zeros((count, 15, 3))
    for k, chain in enumerate(anatomy.digits[:4]):
        axes = chain.flexion_axes()
        # The knuckle bends and spreads (about the finger's dorsal axis); the other joints only bend.
        knuckle = Rotation.from_rotvec(curls[:, k, :1] * axes[0]) * Rotation.from_rotvec(spreads[:, k:k + 1]
                                                                                        * chain.dorsal[0])
        pose[:, 3 * k] = knuckle.as_rotvec()
        pose[:, 3 * k + 1] = curls[:, k, 1:2] * axes[1]
        pose[:, 3 * k + 2] = curls[:, k, 2:3] * axes[2]
    thumb = anatomy.digits[4]
    palmar, cmc, mcp, ip = (thumbs[:, i:i + 1] for i in range(4))
    axes, directions = thumb.flexion_axes(), thumb.directions()
    # The palmar swing takes the metacarpal out of the palm's plane and turns its pad toward the fingers.
    swing = Rotation.from_rotvec(0.6 * palmar * np.cross(directions[0], [0.0, -1.0, 0.0]))
    turn = Rotation.from_rotvec(0.7 * palmar * directions[0])
    pose[:, 12] = (swing * turn * Rotation.from_rotvec(cmc * axes[0])).as_rotvec()
    pose[:, 13] = mcp * axes[1]
    pose[:, 14] = ip * axes[2]
    return pose.reshape(count, 45)


def grasp_set(anatomy: Anatomy) -> np.ndarray:
    """(N, 45) poses: every gesture in VARIANTS random variants (partly formed, jittered), fixed by SEED."""
    rng = np.random.default_rng(SEED)
    curls, thumbs, spreads = [], [], []
    for name, (curl, thumb) in GESTURES.items():
        amount = rng.uniform(0.55, 1.1, size=(VARIANTS, 1))  # how far into the gesture
        curls.append(np.array(curl)[None] * (amount * rng.uniform(0.85, 1.15, size=(VARIANTS, 4)))[:, :, None])
        thumbs.append(np.array(thumb)[None] * amount)
        spreads.append(np.array(_SPREAD.get(name, (0.0,) * 4))[None] * amount + rng.normal(0.0, 0.05, (VARIANTS, 4)))
    poses = gesture_poses(anatomy, np.concatenate(curls), np.concatenate(thumbs), np.concatenate(spreads))
    return poses + rng.normal(0.0, NOISE, poses.shape)


def pose_pca(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of poses (N, 45) in MANO's form: mean (45,); components (45, 45), rows by falling variance, each the
    principal direction scaled by its standard deviation (MANO's rows are scaled so, not orthonormal); coefficients
    (N, 45) with poses = mean + coefficients @ components, each column of unit spread. Each component's largest
    entry is positive.

    Products are einsums (numpy's own loops, not the threaded BLAS) and the eigensolver sees a 45 x 45 matrix, so
    the bytes do not depend on the number of BLAS threads.
    """
    mean = poses.mean(axis=0)
    centred = poses - mean
    covariance = np.einsum("ni,nj->ij", centred, centred) / len(poses)  # (45, 45)
    variances, vectors = np.linalg.eigh(covariance)  # ascending
    directions = vectors[:, ::-1].T  # (45, 45) unit rows by falling variance
    directions *= np.sign(directions[np.arange(len(directions)), np.argmax(np.abs(directions), axis=1)])[:, None]
    std = np.sqrt(np.clip(variances[::-1], 0.0, None))  # (45,) radians: the grasps' spread along each direction
    return mean, directions * std[:, None], np.einsum("ni,ki->nk", centred, directions) / std
