"""The mean-pose baseline: mean rotation maths and placement by the true wrist."""

from __future__ import annotations

import numpy as np
import torch

from handmesh.baselines import mean_pose_predictions, mean_rotation
from handmesh.geometry import axis_angle_to_rotmat
from handmesh.mano import ManoLayer


def test_mean_rotation_of_symmetric_pair_is_the_middle():
    pair = axis_angle_to_rotmat(torch.tensor([[0.0, 0.0, 0.4], [0.0, 0.0, -0.4]], dtype=torch.float64))
    torch.testing.assert_close(mean_rotation(pair), torch.eye(3, dtype=torch.float64))
    single = axis_angle_to_rotmat(torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64))
    torch.testing.assert_close(mean_rotation(single), single[0])


def test_baseline_reproduces_a_hand_when_every_sample_has_its_pose(standin_dir):
    """All training samples share one pose and shape -> the baseline is that hand, placed on the true wrist."""
    generator = torch.Generator().manual_seed(0)
    pose = torch.randn(1, 48, generator=generator, dtype=torch.float64) * 0.3
    betas = torch.randn(1, 10, generator=generator, dtype=torch.float64)
    layer = ManoLayer.from_dir(standin_dir).double()
    hand = layer(layer.pose_from_axis_angle(pose), betas)
    training = np.concatenate([pose.numpy(), betas.numpy(), np.zeros((1, 3))], axis=1).repeat(5, axis=0)  # (5, 61)
    shift = np.array([[0.01, -0.02, 0.6], [0.0, 0.03, 0.45]])  # two test samples, wrist positions differ
    gt_keypoints = hand.keypoints.numpy() + shift[:, None]
    keypoints, vertices = mean_pose_predictions(standin_dir, training, gt_keypoints)
    np.testing.assert_allclose(keypoints, gt_keypoints, atol=1e-9)
    np.testing.assert_allclose(vertices, hand.vertices.numpy() + shift[:, None], atol=1e-9)
