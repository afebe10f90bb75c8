"""Loss terms against hand-computed values, masking, and the weighted total."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from handmesh.geometry import axis_angle_to_rotmat
from handmesh.losses import (
    LossWeights,
    hand_losses,
    keypoint_3d_loss,
    masked_mean,
    reprojection_loss,
    rotation_loss,
    shape_loss,
    shape_prior,
)


def test_keypoint_and_reprojection_losses_in_their_units():
    target = torch.zeros(2, 21, 3)
    assert keypoint_3d_loss(target + torch.tensor([0.01, 0.0, 0.0]), target).item() == pytest.approx(0.01 / 3)
    assert keypoint_3d_loss(target + 0.02, target).item() == pytest.approx(0.02)
    assert reprojection_loss(torch.full((2, 21, 2), 10.0), torch.zeros(2, 21, 2), crop_size=100).item() == pytest.approx(0.1)


def test_rotation_and_shape_losses_use_only_samples_with_mano():
    identity = torch.eye(3).expand(2, 16, 3, 3)
    turned = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, torch.pi / 2])).expand(2, 16, 3, 3)
    # a quarter turn about z, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], differs from I by 1 in 4 of 9 entries
    assert rotation_loss(turned, identity, torch.tensor([True, True])).item() == pytest.approx(4 / 9, abs=1e-6)
    assert rotation_loss(turned, identity, torch.tensor([False, False])).item() == 0.0
    betas = torch.tensor([[1.0] * 10, [3.0] * 10])
    assert shape_loss(betas, torch.zeros(2, 10), torch.tensor([True, False])).item() == pytest.approx(1.0)
    assert shape_prior(betas).item() == pytest.approx(5.0)


def test_masked_mean_without_samples_is_a_differentiable_zero():
    values = torch.ones(3, requires_grad=True)
    result = masked_mean(values, torch.zeros(3, dtype=torch.bool))
    result.backward()
    assert result.item() == 0.0 and values.grad.abs().sum() == 0


def test_total_is_the_weighted_sum_and_zero_weights_drop_terms():
    generator = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    inputs = dict(
        pred_keypoints_rel=rand(2, 21, 3), pred_vertices_rel=rand(2, 778, 3), pred_keypoints_2d=rand(2, 21, 2) * 64,
        pred_pose=axis_angle_to_rotmat(rand(2, 16, 3)), pred_betas=rand(2, 10),
        target_keypoints_3d=rand(2, 21, 3), target_vertices=rand(2, 778, 3), target_keypoints_2d=rand(2, 21, 2) * 64,
        target_pose=axis_angle_to_rotmat(rand(2, 16, 3)), target_betas=rand(2, 10), has_mano=torch.tensor([True, False]),
        crop_size=64, pred_keypoints_2d_heatmap=rand(2, 21, 2) * 64,
    )
    weights = LossWeights()
    terms = hand_losses(**inputs, weights=weights)
    expected = sum(getattr(weights, name) * terms[name] for name in weights.as_dict())
    assert terms["total"].item() == pytest.approx(expected.item())
    headless = hand_losses(**dict(inputs, pred_keypoints_2d_heatmap=None), weights=weights)  # no keypoint head
    assert "keypoints_2d_heatmap" not in headless
    assert headless["total"].item() == pytest.approx(expected.item() - terms["keypoints_2d_heatmap"].item())
    # root-relative targets: moving the whole target hand changes nothing in 3D
    shifted = dict(inputs, target_keypoints_3d=inputs["target_keypoints_3d"] + 1.0, target_vertices=inputs["target_vertices"] + 1.0)
    moved = hand_losses(**shifted, weights=weights)
    assert moved["keypoints_3d"].item() == pytest.approx(terms["keypoints_3d"].item())
    assert moved["vertices"].item() == pytest.approx(terms["vertices"].item())
    only_2d = dataclasses.replace(weights, **{name: 0.0 for name in weights.as_dict() if name != "keypoints_2d"})
    assert hand_losses(**inputs, weights=only_2d)["total"].item() == pytest.approx(terms["keypoints_2d"].item())
