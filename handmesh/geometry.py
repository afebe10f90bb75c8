"""Pure tensor maths: rotation representations and camera projection, and `in_float32` for all geometry. No state,
no I/O.

Conventions: rotation matrices act on column vectors (x' = R @ x); the 6D representation (Zhou et al., CVPR 2019) is the
first two *columns* of R; cameras follow OpenCV/FreiHAND (x right, y down, z forward, metres), K in pixels.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")  # device types whose autocast `in_float32` switches off
LOW_PRECISION = (torch.float16, torch.bfloat16)
Function = TypeVar("Function", bound=Callable)


def in_float32(function: Function) -> Function:
    """Decorator: run `function` in float32 whatever the autocast (e.g. Lightning's bf16-mixed / 16-mixed).

    Inside, autocast is off on every device where it was on, and float16 / bfloat16 tensor arguments arrive as float32
    (float64 and integer tensors, and anything that is not a tensor, pass unchanged). The cast is differentiable, so
    gradients flow back to the half-precision network. For the geometry that half precision breaks or blurs: SVD and
    det have no half kernels (CPU or CUDA), and bf16 keeps 8 significant bits: depths of 0.5-1 m in steps of 3.9 mm.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        args = tuple(_to_float32(value) for value in args)
        kwargs = {name: _to_float32(value) for name, value in kwargs.items()}
        autocasting = tuple(device for device in AUTOCAST_DEVICES if torch.is_autocast_enabled(device))
        return _without_autocast(autocasting, function, args, kwargs)

    return wrapper  # type: ignore[return-value]


def _without_autocast(devices: tuple[str, ...], function: Callable, args: tuple, kwargs: dict):
    """function(*args, **kwargs) with autocast off on `devices` (nested `with` blocks: torch.compile traces them)."""
    if not devices:
        return function(*args, **kwargs)
    with torch.autocast(device_type=devices[0], enabled=False):
        return _without_autocast(devices[1:], function, args, kwargs)


def _to_float32(value):
    return value.float() if isinstance(value, torch.Tensor) and value.dtype in LOW_PRECISION else value


def axis_angle_to_rotmat(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. (..., 3) radians -> (..., 3, 3); exact near zero (first-order Taylor)."""
    angle = axis_angle.norm(dim=-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    sin_term = torch.where(small, torch.ones_like(angle), torch.sin(safe) / safe)
    cos_term = torch.where(small, 0.5 * torch.ones_like(angle), (1.0 - torch.cos(safe)) / safe**2)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_term * skew + cos_term * (skew @ skew)


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) radians, angle in [0, pi]; goes through a unit quaternion for stability near pi."""
    return quaternion_to_axis_angle(rotmat_to_quaternion(rotmat))


def rotmat_to_quaternion(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z), w >= 0. Picks the best-conditioned of four formulas."""
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate (unnormalised) quaternions, each accurate when its leading term is largest.
    candidates = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    leading = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = leading.argmax(dim=-1, keepdim=True)  # (..., 1)
    quat = torch.gather(candidates, -2, best.unsqueeze(-1).expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    quat = F.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternion (w, x, y, z) -> (..., 3) radians."""
    w = quat[..., :1].clamp(-1.0, 1.0)
    xyz = quat[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, w)
    small = sin_half < 1e-8
    scale = torch.where(small, 2.0 * torch.ones_like(angle),
                        angle / torch.where(small, torch.ones_like(sin_half), sin_half))
    return xyz * scale


def rot6d_to_rotmat(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt; the 6 numbers are the first two columns (a1, a2) of the matrix."""
    a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, column after column."""
    return torch.cat([rotmat[..., :, 0], rotmat[..., :, 1]], dim=-1)


def project_points(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection. points (..., N, 3) metres in the camera frame, K (..., 3, 3) pixels -> (..., N, 2) pixels."""
    uvw = points @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3].clamp(min=1e-6)


def weak_perspective_to_translation(camera: torch.Tensor, K: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Weak-perspective camera -> a camera-frame translation of the root-relative hand.

    camera (B, 3) = (s, tx, ty): a root-relative point (X, Y, Z) metres projects to normalised crop coordinates
    (s * (X + tx), s * (Y + ty)) in [-1, 1]. K (B, 3, 3) is the crop's intrinsics (pixels), crop_size S pixels.
    Returns (B, 3) metres: depth tz = 2 f / (S s) with f = (fx + fy) / 2, and tx, ty shifted so that the perspective
    projection through K lands where the weak-perspective one does (the principal point need not be the crop centre).
    """
    scale, tx, ty = camera.unbind(-1)
    fx, fy = K[:, 0, 0], K[:, 1, 1]
    cx, cy = K[:, 0, 2], K[:, 1, 2]
    tz = (fx + fy) / (crop_size * scale.clamp(min=1e-3))
    half = crop_size / 2.0
    return torch.stack([tx + (half - cx) * tz / fx, ty + (half - cy) * tz / fy, tz], dim=-1)
