"""Inference-only folding for a timm FastViT, on top of timm's `reparameterize_model`.

timm folds the train-time branches (MobileOne, RepMixer, positional encodings) but leaves per-channel affine ops that
cost a full pass over memory each at inference. All of them are linear and sit next to a conv or linear layer, so
they fold into its weights exactly (up to float rounding):

- `ConvMlp.conv`: depthwise 7x7 conv + BatchNorm -> one conv with a bias.
- `LayerScale2d` after an MLP or attention (y = gamma * f(x)): scaled into the rows of `fc2` / `proj`.
- `AttentionBlock.norm` (a BatchNorm before the attention): folded into the columns of the `qkv` linear.

After folding, `fold_for_inference` swaps the two FastViT block types for inference twins that run the same maths
with fewer allocations (in-place GELU and residual add), which is valid only under `torch.inference_mode()` or
`torch.no_grad()`: the folded model is for inference, never for training.
"""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from timm.models.fastvit import Attention, AttentionBlock, ConvMlp, LayerScale2d, RepMixerBlock
from torch import nn


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift, per channel: (C,), (C,)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_conv_bn(conv_norm: ConvNormAct) -> nn.Conv2d:
    """A `ConvNormAct` whose activation is the identity -> one `nn.Conv2d` with a bias computing the same."""
    conv, bn = conv_norm.conv, conv_norm.bn
    if not isinstance(getattr(bn, "act", nn.Identity()), nn.Identity) or getattr(conv_norm, "aa", None) is not None:
        raise ValueError(f"can fold only a conv + BatchNorm without activation, got {conv_norm}")
    scale, shift = _bn_scale_shift(bn)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    folded.bias.copy_(bias * scale + shift)
    return folded


@torch.no_grad()
def fold_scale_into_output(layer: nn.Conv2d | nn.Linear, gamma: torch.Tensor) -> None:
    """Make `layer(x)` return `gamma * layer(x)`: gamma (C_out,) scales the output rows of weight and bias."""
    gamma = gamma.reshape(-1)
    layer.weight.mul_(gamma.reshape(-1, *([1] * (layer.weight.dim() - 1))))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(gamma))
    layer.bias.mul_(gamma)


@torch.no_grad()
def fold_bn_into_linear_input(bn: nn.BatchNorm2d, linear: nn.Linear) -> None:
    """Make `linear(x)` compute `linear(bn(x))` with bn over the input features: W' = W diag(s), b' = b + W t."""
    scale, shift = _bn_scale_shift(bn)
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features, dtype=shift.dtype)
    new_bias = bias + linear.weight @ shift
    linear.weight.mul_(scale.reshape(1, -1))
    linear.bias = nn.Parameter(new_bias)


class _InferenceRepMixerBlock(nn.Module):
    """RepMixerBlock after folding: x = mixer(x); x += fc2(gelu(fc1(dwconv(x)))) (layer scale inside fc2)."""

    def __init__(self, block: RepMixerBlock):
        super().__init__()
        self.token_mixer = block.token_mixer  # reparameterised RepMixer: one depthwise conv
        self.mlp = block.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        x = self.token_mixer(x)
        mlp = self.mlp
        hidden = mlp.fc1(mlp.conv(x))
        return x.add_(mlp.fc2(torch.ops.aten.gelu_(hidden)))


class _InferenceAttentionBlock(nn.Module):
    """AttentionBlock after folding: x += proj(attn(qkv(x))); x += fc2(gelu(fc1(dwconv(x))))."""

    def __init__(self, block: AttentionBlock):
        super().__init__()
        self.token_mixer = block.token_mixer  # Attention with the BatchNorm in qkv, the layer scale in proj
        self.mlp = block.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        x = x + self.token_mixer(x)
        mlp = self.mlp
        hidden = mlp.fc1(mlp.conv(x))
        return x.add_(mlp.fc2(torch.ops.aten.gelu_(hidden)))


def _check_mlp(mlp: ConvMlp) -> None:
    if not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none" or mlp.drop.p != 0:
        raise ValueError(f"expected a ConvMlp with exact GELU and no dropout, got {mlp}")


@torch.no_grad()
def fold_for_inference(model: nn.Module) -> nn.Module:
    """Fold what timm's `reparameterize_model` leaves unfolded in a FastViT, in place; returns `model`.

    Call it after `timm.utils.model.reparameterize_model(model)` on a model in eval mode. The result computes the same
    function (to float rounding) but must run under `torch.inference_mode()` / `torch.no_grad()`.
    Modules other than FastViT blocks are left alone, so it is safe on a whole HandModel.
    """
    if model.training:
        raise ValueError("fold_for_inference needs a model in eval mode (BatchNorm must use its running statistics)")
    for module in list(model.modules()):
        if isinstance(module, ConvMlp):
            _check_mlp(module)
            if isinstance(module.conv, ConvNormAct):
                module.conv = fold_conv_bn(module.conv)
        if isinstance(module, RepMixerBlock) and isinstance(module.layer_scale, LayerScale2d):
            fold_scale_into_output(module.mlp.fc2, module.layer_scale.gamma)
            module.layer_scale = nn.Identity()
        if isinstance(module, AttentionBlock):
            attention: Attention = module.token_mixer
            if isinstance(module.norm, nn.BatchNorm2d):
                fold_bn_into_linear_input(module.norm, attention.qkv)
                module.norm = nn.Identity()
            if isinstance(module.layer_scale_1, LayerScale2d):
                fold_scale_into_output(attention.proj, module.layer_scale_1.gamma)
                module.layer_scale_1 = nn.Identity()
            if isinstance(module.layer_scale_2, LayerScale2d):
                fold_scale_into_output(module.mlp.fc2, module.layer_scale_2.gamma)
                module.layer_scale_2 = nn.Identity()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RepMixerBlock) and isinstance(child.layer_scale, nn.Identity) and getattr(
                child.token_mixer, "reparam_conv", None
            ) is not None:
                setattr(parent, name, _InferenceRepMixerBlock(child))
            elif isinstance(child, AttentionBlock) and isinstance(child.norm, nn.Identity):
                setattr(parent, name, _InferenceAttentionBlock(child))
    return model
