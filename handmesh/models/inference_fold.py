"""Inference-only folding for a timm FastViT, on top of timm's `reparameterize_model`.

timm folds the train-time branches (MobileOne, RepMixer, positional encodings) but leaves per-channel affine ops that
each cost a full pass over memory at inference. All are linear and sit next to a conv or linear layer, so they fold
into its weights exactly (up to float rounding):

- `ConvMlp.conv`: depthwise 7x7 conv + BatchNorm -> one conv with a bias.
- `LayerScale2d` after an MLP or attention (y = gamma * f(x)): scaled into the output rows of `fc2` / `proj`.
- `AttentionBlock.norm` (a BatchNorm before the attention): folded into the input columns of the `qkv` linear.

Then every convolution becomes a `FusedConv2d` that also does the GELU after it, or the residual add after it
(`x += fc2(h)`), and the two block types become inference twins that call them. Profiling the reparameterised
MA36 (torch.profiler, batch 1, 2 threads) showed eager convolutions at a fraction of the matmul rate because oneDNN
re-lays out the weights on every call; with the "onednn" backend `FusedConv2d` keeps them pre-packed in oneDNN's
layout (per input shape) and runs conv + GELU / conv + add as single oneDNN primitives, the same kernels
torch.compile's freezing pass emits, but in eager mode. The "torch" backend runs plain `F.conv2d` (ONNX export,
machines without oneDNN). Both need `torch.no_grad()` / `torch.inference_mode()` for their in-place adds: the
folded model is for inference only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models.fastvit import (
    Attention,
    AttentionBlock,
    ConvMlp,
    LayerScale2d,
    MobileOneBlock,
    ReparamLargeKernelConv,
    RepMixer,
    RepMixerBlock,
)
from torch import nn

BACKENDS = ("auto", "onednn", "torch")
ACTIVATIONS = ("none", "gelu")
MAX_PACKED_SHAPES = 8  # pre-packed weight layouts kept per conv (one per input shape seen)


def onednn_available() -> bool:
    """True where this torch build can run pre-packed oneDNN convolutions on the CPU."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and ops is not None
                    and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))
    except (AttributeError, RuntimeError):
        return False


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"conv backend {backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        return "onednn" if onednn_available() else "torch"
    if backend == "onednn" and not onednn_available():
        raise RuntimeError("the 'onednn' conv backend needs a torch build with oneDNN (mkldnn) on the CPU; use 'torch'")
    return backend


class FusedConv2d(nn.Module):
    """A 2D convolution followed by GELU, or added in place into a residual: `forward(x, residual=None)`.

    x (B, C_in, H, W) -> GELU(conv(x)) or conv(x) when activation="none"; with `residual` (B, C_out, H', W'):
    `residual += conv(x)` in place (returned). Backend "onednn" runs on CPU tensors, pre-packed weights.
    """

    def __init__(self, conv: nn.Conv2d, activation: str = "none", backend: str = "torch"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: expected one of {ACTIVATIONS}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"FusedConv2d needs numeric zero padding, got {conv}")
        self.weight = conv.weight  # (C_out, C_in / groups, kh, kw)
        self.bias = conv.bias if conv.bias is not None else nn.Parameter(torch.zeros_like(conv.weight[:, 0, 0, 0]))
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.activation = activation
        self.backend = _resolve_backend(backend)
        self._packed: dict[tuple, torch.Tensor] = {}  # (input shape, weight version) -> oneDNN-layout weight

    def extra_repr(self) -> str:
        out_channels, in_per_group, kh, kw = self.weight.shape
        return (f"{in_per_group * self.groups}, {out_channels}, kernel=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, activation={self.activation}, backend={self.backend}")

    def set_backend(self, backend: str) -> None:
        self.backend = _resolve_backend(backend)
        self._packed.clear()

    def __getstate__(self):  # pickling / deepcopy: packed oneDNN tensors are a cache, rebuilt on first use
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        version = 0 if self.weight.is_inference() else self.weight._version  # inference tensors have no counter
        key = (tuple(x.shape), version, self.weight.data_ptr())
        packed = self._packed.get(key)
        if packed is None:
            if len(self._packed) >= MAX_PACKED_SHAPES:
                self._packed.clear()
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.detach(), self.padding, self.stride, self.dilation, self.groups, list(x.shape))
            self._packed[key] = packed
        return packed

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        fast = (self.backend == "onednn" and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_grad_enabled())
        if fast:
            weight = self._packed_weight(x)
            conv_args = (self.padding, self.stride, self.dilation, self.groups)
            if residual is not None:
                return torch.ops.mkldnn._convolution_pointwise_.binary(
                    residual, x, weight, self.bias, *conv_args, "add", None, None, [], None)
            algorithm = "none" if self.activation == "gelu" else ""
            return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, *conv_args, self.activation, [],
                                                           algorithm)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            return residual + y if torch.is_grad_enabled() else residual.add_(y)
        return F.gelu(y) if self.activation == "gelu" else y


class InferenceRepMixerBlock(nn.Module):
    """RepMixerBlock after folding: x = mixer(x); x += fc2(gelu(fc1(dwconv7(x)))) (the layer scale is inside fc2)."""

    def __init__(self, mixer: FusedConv2d, dwconv: FusedConv2d, fc1: FusedConv2d, fc2: FusedConv2d):
        super().__init__()
        self.mixer, self.dwconv, self.fc1, self.fc2 = mixer, dwconv, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        x = self.mixer(x)  # a fresh tensor: safe to add into
        return self.fc2(self.fc1(self.dwconv(x)), residual=x)


