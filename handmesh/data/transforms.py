"""Crops and augmentations that keep the image, K, 2D and 3D labels exactly consistent. Pure functions on numpy.

Geometry (one 3x3 affine `A` maps source pixels to crop pixels; OpenCV convention: pixel centres at integers):

* In-plane rotation by `angle` is a rotation of the *3D scene* about the camera's optical axis,
  `R_z = [[c, -s, 0], [s, c, 0], [0, 0, 1]]`, applied to keypoints, vertices and MANO's global orientation. A camera
  rotation about its centre moves every image point by the homography `H = K R_z K^-1`, whatever its depth; since
  `R_z` keeps z, `H` is affine (a rotation about the principal point, exact even when fx != fy). So warping the image
  by `H` shows exactly the rotated scene through the same K.
* To rotate about the image centre `c` instead of the principal point, `H` is followed by the translation
  `c - H c`; then zoom about `c`, shift (jitter), and resize to the crop: `A = T(c' + shift) S(zoom * S/W) T(-c)
  T(c - H c) H`, where c' is the crop centre.
* The crop's intrinsics are `K' = A K R_z^T`, so that `K' (R_z X) = A K X`: projecting the rotated 3D points
  through K' lands exactly where the warped image shows them. With `A = P H` (P: the translations and scaling),
  `K' = P K R_z K^-1 K R_z^T = P K`: again a pinhole K, computed that way without rounding noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation strengths; a zero turns one part off. Defaults live here only."""

    scale: float = 0.15  # zoom factor drawn from [1 - scale, 1 + scale] (log-uniform), about the image centre
    rotation_deg: float = 60.0  # in-plane rotation angle drawn from [-rotation_deg, rotation_deg]
    translate: float = 0.06  # shift of the crop drawn from [-translate, translate] x crop size, per axis
    color_jitter: float = 0.3  # brightness, contrast and saturation factors in [1 - j, 1 + j]; hue shift up to 18 j degrees
    blur_prob: float = 0.15  # chance of a Gaussian blur with sigma in [0.4, 1.6] x crop size / 224
    occlusion_prob: float = 0.15  # chance of a random rectangle over part of the hand
    occlusion_size: float = 0.3  # its side, up to this fraction of the crop size


@dataclass(frozen=True)
class CropGeometry:
    """One crop: the pixel map, the crop's intrinsics and the rotation applied to 3D labels."""

    affine: np.ndarray  # (3, 3) source pixels -> crop pixels
    K: np.ndarray  # (3, 3) crop intrinsics, pixels
    rotation: np.ndarray  # (3, 3) R_z applied to 3D points in the camera frame
    size: int  # crop side S, pixels


