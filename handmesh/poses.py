"""Named hand poses and a viewing placement that work for any MANO-format model (real MANO or the stand-in).

Finger flexion is derived from the model's own rest geometry (each bone bends toward the palm), so no axis is assumed;
where the thumb must meet something (pinch, fist) its angles are solved through the layer for the given model.
"""

from __future__ import annotations

from operator import itemgetter

import numpy as np
import torch

from handmesh.geometry import axis_angle_to_rotmat
from handmesh.joints import FINGERTIP_VERTEX_IDS
from handmesh.mano import ManoLayer

POSE_NAMES = ("flat", "fist", "pinch", "point", "random")
# MANO joint -> the index of the next point along its finger: child joint, or the fingertip vertex for the last joint.
_TIP_OF_CHAIN = {3: FINGERTIP_VERTEX_IDS[1], 6: FINGERTIP_VERTEX_IDS[2], 9: FINGERTIP_VERTEX_IDS[4],
                 12: FINGERTIP_VERTEX_IDS[3], 15: FINGERTIP_VERTEX_IDS[0]}


def rest_frame(layer: ManoLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rest-pose joints (16, 3), the finger direction (3,) and the palm normal (3,) (pointing out of the palm)."""
    v = layer.v_template.double()
    joints = (layer.J_regressor.double() @ v).numpy()
    fingers = joints[4] - joints[0]
    fingers /= np.linalg.norm(fingers)
    across = joints[1] - joints[7]  # pinky base -> index base, toward the thumb
    normal = np.cross(across, fingers) if layer.side == "right" else np.cross(fingers, across)
    normal -= normal.dot(fingers) * fingers
    return joints, fingers, normal / np.linalg.norm(normal)


def flexion_axes(layer: ManoLayer) -> np.ndarray:
    """(15, 3) unit axes: a positive rotation about axis j bends joint j+1's bone toward the palm."""
    joints, _, normal = rest_frame(layer)
    v = layer.v_template.double().numpy()
    axes = np.zeros((15, 3))
    for joint in range(1, 16):
        child = v[_TIP_OF_CHAIN[joint]] if joint in _TIP_OF_CHAIN else joints[joint + 1]
        bone = child - joints[joint]
        axis = np.cross(bone, normal)  # rotating `bone` about bone x normal turns it toward the normal
        axes[joint - 1] = axis / np.linalg.norm(axis)
    return axes


# Flexion per joint (radians) of the four fingers, MANO joint order minus the wrist: index, middle, pinky, ring.
_CURLED = (1.3, 1.5, 1.0)  # MCP, PIP, DIP: a closed fist
_PINCH_INDEX = (0.55, 0.75, 0.5)
_RELAXED = 0.25
_THUMB = slice(12, 15)  # thumb CMC, MCP, IP among the 15 finger joints
_THUMB_START = (0.3, 0.6, 0.6)  # flexion the thumb's solve starts from (and is pulled toward)
# FreiHAND keypoints the fist's thumb folds over: middle phalanges (PIP, DIP) of index and middle, or of middle and
# ring for "point" (its index is straight).
_FOLD_OVER = {"fist": (6, 7, 10, 11), "point": (10, 11, 14, 15)}
_THUMB_TIP, _INDEX_TIP = 4, 8  # FreiHAND keypoints


def _rotations(axes: torch.Tensor, angles: torch.Tensor, thumb_cmc: torch.Tensor) -> torch.Tensor:
    """axes (15, 3), angles (15,) flexion, thumb_cmc (3,) the thumb's first joint's axis-angle -> (1, 16, 3, 3)."""
    axis_angle = axes * angles[:, None]  # (15, 3)
    axis_angle = torch.cat([axis_angle[:12], thumb_cmc[None], axis_angle[13:]])
    eye = torch.eye(3, dtype=axes.dtype)[None]
    return torch.cat([eye, axis_angle_to_rotmat(axis_angle)])[None]


def _solve_thumb(layer: ManoLayer, axes: torch.Tensor, angles: torch.Tensor, free: tuple[int, ...], target
                 ) -> torch.Tensor:
    """Bend the thumb (CMC: any rotation) and the flexion of the `free` joints (of 15) so that the thumb tip reaches
    `target(keypoints (21, 3)) -> (3,)`.

    Minimises |tip - target|^2 / L^2 + 0.01 |x - x0|^2 (L: the rest hand's length, wrist to middle tip; x: the solved
    values, x0: where they start) by L-BFGS in float64: deterministic, about 15-20 MANO evaluations. Returns the
    (1, 16, 3, 3) rotations.
    """
    free = list(free)
    with torch.no_grad():
        rest = layer(torch.eye(3, dtype=torch.float64).expand(1, 16, 3, 3)).keypoints[0]  # (21, 3)
    length = (rest[12] - rest[0]).norm()
    start = torch.cat([axes[12] * angles[12], angles[free]])  # thumb CMC axis-angle (3), then free flexion
    params = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([params], lr=1.0, max_iter=40, tolerance_change=1e-6, line_search_fn="strong_wolfe")

    def pose(values: torch.Tensor) -> torch.Tensor:
        flexion = angles.index_put((torch.tensor(free),), values[3:])
        return _rotations(axes, flexion, values[:3])

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        keypoints = layer(pose(params)).keypoints[0]
        # x100: keeps the loss well above L-BFGS's default tolerances
        loss = 100 * ((keypoints[_THUMB_TIP] - target(keypoints)).square().sum() / length**2
                      + 0.01 * (params - start).square().sum())
        loss.backward()
        return loss

    optimiser.step(closure)
    return pose(params.detach())


def _fold_target(normal: torch.Tensor, over: tuple[int, ...]):
    """target(keypoints) for a folded thumb: over the middle of the `over` keypoints, one finger radius (half the
    spacing of the index and middle MCPs) further out on the palm side than they are."""

    def target(keypoints: torch.Tensor) -> torch.Tensor:
        radius = (keypoints[5] - keypoints[9]).norm() / 2
        return keypoints[list(over)].mean(0) + radius * normal

    return target


def named_pose(layer: ManoLayer, name: str, seed: int = 0) -> torch.Tensor:
    """(1, 16, 3, 3) full rotations (flat hand = identity) for a named pose in the model frame.

    Fingers bend about the model's own flexion axes; for "pinch", "fist" and "point" the thumb is then solved through
    the layer (`_solve_thumb`) so that its tip meets the index tip (the index bending with it), or folds over the curled
    fingers on the palm side.
    """
    if name not in POSE_NAMES:
        raise ValueError(f"unknown pose {name!r}; expected one of {POSE_NAMES}")
    with torch.inference_mode(False), torch.enable_grad():  # the thumb's solve differentiates, whatever the caller
        return _named_pose(layer, name, seed)


def _named_pose(layer: ManoLayer, name: str, seed: int) -> torch.Tensor:
    if name == "flat":
        return torch.eye(3).expand(1, 16, 3, 3).clone()
    if name == "random":
        generator = torch.Generator().manual_seed(seed)
        # MANO's hands_components rows carry their spread, so unit coefficients give a natural grasp.
        coefficients = torch.randn(1, 6, generator=generator, dtype=torch.float64)
        return layer.pose_from_pca(torch.zeros(1, 3, dtype=torch.float64), coefficients).float()
    axes = torch.as_tensor(flexion_axes(layer))  # (15, 3) float64
    angles = torch.zeros(15, dtype=torch.float64)  # flexion per joint, radians
    angles[_THUMB] = torch.tensor(_THUMB_START)
    if name == "pinch":
        angles[:12] = _RELAXED
        angles[:3] = torch.tensor(_PINCH_INDEX)
        free, target = (0, 1, 2, 13, 14), itemgetter(_INDEX_TIP)  # target(keypoints) = the index tip
    else:  # fist, point
        angles[:12] = torch.tensor(_CURLED).repeat(4)
        if name == "point":
            angles[:3] = 0.0
        free, target = (13, 14), _fold_target(torch.as_tensor(rest_frame(layer)[2]), _FOLD_OVER[name])
    return _solve_thumb(layer, axes, angles, free, target).float()


def viewing_placement(layer: ManoLayer, vertices: np.ndarray, focal: float, size: int, fill: float = 0.7) -> np.ndarray:
    """Move (778, 3) model-frame vertices in front of an OpenCV camera: palm facing it, fingers up, centred.

    Returns (778, 3) camera-frame metres such that the hand spans about `fill` of a `size`-pixel image at `focal`.
    """
    _, fingers, normal = rest_frame(layer)
    model_axes = np.stack([fingers, normal, np.cross(fingers, normal)], axis=1)  # columns
    camera_up, toward_camera = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    camera_axes = np.stack([camera_up, toward_camera, np.cross(camera_up, toward_camera)], axis=1)
    rotation = camera_axes @ model_axes.T
    rotated = vertices @ rotation.T
    centre = (rotated.max(0) + rotated.min(0)) / 2
    extent = np.max(rotated.max(0)[:2] - rotated.min(0)[:2])
    depth = focal * extent / (fill * size)
    return rotated - centre + np.array([0.0, 0.0, depth])
