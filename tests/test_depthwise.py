"""The depthwise convolution's CPU training path gives torch's gradients, and only replaces the convolutions it can."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from handmesh.models.depthwise import DepthwiseConv2d, _DepthwiseConv, qualifies, speed_up_depthwise


@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("bias", [False, True])
def test_gradients_match_torch(kernel, bias):
    generator = torch.Generator().manual_seed(kernel)
    x = torch.randn(3, 5, 9, 11, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(5, 1, kernel, kernel, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True) if bias else None
    upstream = torch.randn(3, 5, 9, 11, dtype=torch.float64, generator=generator)
    inputs = [x, weight] + ([b] if bias else [])

    ours = _DepthwiseConv.apply(x, weight, b, kernel // 2)
    expected = F.conv2d(x, weight, b, padding=kernel // 2, groups=5)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    for got, want in zip(torch.autograd.grad(ours, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_only_same_padded_stride_one_depthwise_convolutions_are_replaced():
    assert qualifies(nn.Conv2d(8, 8, 7, padding=3, groups=8))
    assert not qualifies(nn.Conv2d(8, 8, 7, padding=3, groups=8, stride=2))
    assert not qualifies(nn.Conv2d(8, 16, 7, padding=3, groups=8))  # two filters per channel
    assert not qualifies(nn.Conv2d(8, 8, 7, padding=2, groups=8))
    assert not qualifies(nn.Conv2d(8, 8, 3, padding=1))  # dense


def test_encoder_training_pass_unchanged():
    torch.manual_seed(0)
    reference = timm.create_model("fastvit_t8", num_classes=0)
    fast = copy.deepcopy(reference)
    assert speed_up_depthwise(fast) > 0
    assert any(isinstance(module, DepthwiseConv2d) for module in fast.modules())
    assert fast.state_dict().keys() == reference.state_dict().keys()
    images = torch.randn(2, 3, 64, 64)
    outputs = []
    for model in (reference, fast):
        out = model(images)
        out.square().mean().backward()
        outputs.append((out.detach(), {name: p.grad for name, p in model.named_parameters()}))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=0, atol=0)  # the forward pass is torch's conv2d
    for name, grad in outputs[0][1].items():
        # float32 sums in another order: compare against the largest gradient of the tensor
        torch.testing.assert_close(outputs[1][1][name], grad, rtol=0, atol=1e-4 * float(grad.abs().max()) + 1e-9)