def crop_geometry(
    K: np.ndarray,
    image_size: tuple[int, int],
    crop_size: int,
    zoom: float = 1.0,
    angle_rad: float = 0.0,
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> CropGeometry:
    """Crop of the whole image (W, H) = `image_size` to `crop_size`, zoomed by `zoom`, rotated by `angle_rad` and
    shifted by `shift_px` (crop pixels). K (3, 3) source intrinsics, a pinhole `[[fx, k, cx], [0, fy, cy], [0, 0, 1]]`.

    The module docstring's products, multiplied out: with `L = K2 R2 K2^-1` (the 2x2 parts; H = [L | p - L p],
    p the principal point), centre c, factor f = zoom S / max(W, H) and t = c' + shift,
    `A = [f L | t - f L c]` and `K' = P K = [[f fx, f k, u], [0, f fy, v], [0, 0, 1]]`, (u, v) = t - f L (c - p).
    In scalars: every training item computes this, and numpy spends ~2 us on each small-matrix operation.
    """
    (fx, skew, px), (_, fy, py), _ = np.asarray(K, dtype=np.float64).tolist()
    width, height = image_size
    cos, sin = math.cos(angle_rad), math.sin(angle_rad)
    l00, l01 = cos + skew * sin / fx, -sin * (skew * skew + fx * fx) / (fx * fy)  # L = K2 R2 K2^-1
    l10, l11 = sin * fy / fx, cos - skew * sin / fx
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    factor = zoom * crop_size / max(width, height)
    tx, ty = (crop_size - 1) / 2.0 + shift_px[0], (crop_size - 1) / 2.0 + shift_px[1]
    affine = np.array([
        [factor * l00, factor * l01, tx - factor * (l00 * cx + l01 * cy)],
        [factor * l10, factor * l11, ty - factor * (l10 * cx + l11 * cy)],
        [0.0, 0.0, 1.0],
    ])
    crop_K = np.array([
        [factor * fx, factor * skew, tx - factor * (l00 * (cx - px) + l01 * (cy - py))],
        [0.0, factor * fy, ty - factor * (l10 * (cx - px) + l11 * (cy - py))],
        [0.0, 0.0, 1.0],
    ])
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return CropGeometry(affine=affine, K=crop_K, rotation=rotation, size=crop_size)


def sample_crop(
    K: np.ndarray, image_size: tuple[int, int], crop_size: int, augmentation: Augmentation | None, rng: np.random.Generator
) -> CropGeometry:
    """The plain whole-image crop when `augmentation` is None, else a random zoom / rotation / shift."""
    if augmentation is None:
        return crop_geometry(K, image_size, crop_size)
    scale, degrees, shift = augmentation.scale, augmentation.rotation_deg, augmentation.translate
    log_zoom, angle_deg, shift_x, shift_y = uniforms(
        rng, ((math.log1p(-scale), math.log1p(scale)), (-degrees, degrees), (-shift, shift), (-shift, shift))
    )
    return crop_geometry(K, image_size, crop_size, math.exp(log_zoom), math.radians(angle_deg),
                         (shift_x * crop_size, shift_y * crop_size))


def uniforms(rng: np.random.Generator, bounds: tuple[tuple[float, float], ...]) -> list[float]:
    """One uniform draw in [low, high) per (low, high) pair, as Python floats, from a single generator call (numpy's
    broadcasting `rng.uniform(lows, highs)` costs ~25 us per call, this ~2 us)."""
    return [low + (high - low) * u for (low, high), u in zip(bounds, rng.random(len(bounds)).tolist())]


_IDENTITY_ROWS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # the top two rows of a 3x3 identity, flattened


def warp_image(image: np.ndarray, geometry: CropGeometry, bgr: bool = False) -> np.ndarray:
    """(H, W, C) uint8 -> (S, S, C) uint8 through the crop's affine map (bilinear); outside the source is black.
    bgr: the source is OpenCV's BGR (as `cv2.imread` gives it) and the crop RGB (the swap rides on a conversion that
    happens anyway); the result is then always a new array.

    Three-channel images are warped as four channels and converted back: OpenCV's bilinear warp of 8-bit images has a
    vector path for 4 channels but not for 3 (224 px, OpenCV 5.0: ~0.27 ms instead of ~0.5 ms; each conversion ~7 us).
    """
    if image.shape[:2] == (geometry.size, geometry.size) and all(
        abs(value - identity) < 1e-9 for value, identity in zip(geometry.affine[:2].ravel().tolist(), _IDENTITY_ROWS)
    ):  # in scalars, stopping at the first difference: ~1 us instead of numpy's ~10 us
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image
    four = image.ndim == 3 and image.shape[2] == 3
    if four:  # the order of the 3 channels is kept, or swapped for a BGR source
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA if bgr else cv2.COLOR_RGB2RGBA)
    warped = cv2.warpAffine(
        image, geometry.affine[:2], (geometry.size, geometry.size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB) if four else warped


def to_chw(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(S, S, C) uint8 -> (C, S, S) uint8, C-contiguous: the planes of an NCHW batch, written into `out` (e.g. one
    item of a batch) or a new array (`cv2.split` straight into the planes: ~15 us at 224 px, 5x numpy's strided
    transpose copy)."""
    if out is None:
        return np.stack(cv2.split(image))
    if out.shape != (image.shape[2], *image.shape[:2]) or out.dtype != image.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out is {out.dtype} {out.shape}, expected C-contiguous {image.dtype} (C, H, W) for an image "
                         f"of shape {image.shape}")  # else OpenCV would quietly write into new arrays instead
    cv2.split(image, list(out))
    return out


def rotate_points(points: np.ndarray, rotation: CropGeometry | np.ndarray) -> np.ndarray:
    """(..., N, 3) camera-frame points -> the same points rotated by R_z (float32); `rotation` is one crop's geometry
    or (..., 3, 3) matrices (a batch's, stacked: one product for all its items)."""
    matrix = rotation.rotation if isinstance(rotation, CropGeometry) else np.asarray(rotation)
    return (np.asarray(points, dtype=np.float64) @ np.swapaxes(matrix, -1, -2)).astype(np.float32)


def rotate_global_orient(pose: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """(48,) MANO axis-angle pose -> the same pose (float32) with its global orientation (first 3) turned by the
    crop's R_z, a rotation about the camera axis by theta: as unit quaternions q' = q_z(theta) q, in scalars (every
    training item does this; numpy / cv2.Rodrigues calls cost ~5 us each). Result angle in [0, pi], as Rodrigues'."""
    (cos_t, _, _), (sin_t, _, _), _ = geometry.rotation.tolist()
    half_t = math.atan2(sin_t, cos_t) / 2.0
    cz, sz = math.cos(half_t), math.sin(half_t)
    x, y, z = np.asarray(pose[:3], dtype=np.float64).tolist()
    angle = math.sqrt(x * x + y * y + z * z)
    w = math.cos(angle / 2.0)
    scale = math.sin(angle / 2.0) / angle if angle > 1e-12 else 0.5  # q = (cos a/2, sin a/2 axis)
    qx, qy, qz = x * scale, y * scale, z * scale
    w, qx, qy, qz = cz * w - sz * qz, cz * qx - sz * qy, cz * qy + sz * qx, cz * qz + sz * w  # q_z q, q_z = (cz,0,0,sz)
    if w < 0:
        w, qx, qy, qz = -w, -qx, -qy, -qz  # the same rotation, angle <= pi
    sin_half = math.sqrt(qx * qx + qy * qy + qz * qz)
    factor = 2.0 * math.atan2(sin_half, w) / sin_half if sin_half > 1e-12 else 2.0
    turned = np.array(pose, dtype=np.float32)
    turned[:3] = (qx * factor, qy * factor, qz * factor)
    return turned


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., N, 3) metres camera frame, K (..., 3, 3) -> (..., N, 2) pixels (float32)."""
    uvw = np.asarray(points, dtype=np.float64) @ np.swapaxes(np.asarray(K, dtype=np.float64), -1, -2)
    return (uvw[..., :2] / np.maximum(uvw[..., 2:3], 1e-9)).astype(np.float32)


def photometric(
    image: np.ndarray, augmentation: Augmentation, rng: np.random.Generator, keypoints_2d: np.ndarray,
    out: np.ndarray | None = None, affine: np.ndarray | None = None,
) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> augmented: colour jitter, blur, an occluding rectangle near the hand.

    keypoints_2d (21, 2) pixels place the occluder so that it covers part of the hand: crop pixels, or with `affine`
    (3, 3) source pixels that it carries into the crop (only when an occluder is drawn: most items need none).
    out: where to write the result (may be `image` itself: in place, no allocation); default a new array (or `image`
    when nothing applies).
    """
    result = image
    if augmentation.color_jitter > 0:
        result = color_jitter(result, augmentation.color_jitter, rng, out)
    size = image.shape[0]
    if rng.random() < augmentation.blur_prob:
        result = gaussian_blur(result, rng.uniform(0.4, 1.6) * size / 224.0, out)
    if rng.random() < augmentation.occlusion_prob:
        if affine is not None:
            keypoints_2d = keypoints_2d @ affine[:2, :2].T + affine[:2, 2]  # (21, 2) crop px
        result = occlude(result, augmentation.occlusion_size, rng, keypoints_2d, out)
    if out is not None and result is not out:
        np.copyto(out, result)
        return out
    return result


def gaussian_blur(image: np.ndarray, sigma: float, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, C) uint8 blurred with a Gaussian of `sigma` pixels (kernel radius 3 sigma, reflected borders), into
    `out` (may be `image`) or a new array.

    Two separable float passes: `cv2.GaussianBlur` on 8-bit images takes its bit-exact fixed-point path, 2-3x slower
    at these sizes; results differ from it by at most 2 grey levels (its fixed-point rounding).
    """
    kernel = cv2.getGaussianKernel(2 * max(1, round(3 * sigma)) + 1, sigma)
    return cv2.sepFilter2D(image, -1, kernel, kernel, dst=out, borderType=cv2.BORDER_REFLECT_101)


_LUMA = (0.299, 0.587, 0.114)  # RGB weights of grey


def _hue_rotation(degrees: float) -> list[list[float]]:
    """(3, 3) RGB hue rotation about the grey axis that keeps luminance (the SVG/CSS `hueRotate` matrix; rows sum
    to 1, so it keeps grey)."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [
        [0.213 + 0.787 * cos - 0.213 * sin, 0.715 - 0.715 * cos - 0.715 * sin, 0.072 - 0.072 * cos + 0.928 * sin],
        [0.213 - 0.213 * cos + 0.143 * sin, 0.715 + 0.285 * cos + 0.140 * sin, 0.072 - 0.072 * cos - 0.283 * sin],
        [0.213 - 0.213 * cos - 0.787 * sin, 0.715 - 0.715 * cos + 0.715 * sin, 0.072 + 0.928 * cos + 0.072 * sin],
    ]


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """(H, W, 3) uint8 RGB into `out` (may be `image`) or a new array: random brightness b, contrast c, saturation s
    (in [1 - strength, 1 + strength]) and a hue rotation of up to 18 x strength degrees, as one affine colour map (a
    single `cv2.transform`, saturating uint8; 3 channels in and out is its fast fixed-point path):

    x -> H S (c b x + (1 - c) b m),  m = mean grey level, S = s I + (1 - s) 1 luma^T, H = hue rotation.
    (S and H keep grey, so the offset (1 - c) b m passes through them unchanged; and H S = s H + (1 - s) 1 luma^T.)
    """
    jitter = (1 - strength, 1 + strength)
    brightness, contrast, saturation, hue = uniforms(rng, (jitter, jitter, jitter, (-18 * strength, 18 * strength)))
    mean = sum(cv2.mean(image)[:3]) / 3.0
    gain = contrast * brightness
    hue_gain, grey_gain, offset = saturation * gain, (1 - saturation) * gain, (1 - contrast) * brightness * mean
    matrix = np.array([[h * hue_gain + luma * grey_gain for h, luma in zip(row, _LUMA)] + [offset]
                       for row in _hue_rotation(hue)])  # (3, 4), built in scalars: ~5 numpy calls fewer per item
    return cv2.transform(image, matrix, dst=out)


def occlude(image: np.ndarray, max_fraction: float, rng: np.random.Generator, keypoints_2d: np.ndarray,
            out: np.ndarray | None = None) -> np.ndarray:
    """Paints a rectangle (flat colour or noise), side up to `max_fraction` of the image, centred near a keypoint,
    onto `out` (may be `image`) or a copy."""
    size = image.shape[0]
    if out is None:
        out = image.copy()
    elif out is not image:
        np.copyto(out, image)
    width, height = (rng.uniform(0.3, 1.0, size=2) * max_fraction * size).astype(int) + 1
    centre = keypoints_2d[rng.integers(len(keypoints_2d))] + rng.normal(0, 0.05 * size, size=2)
    x0, y0 = int(centre[0] - width / 2), int(centre[1] - height / 2)
    x1, y1 = max(0, x0), max(0, y0)
    x2, y2 = min(size, x0 + width), min(size, y0 + height)
    if x2 <= x1 or y2 <= y1:
        return out
    if rng.random() < 0.5:
        out[y1:y2, x1:x2] = rng.integers(0, 256, size=3, dtype=np.uint8)
    else:
        out[y1:y2, x1:x2] = rng.integers(0, 256, size=(y2 - y1, x2 - x1, 3), dtype=np.uint8)
    return out
