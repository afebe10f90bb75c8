"""2D keypoints from a mid-level feature map: one spatial softmax per keypoint, read out as its expected position.

Integral regression (Sun et al. 2018, "Integral Human Pose Regression"): differentiable, sub-cell accurate, and
supervised directly in pixels. Why the hand model has it (switch: `HandModelConfig(keypoint_head=True)`):
- Dense supervision: every cell of every map gets a gradient, where a global pose regressor gets one vector per image.
  From random weights the network learns where the joints are long before it learns the articulation from a pooled
  vector (measured on the quick start's synthetic set: docs/results.md).
- The regressor reads the 21 positions next to the pooled features: the 2D layout of the joints carries most of
  the articulation, and a small MLP maps it to MANO parameters quickly.
FreiHAND (and `handmesh synth`) annotate all 21 keypoints of every image, so the loss needs no visibility mask.
"""

from __future__ import annotations

import torch
from torch import nn

from handmesh.joints import NUM_KEYPOINTS

STAGE = 2  # FastViT stage whose output feeds the head: stride 16 (8 x 8 cells at 128 px)


class KeypointHead(nn.Module):
    """features (B, C, h, w) of a stride-`stride` map -> (B, 21, 2) expected keypoint positions, pixels of the crop
    (OpenCV convention: pixel centres at integers)."""

    def __init__(self, in_channels: int, stride: int, hidden: int = 128, num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        self.stride = stride
        self.maps = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_keypoints, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return expected_positions(self.maps(features), self.stride)


def expected_positions(logits: torch.Tensor, stride: int) -> torch.Tensor:
    """logits (B, K, h, w) of a stride-`stride` map -> (B, K, 2) the softmax-weighted mean of the cell centres, pixels
    (x, y). Cell j covers pixels [j s, (j + 1) s), so its centre is at (j + 0.5) s - 0.5 in OpenCV coordinates."""
    batch, keypoints, height, width = logits.shape
    weights = logits.flatten(2).softmax(-1).view(batch, keypoints, height, width)  # sums to 1 per keypoint
    xs = (torch.arange(width, device=logits.device, dtype=weights.dtype) + 0.5) * stride - 0.5  # (w,)
    ys = (torch.arange(height, device=logits.device, dtype=weights.dtype) + 0.5) * stride - 0.5  # (h,)
    x = (weights.sum(2) * xs).sum(-1)  # (B, K)
    y = (weights.sum(3) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)
