"""Natural grasps and gestures of the stand-in hand, and their PCA (MANO's hands_components / hands_mean).

A pose is 45 axis-angle values: joints 1..15 in MANO's order, each a rotation about axes of the rest hand (MANO
composes them along the kinematic tree, so a joint's axes move with its parent). Fingers bend about their flexion
axes (positive toward the palm) and spread about their dorsal axes; the thumb's base (CMC) also opposes: it swings
across the palm and turns its pad toward the fingers.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from handmesh.standin.anatomy import Anatomy

SEED = 20240611  # the grasp set is random but fixed
VARIANTS = 24  # random variants of every gesture
NOISE = 0.06  # radians: per-joint jitter of each variant

# Finger curl (MCP, PIP, DIP flexion, radians) and spread (radians, toward the thumb) per finger, and the thumb's
# (opposition, CMC flexion, MCP flexion, IP flexion). Fingers: index, middle, pinky, ring (MANO's order).
_OPEN = (0.0, 0.0, 0.0)
_RELAXED = (0.25, 0.35, 0.2)
_CURLED = (1.45, 1.6, 0.9)
_HOOK = (0.1, 1.5, 1.1)
GESTURES = {
    "flat": ((_OPEN,) * 4, (0.0, 0.0, 0.0, 0.0)),
    "relaxed": ((_RELAXED,) * 4, (0.2, 0.1, 0.2, 0.2)),
    "cup": (((0.5, 0.6, 0.35),) * 4, (0.5, 0.2, 0.3, 0.3)),
    "cylinder": (((0.9, 1.1, 0.6),) * 4, (0.7, 0.3, 0.4, 0.4)),
    "fist": ((_CURLED,) * 4, (0.8, 0.6, 0.7, 0.8)),
    "point": ((_OPEN, _CURLED, _CURLED, _CURLED), (0.7, 0.5, 0.6, 0.6)),
    "pinch": (((0.55, 0.75, 0.45), _RELAXED, _RELAXED, _RELAXED), (0.9, 0.15, 0.25, 0.35)),
    "tripod": (((0.6, 0.8, 0.4), (0.6, 0.8, 0.4), _RELAXED, _RELAXED), (0.95, 0.2, 0.25, 0.3)),
    "ok": (((0.8, 0.9, 0.55), _OPEN, _OPEN, _OPEN), (0.9, 0.2, 0.3, 0.5)),
    "victory": ((_OPEN, _OPEN, _CURLED, _CURLED), (0.8, 0.5, 0.6, 0.6)),
    "thumbs-up": ((_CURLED,) * 4, (-0.1, -0.1, 0.0, 0.0)),
    "claw": ((_HOOK,) * 4, (0.4, 0.2, 0.2, 0.3)),
    "spread": ((_OPEN,) * 4, (-0.2, -0.15, 0.0, 0.0)),
}
_SPREAD = {"spread": (0.25, 0.02, -0.35, -0.15), "victory": (0.2, -0.15, 0.0, 0.0)}


def gesture_pose(anatomy: Anatomy, curls, thumb, spread=(0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """(45,) axis-angle for per-finger curls (4 x 3 radians), the thumb's 4 values and per-finger spread."""
    pose = np.zeros((15, 3))
    for k, chain in enumerate(anatomy.digits[:4]):
        axes = chain.flexion_axes()
        for bone in range(3):
            rotation = Rotation.from_rotvec(curls[k][bone] * axes[bone])
            if bone == 0:  # spread happens at the knuckle, about the finger's dorsal axis
                rotation = rotation * Rotation.from_rotvec(spread[k] * chain.dorsal[0])
            pose[3 * k + bone] = rotation.as_rotvec()
    thumb_chain = anatomy.digits[4]
    opposition, cmc, mcp, ip = thumb
    axes, directions = thumb_chain.flexion_axes(), thumb_chain.directions()
    # Opposition: swing the metacarpal palmward (about its dorsal-crossing axis) and turn the pad toward the
    # fingers (about its own length), then flex toward the palm.
    swing = Rotation.from_rotvec(0.6 * opposition * np.cross(directions[0], [0.0, -1.0, 0.0]))
    turn = Rotation.from_rotvec(0.7 * opposition * directions[0])
    pose[12] = (swing * turn * Rotation.from_rotvec(cmc * axes[0])).as_rotvec()
    pose[13] = mcp * axes[1]
    pose[14] = ip * axes[2]
    return pose.ravel()


def grasp_set(anatomy: Anatomy) -> np.ndarray:
    """(N, 45) poses: every gesture in VARIANTS random variants (partly opened, jittered), fixed by SEED."""
    rng = np.random.default_rng(SEED)
    poses = []
    for name, (curls, thumb) in GESTURES.items():
        spread = _SPREAD.get(name, (0.0, 0.0, 0.0, 0.0))
        for _ in range(VARIANTS):
            amount = rng.uniform(0.55, 1.1)  # how far into the gesture
            finger_amounts = amount * rng.uniform(0.85, 1.15, size=(4, 1))
            pose = gesture_pose(anatomy, np.array(curls) * finger_amounts, np.array(thumb) * amount,
                                np.array(spread) * amount + rng.normal(0.0, 0.05, 4))
            poses.append(pose + rng.normal(0.0, NOISE, 45))
    return np.array(poses)


def pose_pca(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of poses (N, 45): mean (45,), components (45, 45) orthonormal rows by falling variance, coefficients
    (N, 45) with poses = mean + coefficients @ components. Each component's largest entry is positive."""
    mean = poses.mean(axis=0)
    _, _, vt = np.linalg.svd(poses - mean, full_matrices=True)
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    components = vt * signs[:, None]
    return mean, components, (poses - mean) @ components.T
