"""Features -> MANO pose, shape (10) and a weak-perspective camera, refining mean parameters.

Why iterative error feedback (HMR, Kanazawa et al. 2018) on pooled features is the default head:
- It is what the FastViT paper's hand-mesh result used: a simple regressor of weak-perspective camera plus MANO pose and
  shape on top of the encoder, trained on FreiHAND only. The encoder does the work; the head stays small.
- It is cheap: three passes of a 2-layer MLP on a pooled (B, C) vector, a rounding error next to the encoder, so
  the webcam demo's latency is the encoder's, and it is indifferent to the input size (no positional embedding).
- Starting from mean parameters kept as buffers (mean pose = MANO's hands_mean, zero shape, a typical camera) and
  adding corrections means an untrained model already outputs a plausible hand, and early training is stable.
- The 6D rotation representation (Zhou et al. 2019) is continuous, unlike axis-angle, which regresses better.
The `transformer` head (HaMeR-style: one query token cross-attending to the spatial feature tokens, 2 layers of width
256) keeps the spatial layout that pooling throws away, at a cost small next to the encoder's (docs/results.md). It is
a config switch (`head: transformer`); `ief` stays the default because it is the recipe the FastViT result used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn

from handmesh.errors import HandmeshError
from handmesh.joints import NUM_BETAS

HEADS = ("ief", "transformer")
CAMERA_DIM = 3  # weak perspective, regressed as (log s, tx, ty)


@dataclass
class RegressorOutput:
    pose: torch.Tensor  # (B, P) pose parameters, laid out as HandModel defines them (global rotation in 6D first)
    betas: torch.Tensor  # (B, 10)
    camera: torch.Tensor  # (B, 3) weak perspective (s, tx, ty): s > 0 (normalised crop units per metre), t metres


class ParameterHead(nn.Module):
    """Holds the mean parameters as a buffer and turns a (B, P + 13) parameter vector into a `RegressorOutput`.

    mean_pose (P,) is the starting pose in whatever layout the caller uses. The camera scale is regressed as log s,
    so it stays positive and corrections act multiplicatively.
    """

    def __init__(self, mean_pose: torch.Tensor, mean_camera: tuple[float, float, float]):
        super().__init__()
        if mean_camera[0] <= 0:
            raise ValueError(f"mean camera scale must be positive, got {mean_camera[0]}")
        self.pose_dim = mean_pose.numel()
        self.param_dim = self.pose_dim + NUM_BETAS + CAMERA_DIM
        mean = torch.cat([
            mean_pose.reshape(-1).float(),
            torch.zeros(NUM_BETAS),
            torch.tensor([math.log(mean_camera[0]), mean_camera[1], mean_camera[2]]),
        ])
        self.register_buffer("mean_params", mean)  # (P + 13,) persistent: the corrections were learned against it

    def unpack(self, params: torch.Tensor) -> RegressorOutput:
        """params (B, P + 13) -> pose (B, P), betas (B, 10), camera (B, 3) with s = exp(log s)."""
        pose = params[:, :self.pose_dim]
        betas = params[:, self.pose_dim:self.pose_dim + NUM_BETAS]
        log_scale, shift = params[:, -3:-2], params[:, -2:]
        return RegressorOutput(pose=pose, betas=betas, camera=torch.cat([log_scale.exp(), shift], dim=-1))


class IEFRegressor(ParameterHead):
    """HMR-style iterative error feedback: params += MLP([pooled features, cues, params]), `iterations` times.
    cue_dim: length of an optional per-image vector read next to the features (e.g. 2D keypoints), 0 for none."""

    def __init__(self, num_features: int, mean_pose: torch.Tensor, mean_camera: tuple[float, float, float],
                 cue_dim: int = 0, hidden: int = 1024, iterations: int = 3, dropout: float = 0.1):
        super().__init__(mean_pose, mean_camera)
        self.iterations = iterations
        self.mlp = nn.Sequential(
            nn.Linear(num_features + cue_dim + self.param_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.decode = nn.Linear(hidden, self.param_dim)
        nn.init.xavier_uniform_(self.decode.weight, gain=0.01)  # start at the mean (HMR / SPIN practice)
        nn.init.zeros_(self.decode.bias)

    def forward(self, features: torch.Tensor, cues: torch.Tensor | None = None) -> RegressorOutput:
        """features (B, C, h, w), cues (B, cue_dim) or None -> parameters refined from the mean."""
        pooled = features.mean(dim=(2, 3))  # (B, C)
        if cues is not None:
            pooled = torch.cat([pooled, cues], dim=-1)  # (B, C + cue_dim)
        params = self.mean_params.expand(pooled.shape[0], -1)  # (B, P + 13)
        for _ in range(self.iterations):
            params = params + self.decode(self.mlp(torch.cat([pooled, params], dim=-1)))
        return self.unpack(params)


class TransformerRegressor(ParameterHead):
    """One query token (embedding of the mean parameters) cross-attends to the (h*w) feature tokens; a linear layer
    reads the correction to the mean parameters. Sine positional encodings fit any feature-map size. An optional
    per-image cue vector (B, cue_dim) joins the mean parameters in the query."""

    def __init__(self, num_features: int, mean_pose: torch.Tensor, mean_camera: tuple[float, float, float],
                 cue_dim: int = 0, dim: int = 256, layers: int = 2, heads: int = 8, dropout: float = 0.1):
        super().__init__(mean_pose, mean_camera)
        self.project = nn.Linear(num_features, dim)
        self.query = nn.Linear(self.param_dim + cue_dim, dim)
        layer = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(dim))
        self.decode = nn.Linear(dim, self.param_dim)
        nn.init.xavier_uniform_(self.decode.weight, gain=0.01)
        nn.init.zeros_(self.decode.bias)

    def forward(self, features: torch.Tensor, cues: torch.Tensor | None = None) -> RegressorOutput:
        batch, channels, height, width = features.shape
        tokens = self.project(features.flatten(2).transpose(1, 2))  # (B, h*w, dim)
        # (h*w, dim) DETR-style fixed encodings: [sin y, cos y, sin x, cos x], dim/4 frequencies 1 / 10000^(k / (dim/4))
        positions = build_sincos2d_pos_embed([height, width], tokens.shape[-1], interleave_sin_cos=True)
        tokens = tokens + positions.to(tokens)
        mean = self.mean_params.expand(batch, -1)  # (B, P + 13)
        query = self.query(mean if cues is None else torch.cat([mean, cues], dim=-1)).unsqueeze(1)  # (B, 1, dim)
        out = self.decoder(query, tokens).squeeze(1)  # (B, dim)
        return self.unpack(mean + self.decode(out))


def build_regressor(head: str, num_features: int, mean_pose: torch.Tensor,
                    mean_camera: tuple[float, float, float], cue_dim: int = 0) -> ParameterHead:
    """The head named `head` ("ief" or "transformer") with its default sizes, refining mean_pose (P,) and reading
    cue vectors of length cue_dim (0: none)."""
    if head == "ief":
        return IEFRegressor(num_features, mean_pose, mean_camera, cue_dim=cue_dim)
    if head == "transformer":
        return TransformerRegressor(num_features, mean_pose, mean_camera, cue_dim=cue_dim)
    raise HandmeshError(f"unknown head {head!r}; expected one of {HEADS}")
