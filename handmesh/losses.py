"""Training losses: pure functions of predictions and targets. Defaults for their weights live in `LossWeights`.

Units: 3D terms in metres (root-relative, so independent of the camera), 2D terms in crop widths (pixels / S),
rotation terms on matrix entries, shape terms on MANO's unitless betas. Every term is computed in float32 whatever the
autocast (`geometry.in_float32`): the alignment's SVD and det have no half-precision kernels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from handmesh.geometry import in_float32
from handmesh.joints import ROOT_KEYPOINT


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term in the total loss; 0 switches a term off.

    Balance: a 1 cm joint error costs 0.01 x 5 = 0.05 in 3D; the same error seen in a crop where the hand spans about
    20 cm is ~1/20 of the crop width, 0.05 x 1 = 0.05 in 2D, so neither signal drowns the other (as in HaMeR's
    0.05 : 0.01 on sums over joints with its [-0.5, 0.5] crop units).
    """

    keypoints_3d: float = 5.0  # L1, metres, root-relative 21 keypoints
    keypoints_aligned: float = 5.0  # L1, metres, 21 keypoints after similarity alignment (what PA-MPJPE measures)
    vertices: float = 5.0  # L1, metres, root-relative 778 vertices
    keypoints_2d: float = 1.0  # L1, crop widths, 21 keypoints reprojected through the predicted camera and K
    keypoints_2d_heatmap: float = 1.0  # L1, crop widths, the keypoint head's 21 positions (models with that head)
    mano_pose: float = 0.1  # squared error of the 16 rotation matrices, where MANO ground truth exists
    mano_shape: float = 0.01  # squared error of betas, where MANO ground truth exists
    shape_prior: float = 0.001  # betas^2: keeps the shape near MANO's mean where nothing else constrains it

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def keypoint_3d_loss(pred_rel: torch.Tensor, target_rel: torch.Tensor) -> torch.Tensor:
    """Mean L1 (metres) of (B, N, 3) root-relative points (keypoints or vertices) -> () scalar."""
    return (pred_rel - target_rel).abs().mean()


@in_float32
def aligned_keypoint_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 (metres) between (B, N, 3) targets and predictions moved onto them by the best rotation, scale and
    translation (Umeyama; no reflection) -> (). The transform is fitted without gradient, so the loss pulls the
    articulation and proportions toward the target and ignores global rotation and size, like PA-MPJPE does."""
    pred_c = pred - pred.mean(dim=1, keepdim=True)
    target_c = target - target.mean(dim=1, keepdim=True)
    with torch.no_grad():
        u, singular, vh = torch.linalg.svd(target_c.transpose(1, 2) @ pred_c)  # (B, 3, 3)
        sign = torch.ones_like(singular)
        sign[:, 2] = torch.det(u @ vh).sign()  # flip the weakest axis rather than reflect
        rotation = u @ torch.diag_embed(sign) @ vh  # (B, 3, 3): pred_c @ rotation.T ~ target_c
        scale = (singular * sign).sum(-1) / pred_c.pow(2).sum(dim=(1, 2)).clamp(min=1e-12)  # (B,)
    aligned = pred_c @ rotation.transpose(1, 2) * scale[:, None, None]
    return (aligned - target_c).abs().mean()


def reprojection_loss(pred_2d: torch.Tensor, target_2d: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Mean L1 of (B, 21, 2) pixel positions, divided by the crop side S -> () scalar in crop widths."""
    return (pred_2d - target_2d).abs().mean() / crop_size


def rotation_loss(pred_rotmat: torch.Tensor, target_rotmat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, 16, 3, 3) rotation matrices over samples where mask (B,) bool is True; 0 if none."""
    per_sample = (pred_rotmat - target_rotmat).pow(2).flatten(1).mean(dim=1)  # (B,)
    return masked_mean(per_sample, mask)


def shape_loss(pred_betas: torch.Tensor, target_betas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, 10) betas over samples where mask (B,) is True; 0 if none."""
    return masked_mean((pred_betas - target_betas).pow(2).mean(dim=1), mask)


def shape_prior(betas: torch.Tensor) -> torch.Tensor:
    """Mean of betas^2, (B, 10) -> ()."""
    return betas.pow(2).mean()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B,) values where mask (B,) is True; a differentiable 0 when no sample is selected."""
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def root_relative(points: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) points minus the wrist of (B, 21, 3) keypoints."""
    return points - keypoints[:, ROOT_KEYPOINT:ROOT_KEYPOINT + 1]


@in_float32
def hand_losses(
    pred_keypoints_rel: torch.Tensor,  # (B, 21, 3) metres
    pred_vertices_rel: torch.Tensor,  # (B, 778, 3) metres
    pred_keypoints_2d: torch.Tensor,  # (B, 21, 2) pixels
    pred_pose: torch.Tensor,  # (B, 16, 3, 3)
    pred_betas: torch.Tensor,  # (B, 10)
    target_keypoints_3d: torch.Tensor,  # (B, 21, 3) metres, camera frame
    target_vertices: torch.Tensor,  # (B, 778, 3) metres, camera frame
    target_keypoints_2d: torch.Tensor,  # (B, 21, 2) pixels
    target_pose: torch.Tensor,  # (B, 16, 3, 3) full rotations (hands_mean added)
    target_betas: torch.Tensor,  # (B, 10)
    has_mano: torch.Tensor,  # (B,) bool
    crop_size: int,
    weights: LossWeights,
    pred_keypoints_2d_heatmap: torch.Tensor | None = None,  # (B, 21, 2) pixels, from a keypoint head
) -> dict[str, torch.Tensor]:
    """Every term, unweighted, plus "total" = the weighted sum. Keys match `LossWeights` fields; the keypoint-head
    term only where there is a keypoint head."""
    terms = {
        "keypoints_3d": keypoint_3d_loss(pred_keypoints_rel, root_relative(target_keypoints_3d, target_keypoints_3d)),
        "keypoints_aligned": aligned_keypoint_loss(pred_keypoints_rel, target_keypoints_3d),
        "vertices": keypoint_3d_loss(pred_vertices_rel, root_relative(target_vertices, target_keypoints_3d)),
        "keypoints_2d": reprojection_loss(pred_keypoints_2d, target_keypoints_2d, crop_size),
        "mano_pose": rotation_loss(pred_pose, target_pose, has_mano),
        "mano_shape": shape_loss(pred_betas, target_betas, has_mano),
        "shape_prior": shape_prior(pred_betas),
    }
    if pred_keypoints_2d_heatmap is not None:
        terms["keypoints_2d_heatmap"] = reprojection_loss(pred_keypoints_2d_heatmap, target_keypoints_2d, crop_size)
    weight = weights.as_dict()
    terms["total"] = sum(weight[name] * value for name, value in terms.items() if weight[name] != 0.0)
    return terms