class InferenceAttentionBlock(nn.Module):
    """AttentionBlock after folding: x = x + attention(x) (BatchNorm in qkv, layer scale in proj); x += MLP(x)."""

    def __init__(self, attention: Attention, dwconv: FusedConv2d, fc1: FusedConv2d, fc2: FusedConv2d):
        super().__init__()
        self.attention, self.dwconv, self.fc1, self.fc2 = attention, dwconv, fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        x = x + self.attention(x)  # out of place: the caller may still hold the input
        return self.fc2(self.fc1(self.dwconv(x)), residual=x)


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
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
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
    bias = linear.bias if linear.bias is not None else torch.zeros_like(linear.weight[:, 0])
    new_bias = bias + linear.weight @ shift
    linear.weight.mul_(scale.reshape(1, -1))
    linear.bias = nn.Parameter(new_bias)


def _activation_name(act: nn.Module) -> str | None:
    if isinstance(act, nn.Identity):
        return "none"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    return None  # anything else stays as it is


def _fold_affine(model: nn.Module) -> None:
    """Fold BatchNorms and layer scales into neighbouring conv / linear weights, in place."""
    for module in list(model.modules()):
        if isinstance(module, ConvMlp) and isinstance(module.conv, ConvNormAct):
            module.conv = fold_conv_bn(module.conv)
        if isinstance(module, RepMixerBlock) and isinstance(module.layer_scale, LayerScale2d):
            fold_scale_into_output(module.mlp.fc2, module.layer_scale.gamma)
            module.layer_scale = nn.Identity()
        if isinstance(module, AttentionBlock):
            if isinstance(module.norm, nn.BatchNorm2d):
                fold_bn_into_linear_input(module.norm, module.token_mixer.qkv)
                module.norm = nn.Identity()
            if isinstance(module.layer_scale_1, LayerScale2d):
                fold_scale_into_output(module.token_mixer.proj, module.layer_scale_1.gamma)
                module.layer_scale_1 = nn.Identity()
            if isinstance(module.layer_scale_2, LayerScale2d):
                fold_scale_into_output(module.mlp.fc2, module.layer_scale_2.gamma)
                module.layer_scale_2 = nn.Identity()


def _mlp_convs(mlp: ConvMlp, backend: str) -> tuple[FusedConv2d, FusedConv2d, FusedConv2d] | None:
    if not isinstance(mlp.conv, nn.Conv2d) or _activation_name(mlp.act) != "gelu" or mlp.drop.p != 0:
        return None
    return (FusedConv2d(mlp.conv, "none", backend), FusedConv2d(mlp.fc1, "gelu", backend),
            FusedConv2d(mlp.fc2, "none", backend))


def _twin(module: nn.Module, backend: str) -> nn.Module | None:
    """The inference twin of one folded timm module, or None to leave it (and look inside it)."""
    if isinstance(module, RepMixerBlock) and isinstance(module.layer_scale, nn.Identity):
        mixer = getattr(module.token_mixer, "reparam_conv", None)
        convs = _mlp_convs(module.mlp, backend)
        if isinstance(mixer, nn.Conv2d) and convs:
            return InferenceRepMixerBlock(FusedConv2d(mixer, "none", backend), *convs)
    if isinstance(module, AttentionBlock) and isinstance(module.norm, nn.Identity):
        convs = _mlp_convs(module.mlp, backend)
        if convs and all(isinstance(m, nn.Identity) for m in (module.layer_scale_1, module.layer_scale_2)):
            return InferenceAttentionBlock(module.token_mixer, *convs)
    if isinstance(module, (MobileOneBlock, ReparamLargeKernelConv)) and isinstance(module.se, nn.Identity):
        activation = _activation_name(module.act)
        if isinstance(getattr(module, "reparam_conv", None), nn.Conv2d) and activation:
            return FusedConv2d(module.reparam_conv, activation, backend)
    if isinstance(module, RepMixer) and isinstance(getattr(module, "reparam_conv", None), nn.Conv2d):
        return FusedConv2d(module.reparam_conv, "none", backend)
    if type(module) is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return FusedConv2d(module, "none", backend)
    return None


def _swap_twins(parent: nn.Module, backend: str) -> None:
    for name, child in list(parent.named_children()):
        twin = _twin(child, backend)
        if twin is None:
            _swap_twins(child, backend)
        else:
            setattr(parent, name, twin)


@torch.no_grad()
def fold_for_inference(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Fold what timm's `reparameterize_model` leaves in a FastViT and fuse its convolutions, in place; returns model.

    Call it on a model in eval mode after `timm.utils.model.reparameterize_model`. backend: "onednn" (pre-packed
    fused oneDNN kernels, CPU float32), "torch" (plain PyTorch ops: ONNX export, other devices) or "auto" (oneDNN
    where available). Idempotent: calling it again only switches the backend. Modules other than FastViT's are left
    alone, so it is safe on a whole HandModel. Run the result under `torch.inference_mode()` / `torch.no_grad()`.
    """
    if model.training:
        raise ValueError("fold_for_inference needs a model in eval mode (BatchNorm must use its running statistics)")
    backend = _resolve_backend(backend)
    _fold_affine(model)
    _swap_twins(model, backend)
    set_conv_backend(model, backend)
    return model


def set_conv_backend(model: nn.Module, backend: str) -> int:
    """Switch every `FusedConv2d` in `model` to `backend`; returns how many there are."""
    convs = [module for module in model.modules() if isinstance(module, FusedConv2d)]
    for conv in convs:
        conv.set_backend(backend)
    return len(convs)
