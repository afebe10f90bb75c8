"""MANO parameter heads: start exactly at the mean, iterative feedback adds up, positive camera scale, any map size."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed

from handmesh.errors import HandmeshError
from handmesh.geometry import rotmat_to_rot6d
from handmesh.models.regressor import HEADS, IEFRegressor, build_regressor

torch.set_num_threads(2)
MEAN_POSE = rotmat_to_rot6d(torch.eye(3).expand(16, 3, 3)).reshape(-1)  # (96,): 16 rotations in 6D
MEAN_CAMERA = (5.0, 0.01, -0.02)


def _zero_decoder(head):
    torch.nn.init.zeros_(head.decode.weight)
    torch.nn.init.zeros_(head.decode.bias)


@pytest.mark.parametrize("name", HEADS)
def test_zero_correction_outputs_the_mean_parameters(name):
    head = build_regressor(name, 32, MEAN_POSE, MEAN_CAMERA).eval()
    _zero_decoder(head)
    out = head(torch.randn(3, 32, 2, 2))
    torch.testing.assert_close(out.pose, MEAN_POSE.expand(3, 96))
    torch.testing.assert_close(out.betas, torch.zeros(3, 10))
    torch.testing.assert_close(out.camera, torch.tensor(MEAN_CAMERA).expand(3, 3))


def test_iterative_error_feedback_applies_the_correction_each_iteration():
    head = IEFRegressor(32, MEAN_POSE, MEAN_CAMERA, hidden=16, iterations=3).eval()
    _zero_decoder(head)
    with torch.no_grad():
        head.decode.bias[-3] = 0.1  # log-scale correction per iteration
        head.decode.bias[0] = 0.2  # first pose number
    out = head(torch.randn(2, 32, 3, 3))
    assert out.camera[:, 0].tolist() == pytest.approx([5.0 * math.exp(0.3)] * 2, rel=1e-5)
    assert out.pose[:, 0].tolist() == pytest.approx([1.0 + 0.6] * 2, rel=1e-5)


def test_any_pose_size():
    head = build_regressor("ief", 16, torch.zeros(18), MEAN_CAMERA)  # e.g. 6D global rotation + 12 PCA coefficients
    assert head.param_dim == 18 + 10 + 3
    assert head(torch.randn(2, 16, 1, 1)).pose.shape == (2, 18)


def test_camera_scale_stays_positive():
    head = IEFRegressor(8, MEAN_POSE, MEAN_CAMERA, hidden=8)
    _zero_decoder(head)
    with torch.no_grad():
        head.decode.bias[-3] = -5.0  # three iterations: s = 5 exp(-15)
    assert (head(torch.randn(2, 8, 1, 1)).camera[:, 0] > 0).all()
    with pytest.raises(ValueError, match="positive"):
        IEFRegressor(8, MEAN_POSE, (0.0, 0.0, 0.0))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (4, 4)])
def test_transformer_head_takes_any_feature_map_size(size):
    head = build_regressor("transformer", 48, MEAN_POSE, MEAN_CAMERA)
    out = head(torch.randn(2, 48, *size))
    assert out.pose.shape == (2, 96) and out.betas.shape == (2, 10) and out.camera.shape == (2, 3)


def test_the_transformer_heads_positions_are_detr_style():
    # the call TransformerRegressor makes: (6, 8) = [sin y, cos y, sin x, cos x] x 2 frequencies, row-major positions
    positions = build_sincos2d_pos_embed([2, 3], 8, interleave_sin_cos=True)
    assert positions.shape == (6, 8)
    torch.testing.assert_close(positions[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    # position (row 1, column 2) = index 5: y = 1, x = 2 at frequency 1 (first of each pair)
    assert positions[5, 0].item() == pytest.approx(math.sin(1.0))
    assert positions[5, 4].item() == pytest.approx(math.sin(2.0))
    assert positions[5, 7].item() == pytest.approx(math.cos(2.0 / 100))  # frequency 1 / 10000^(1/2)


def test_unknown_head():
    with pytest.raises(HandmeshError, match="unknown head 'mlp'"):
        build_regressor("mlp", 8, MEAN_POSE, MEAN_CAMERA)
