"""Reference predictors that put a trained model's numbers in context."""

from __future__ import annotations

import os

import numpy as np
import torch

from handmesh.joints import NUM_BETAS, NUM_POSE_PARAMS, ROOT_KEYPOINT
from handmesh.mano import ManoLayer


def mean_rotation(rotations: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) -> (3, 3): the rotation nearest (Frobenius) to the arithmetic mean of the matrices."""
    u, _, vt = torch.linalg.svd(rotations.mean(dim=0))
    d = torch.sign(torch.linalg.det(u @ vt))
    return u @ torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d])) @ vt


def mean_pose_predictions(mano_dir: str | os.PathLike, training_mano: np.ndarray, gt_keypoints: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The "mean pose" baseline: one hand for every sample, placed by the ground-truth root.

    training_mano (N, 61) FreiHAND MANO values of the training samples (48 pose relative to hands_mean, 10 shape, ...);
    gt_keypoints (M, 21, 3) metres. The hand has the mean finger pose, the mean global rotation and the mean shape of
    the training set; each copy is translated so that its wrist lands on the sample's true wrist.
    Returns keypoints (M, 21, 3) and vertices (M, 778, 3), metres, camera frame.
    """
    layer = ManoLayer.from_dir(mano_dir, side="right").double()
    # a copy: the cache is memory-mapped read-only
    values = torch.tensor(np.asarray(training_mano), dtype=torch.float64)
    pose = values[:, :NUM_POSE_PARAMS]
    rotations = layer.pose_from_axis_angle(pose, add_hands_mean=True)  # (N, 16, 3, 3)
    mean_pose = torch.stack([mean_rotation(rotations[:, joint]) for joint in range(rotations.shape[1])])[None]
    betas = values[:, NUM_POSE_PARAMS:NUM_POSE_PARAMS + NUM_BETAS].mean(dim=0, keepdim=True)
    with torch.no_grad():
        output = layer(mean_pose, betas)
    keypoints, vertices = output.keypoints[0].numpy(), output.vertices[0].numpy()  # (21, 3), (778, 3)
    shift = np.asarray(gt_keypoints)[:, ROOT_KEYPOINT] - keypoints[ROOT_KEYPOINT]  # (M, 3)
    return keypoints[None] + shift[:, None], vertices[None] + shift[:, None]
