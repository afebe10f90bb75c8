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
    second_keypoints_2d: np.ndarray | None = None  # (N, 21, 2) px of the second (left) hand; NaN before it enters


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
    colour: tuple[float, float, float] = SKIN_RGB, path_x: tuple[float, float] = (-0.02, 0.02),
    second_hand_from: int | None = None, second_x: float = -0.3,
) -> SyntheticClip:
    """Write an mp4 of the posed hand, palm to the camera, drifting sideways and turning, over moving backgrounds.

    The hand spans about `fill` of min(W, H), in `colour` (linear RGB in [0, 1]). Its sideways shift goes from
    path_x[0] to path_x[1] times its depth over the clip (the frame's half width is W / (2 f) = 0.5 depths with the
    default camera, so (0, 1) leaves the frame). second_hand_from: the frame from which a second hand of the other
    side is also in view, still, shifted by second_x depths. Rendered with pyrender when a GL context exists, else
    with OpenCV.
    """
    K = frame_intrinsics(width, height)
    hands = [_placed_hand(mano_dir, side, pose, seed, K, min(width, height), fill)]
    if second_hand_from is not None:
        hands.append(_placed_hand(mano_dir, "left" if side == "right" else "right", pose, seed + 1, K,
                                  min(width, height), fill))
    placed, faces = hands[0]
    n_vertices = len(placed) - 21
    centre = placed.mean(axis=0)
    try:
        renderer: MeshRenderer | None = MeshRenderer(width, height)
    except RendererUnavailable:
        renderer = None
    rng = np.random.default_rng(seed)
    scene = background(width * 2, height, rng)  # panned across: the background moves between frames
    recorder = VideoRecorder(path, fps, (width, height))
    masks, keypoints_2d, second_2d = [], [], []
    project = lambda points: (points @ K.T)[:, :2] / (points @ K.T)[:, 2:]  # noqa: E731 - (N, 3) m -> (N, 2) px
    try:
        for index in range(frames):
            phase = index / max(frames - 1, 1)
            angle = 0.4 * (phase - 0.5)  # radians about the viewing axis
            rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
            shift_x = path_x[0] + (path_x[1] - path_x[0]) * phase
            shift = np.array([shift_x, 0.01 * np.sin(2 * np.pi * phase), 0.0]) * centre[2]
            points = (placed - centre) @ rotation.T + centre + shift  # (778 + 21, 3) metres, camera frame
            meshes = [(points[:n_vertices], faces)]
            second = np.full((21, 2), np.nan)
            if second_hand_from is not None and index >= second_hand_from:
                other, other_faces = hands[1]
                other = other + np.array([second_x, 0.0, 0.0]) * centre[2]
                meshes.append((other[:n_vertices], other_faces))
                second = project(other[n_vertices:])
            image = np.ascontiguousarray(scene[:, int(phase * width) : int(phase * width) + width])
            if renderer is not None:
                rendering = renderer.render(meshes, K, color=colour)
                mask = rendering.mask
                image[mask] = rendering.color[mask]
            else:
                drawn = image
                for mesh_vertices, mesh_faces in meshes:
                    drawn = render_mesh_opencv(drawn, mesh_vertices, mesh_faces, K, color=colour, alpha=1.0)
                mask = np.any(drawn != image, axis=-1)
                image = drawn
            keypoints_2d.append(project(points[n_vertices:]))
            second_2d.append(second)
            masks.append(mask)
            recorder.write(image)
    finally:
        recorder.close()
        if renderer is not None:
            renderer.close()
    return SyntheticClip(Path(path), K, np.stack(masks), np.stack(keypoints_2d), fps,
                         np.stack(second_2d) if second_hand_from is not None else None)


def _placed_hand(mano_dir, side: str, pose: str, seed: int, K: np.ndarray, frame_size: int,
                 fill: float) -> tuple[np.ndarray, np.ndarray]:
    """The posed hand placed in view: (vertices and keypoints (778 + 21, 3) metres, camera frame; faces (1538, 3))."""
    layer = ManoLayer.from_dir(mano_dir, side=side)
    with torch.no_grad():
        output = layer(named_pose(layer, pose, seed))
    points = torch.cat([output.vertices[0], output.keypoints[0]]).double().numpy()
    return viewing_placement(layer, points, K[0, 0], frame_size, fill), layer.faces.numpy()
