"""Inference folding of FastViT: same outputs as the train-time graph, affine ops gone, both conv backends."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from timm.layers import ConvNormAct
from timm.models.fastvit import LayerScale2d
from timm.utils.model import reparameterize_model
from torch import nn

from handmesh.bench.model import stress_initialise
from handmesh.models.inference_fold import (
    FusedConv2d,
    InferenceAttentionBlock,
    InferenceRepMixerBlock,
    fold_conv_bn,
    fold_for_inference,
    onednn_available,
    set_conv_backend,
)

torch.set_num_threads(2)
BACKENDS = ["torch"] + (["onednn"] if onednn_available() else [])


def _stressed(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0, global_pool="")
    return stress_initialise(model).eval()  # random BN statistics and layer scales: every fold changes weights


@pytest.fixture(scope="module")
def sa12() -> nn.Module:
    """A small FastViT with every block type: RepMixer stages, an attention stage, RepCPE, MobileOne stem."""
    return _stressed("fastvit_sa12")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module", params=BACKENDS)
def folded(request, sa12) -> nn.Module:
    return fold_for_inference(reparameterize_model(copy.deepcopy(sa12)), request.param)


def test_folded_equals_train_time_graph(sa12, folded, images):
    with torch.inference_mode():
        expected = sa12(images)  # (2, C, 2, 2)
        found = folded(images)
        other = sa12(images.flip(-1))
    assert found.shape == expected.shape
    scale = expected.abs().max()
    assert (found - expected).abs().max() <= 1e-5 * scale
    assert (other - expected).abs().max() > 1e-2 * scale  # the features depend on the image: the check can fail


def test_affine_ops_are_gone_and_blocks_are_twins(folded):
    kinds = [type(module) for module in folded.modules()]
    assert nn.BatchNorm2d not in kinds and LayerScale2d not in kinds and ConvNormAct not in kinds
    assert kinds.count(InferenceRepMixerBlock) == 2 + 2 + 6  # fastvit_sa12 layers (2, 2, 6, 2): 3 RepMixer stages
    assert kinds.count(InferenceAttentionBlock) == 2
    assert nn.Conv2d not in kinds  # every convolution runs through FusedConv2d
    gelu_fused = sum(1 for module in folded.modules()
                     if isinstance(module, FusedConv2d) and module.activation == "gelu")
    assert gelu_fused >= 12  # one fc1 per block, plus the stem / downsampling convs with GELU


def test_fold_is_idempotent_copyable_and_switches_backend(folded, images):
    backend = next(module for module in folded.modules() if isinstance(module, FusedConv2d)).backend
    with torch.inference_mode():
        before = folded(images)
        again = fold_for_inference(folded, "torch")  # only switches the backend
        assert again is folded
        assert set_conv_backend(folded, backend) > 20
        after_copy = copy.deepcopy(folded)(images)
        after_pickle = pickle.loads(pickle.dumps(folded))(images[:1])  # packed oneDNN weights are not pickled
    assert torch.allclose(after_copy, before, atol=1e-5 * before.abs().max())
    assert torch.allclose(after_pickle, before[:1], atol=1e-5 * before.abs().max())


def test_conv_bn_fold_known_answer():
    conv_norm = ConvNormAct(2, 2, kernel_size=1, apply_act=False)
    with torch.no_grad():
        conv_norm.conv.weight.copy_(torch.tensor([[[[2.0]], [[0.0]]], [[[0.0]], [[1.0]]]]))  # diag(2, 1)
        conv_norm.bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
        conv_norm.bn.running_var.copy_(torch.tensor([4.0, 1.0]) - conv_norm.bn.eps)  # std 2 and 1
        conv_norm.bn.weight.copy_(torch.tensor([3.0, 1.0]))
        conv_norm.bn.bias.copy_(torch.tensor([0.5, 0.0]))
    conv = fold_conv_bn(conv_norm.eval())
    # channel 0: 3 * (2x - 1) / 2 + 0.5 = 3x - 1; channel 1: (y + 1) / 1 = y + 1
    assert torch.allclose(conv.weight.flatten(), torch.tensor([3.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(conv.bias, torch.tensor([-1.0, 1.0]))


def test_fold_refuses_training_mode():
    model = timm.create_model("fastvit_t8", num_classes=0)
    with pytest.raises(ValueError, match="eval mode"):
        fold_for_inference(model.train())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_conv_residual_and_gelu(backend):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x, residual = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
    with torch.inference_mode():
        expected_gelu = torch.nn.functional.gelu(conv(x))
        expected_sum = residual + conv(x)
        fused_gelu = FusedConv2d(conv, "gelu", backend)(x)
        target = residual.clone()
        fused_sum = FusedConv2d(conv, "none", backend)(x, residual=target)
    assert torch.allclose(fused_gelu, expected_gelu, atol=1e-5)
    assert torch.allclose(fused_sum, expected_sum, atol=1e-5)
    assert torch.allclose(target, expected_sum, atol=1e-5)  # added in place
