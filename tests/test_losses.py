"""Loss terms against hand-computed values, masking, and the weighted total."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from handmesh.geometry import axis_angle_to_rotmat, in_float32
from handmesh.losses import (
    LossWeights,
    aligned_keypoint_loss,
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
    reprojection = reprojection_loss(torch.full((2, 21, 2), 10.0), torch.zeros(2, 21, 2), crop_size=100)
    assert reprojection.item() == pytest.approx(0.1)


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
        target_pose=axis_angle_to_rotmat(rand(2, 16, 3)), target_betas=rand(2, 10),
        has_mano=torch.tensor([True, False]),
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
    shifted = dict(inputs, target_keypoints_3d=inputs["target_keypoints_3d"] + 1.0,
                   target_vertices=inputs["target_vertices"] + 1.0)
    moved = hand_losses(**shifted, weights=weights)
    assert moved["keypoints_3d"].item() == pytest.approx(terms["keypoints_3d"].item())
    assert moved["vertices"].item() == pytest.approx(terms["vertices"].item())
    only_2d = dataclasses.replace(weights, **{name: 0.0 for name in weights.as_dict() if name != "keypoints_2d"})
    assert hand_losses(**inputs, weights=only_2d)["total"].item() == pytest.approx(terms["keypoints_2d"].item())


def _hand_pair(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 21, 3) metres: a random hand-sized target and a rotated, scaled, noisy copy of it."""
    target = torch.randn(2, 21, 3, generator=generator) * 0.04
    rotation = axis_angle_to_rotmat(torch.tensor([0.3, -1.2, 0.5]))
    pred = 1.3 * target @ rotation.T + 0.002 * torch.randn(2, 21, 3, generator=generator)
    return pred, target


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_aligned_loss_runs_in_float32_under_autocast(dtype):
    """Half-precision autocast (bf16-mixed / 16-mixed training) on the CPU: the Procrustes' SVD and det have no
    half-precision kernels; the loss must run in float32 on the network's half-precision output and send the
    gradient back in that precision."""
    pred, target = _hand_pair(torch.Generator().manual_seed(0))
    reference = aligned_keypoint_loss(pred.to(dtype).float(), target)  # the same rounded inputs, no autocast
    half = pred.to(dtype).requires_grad_()
    with torch.autocast(device_type="cpu", dtype=dtype):
        loss = aligned_keypoint_loss(half, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert loss.item() < 0.003  # the rotation and scale were removed: only the 2 mm noise is left
    loss.backward()
    assert half.grad.dtype == dtype and half.grad.abs().sum() > 0


def test_every_loss_term_is_float32_under_autocast():
    generator = torch.Generator().manual_seed(1)
    pred, target = _hand_pair(generator)
    pose = axis_angle_to_rotmat(torch.rand(2, 16, 3, generator=generator))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        half_pred = pred @ torch.eye(3)  # what a layer under autocast hands over: bfloat16
        assert half_pred.dtype == torch.bfloat16
        terms = hand_losses(
            half_pred, torch.rand(2, 778, 3, generator=generator).bfloat16(), half_pred[..., :2] * 500,
            pose.bfloat16(), torch.rand(2, 10).bfloat16(), target, torch.rand(2, 778, 3), torch.rand(2, 21, 2) * 64,
            pose, torch.zeros(2, 10), torch.tensor([True, True]), crop_size=64, weights=LossWeights(),
        )
    assert all(value.dtype == torch.float32 for value in terms.values()), {k: v.dtype for k, v in terms.items()}
    assert all(torch.isfinite(value) for value in terms.values())


def test_in_float32_switches_autocast_off_and_keeps_float64():
    seen = []

    @in_float32
    def inspect(a, b, c=None, n=3):
        seen.append((a.dtype, b.dtype, c.dtype, n, torch.is_autocast_enabled("cpu"), (a @ a.transpose(0, 1)).dtype))
        return a

    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inspect(torch.ones(2, 2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float64), c=torch.ones(1).half(), n=4)
        assert torch.is_autocast_enabled("cpu")  # restored for the caller
    assert seen == [(torch.float32, torch.float64, torch.float32, 4, False, torch.float32)]
