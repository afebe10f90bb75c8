"""Faster training of depthwise convolutions on the CPU: the same forward pass, gradients from two forward convolutions.

FastViT's large-kernel depthwise convolutions (7x7, one filter per channel) dominate a CPU training step: oneDNN's
backward pass for them is several times slower than a forward convolution of the same size (docs/results.md, "A CPU
training step"). For a stride-1, 'same'-padded depthwise convolution y = x * w (cross-correlation, per channel c):

    dL/dx[b, c] = g[b, c] * flip(w[c])                 (the forward convolution of g with the flipped kernel)
    dL/dw[c]    = sum_b  pad(x[b, c]) * g[b, c]        (a grouped forward convolution, one group per (b, c))

with g = dL/dy. Only float32 tensors on the CPU with gradients take this path; everything else (inference, GPUs,
autocast, other convolutions) is torch's own `conv2d`. Parameters and state-dict keys are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors  # (B, C, H, W), (C, 1, k, k)
        p = ctx.padding
        batch, channels, height, width = x.shape
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), padding=p, groups=channels)  # (B, C, H, W)
        if ctx.needs_input_grad[1]:
            images = F.pad(x, (p, p, p, p)).transpose(0, 1).reshape(1, channels * batch, height + 2 * p, width + 2 * p)
            kernels = grad.transpose(0, 1).reshape(channels * batch, 1, height, width)  # one per (channel, image)
            grad_w = F.conv2d(images, kernels, groups=channels * batch).view(channels, batch, *weight.shape[2:])
            grad_w = grad_w.sum(1, keepdim=True)  # (C, 1, k, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """An `nn.Conv2d` whose CPU float32 training pass uses `_DepthwiseConv`; made by `speed_up_depthwise`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and self.weight.requires_grad and x.device.type == "cpu"
                and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
            return _DepthwiseConv.apply(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)


def qualifies(conv: nn.Module) -> bool:
    """A stride-1 depthwise convolution with an odd square kernel and 'same' zero padding."""
    if type(conv) is not nn.Conv2d:
        return False
    k = conv.kernel_size[0]
    return (conv.groups == conv.in_channels == conv.out_channels and conv.kernel_size == (k, k) and k % 2 == 1
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.padding == (k // 2, k // 2)
            and conv.padding_mode == "zeros")


def speed_up_depthwise(module: nn.Module) -> int:
    """Turn every qualifying `nn.Conv2d` inside `module` into a `DepthwiseConv2d`, in place; returns how many."""
    count = 0
    for conv in module.modules():
        if qualifies(conv):
            conv.__class__ = DepthwiseConv2d
            count += 1
    return count
