"""A short generated video of a moving hand (any MANO-format model, e.g. the stand-in) over busy backgrounds.

For the demo's tests and its benchmark: no camera or recorded footage needed, and the truth (the hand's mask and 2D
keypoints per frame) is known.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handmesh.demo.crop import frame_intrinsics
from handmesh.demo.outputs import VideoRecorder
from handmesh.mano import ManoLayer
from handmesh.poses import named_pose, viewing_placement
from handmesh.render import SKIN_RGB, MeshRenderer, RendererUnavailable, render_mesh_opencv


@dataclass
class SyntheticClip:
    path: Path
    K: np.ndarray  # (3, 3) px, the frames' camera (frame_intrinsics' default)
    masks: np.ndarray  # (N, H, W) bool, where the hand is
    keypoints_2d: np.ndarray  # (N, 21, 2) px
    fps: float


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a colour gradient with a few random rectangles and circles."""
    import cv2

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    corner = rng.uniform(40, 200, size=(2, 3))
    weight = (xs / width + ys / height)[..., None] / 2.0
    image = (corner[0] * (1 - weight) + corner[1] * weight).astype(np.uint8)
    for _ in range(6):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            corner = (x + int(rng.integers(20, width // 3)), y + int(rng.integers(20, height // 3)))
            cv2.rectangle(image, (x, y), corner, colour, -1)
        else:
            cv2.circle(image, (x, y), int(rng.integers(10, min(width, height) // 6)), colour, -1)
    return image


def write_synthetic_clip(
    path: str | os.PathLike, mano_dir: str | os.PathLike, frames: int = 8, width: int = 640, height: int = 480,
    side: str = "right", pose: str = "flat", fps: float = 30.0, seed: int = 0, fill: float = 0.45,
    colour: tuple[float, float, float] = SKIN_RGB,
) -> SyntheticClip:
    """Write an mp4 of the posed hand, palm to the camera, drifting sideways and turning, over moving backgrounds.

    The hand spans about `fill` of min(W, H), in `colour` (linear RGB in [0, 1]). Rendered with pyrender when a GL
    context exists, else with OpenCV.
    """
    layer = ManoLayer.from_dir(mano_dir, side=side)
    with torch.no_grad():
        output = layer(named_pose(layer, pose, seed))
    vertices, keypoints = output.vertices[0].double().numpy(), output.keypoints[0].double().numpy()
    K = frame_intrinsics(width, height)
    placed = viewing_placement(layer, np.concatenate([vertices, keypoints]), K[0, 0], min(width, height), fill)
    centre = placed.mean(axis=0)
    faces = layer.faces.numpy()
    try:
        renderer: MeshRenderer | None = MeshRenderer(width, height)
    except RendererUnavailable:
        renderer = None
    rng = np.random.default_rng(seed)
    scene = background(width * 2, height, rng)  # panned across: the background moves between frames
    recorder = VideoRecorder(path, fps, (width, height))
    masks, keypoints_2d = [], []
    try:
        for index in range(frames):
            phase = index / max(frames - 1, 1)
            angle = 0.4 * (phase - 0.5)  # radians about the viewing axis
            rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
            shift = np.array([0.04 * (phase - 0.5), 0.01 * np.sin(2 * np.pi * phase), 0.0]) * centre[2]
            points = (placed - centre) @ rotation.T + centre + shift  # (778 + 21, 3) metres, camera frame
            image = np.ascontiguousarray(scene[:, int(phase * width) : int(phase * width) + width])
            if renderer is not None:
                rendering = renderer.render([(points[: len(vertices)], faces)], K, color=colour)
                mask = rendering.mask
                image[mask] = rendering.color[mask]
            else:
                drawn = render_mesh_opencv(image, points[: len(vertices)], faces, K, color=colour, alpha=1.0)
                mask = np.any(drawn != image, axis=-1)
                image = drawn
            uvw = points[len(vertices) :] @ K.T
            keypoints_2d.append(uvw[:, :2] / uvw[:, 2:])
            masks.append(mask)
            recorder.write(image)
    finally:
        recorder.close()
        if renderer is not None:
            renderer.close()
    return SyntheticClip(Path(path), K, np.stack(masks), np.stack(keypoints_2d), fps)
