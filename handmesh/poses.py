"""Named hand poses and a viewing placement that work for any MANO-format model (real MANO or the stand-in).

Finger flexion is derived from the model's own rest geometry (each bone bends toward the palm), so no axis is assumed.
"""

from __future__ import annotations

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


def named_pose(layer: ManoLayer, name: str, seed: int = 0) -> torch.Tensor:
    """(1, 16, 3, 3) full rotations (flat hand = identity) for a named pose in the model frame."""
    if name not in POSE_NAMES:
        raise ValueError(f"unknown pose {name!r}; expected one of {POSE_NAMES}")
    angles = np.zeros(15)  # flexion per joint, radians
    if name == "fist":
        angles[:] = 1.35
        angles[[12, 13, 14]] = (0.3, 0.6, 0.9)  # thumb: CMC, MCP, IP fold over the fingers
    elif name == "pinch":
        angles[[0, 1, 2]] = (0.55, 0.75, 0.5)  # index
        angles[[12, 13, 14]] = (0.5, 0.45, 0.35)  # thumb toward the index tip
        angles[3:12] = 0.25
    elif name == "point":
        angles[3:12] = 1.4
        angles[[12, 13, 14]] = (0.3, 0.6, 0.7)
    elif name == "random":
        generator = torch.Generator().manual_seed(seed)
        spread = torch.tensor([1.2, 0.8, 0.6, 0.5, 0.4, 0.3], dtype=torch.float64)  # falls off like MANO's PCA
        coefficients = torch.randn(1, 6, generator=generator, dtype=torch.float64) * spread
        return layer.pose_from_pca(torch.zeros(1, 3, dtype=torch.float64), coefficients).float()
    axis_angle = torch.as_tensor(flexion_axes(layer) * angles[:, None])  # (15, 3)
    rotations = torch.cat([torch.eye(3, dtype=torch.float64)[None], axis_angle_to_rotmat(axis_angle)])
    return rotations[None].float()


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
