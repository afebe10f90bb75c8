"""Drawing reconstructed hands over a frame: the shaded mesh, the 2D skeleton, and a side panel of other views.

Meshes go through `handmesh.render.MeshRenderer` (pyrender offscreen, EGL) at the frame size with the frame's camera,
so they land on the hands; when no GL context can be made the OpenCV fallback draws them. The GL context belongs to
the thread that made it: create, use and close an `OverlayRenderer` in one thread.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from handmesh.demo.crop import HandEstimate
from handmesh.errors import HandmeshError
from handmesh.joints import BONES
from handmesh.render import MeshRenderer, RendererUnavailable, overlay, render_mesh_opencv

RENDERERS = ("auto", "pyrender", "opencv")
FINGER_COLOURS = ((230, 80, 80), (240, 200, 60), (80, 200, 90), (70, 170, 240), (190, 100, 230))  # RGB, thumb..pinky
PANEL_FILL = 0.4  # in the side panel the hand's radius spans this share of the view


@dataclass
class ViewOptions:
    """What to draw; toggled live by keys (m) in the app."""

    mesh: bool = True
    skeleton: bool = False
    alpha: float = 0.7  # mesh opacity over the frame


def rotate_for_panel(hands: list[HandEstimate], view: str, focal: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Meshes turned to be seen from the right ("side") or from above ("top"), centred at a depth where they fill
    PANEL_FILL of a view of focal length `focal` px and side `focal` px. Returns [(vertices (778, 3) m, faces)]."""
    points = np.concatenate([h.vertices for h in hands]).astype(np.float64)  # (N, 3) metres
    centre = points.mean(axis=0)
    radius = max(float(np.linalg.norm(points - centre, axis=1).max()), 1e-3)
    if view == "side":  # about the y axis: depth becomes x, so the camera looks from the right
        rotation = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    else:  # about the x axis: depth becomes y (down), so the camera looks from above
        rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    offset = np.array([0.0, 0.0, radius / PANEL_FILL])
    return [((h.vertices - centre) @ rotation.T + offset, h.faces) for h in hands]


def draw_skeleton(image: np.ndarray, keypoints_2d: np.ndarray) -> None:
    """Bones and joints of one hand, in place. keypoints_2d (21, 2) px, FreiHAND order."""
    thickness = max(1, round(min(image.shape[:2]) / 240))
    points = [tuple(int(round(c)) for c in p) for p in np.nan_to_num(keypoints_2d)]
    for parent, child in BONES:
        finger = (child - 1) // 4
        cv2.line(image, points[parent], points[child], FINGER_COLOURS[finger], thickness + 1, cv2.LINE_AA)
    for index, point in enumerate(points):
        colour = (255, 255, 255) if index == 0 else FINGER_COLOURS[(index - 1) // 4]
        cv2.circle(image, point, thickness + 2, colour, -1, cv2.LINE_AA)


class OverlayRenderer:
    """Draws hands over frames of one size seen through K (3, 3) px. backend: auto | pyrender | opencv."""

    def __init__(self, width: int, height: int, K: np.ndarray, backend: str = "auto", side_view: bool = False,
                 notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr)):
        if backend not in RENDERERS:
            raise HandmeshError(f"unknown renderer {backend!r}; expected one of {', '.join(RENDERERS)}")
        self.width, self.height, self.K = width, height, np.asarray(K, dtype=np.float64)
        self.panel = height // 2 if side_view else 0  # side panel: two square views stacked, this wide
        self._renderer: MeshRenderer | None = None
        self._panel_renderer: MeshRenderer | None = None
        self.backend = "opencv"
        if backend != "opencv":
            try:
                self._renderer = MeshRenderer(width, height)
                self._panel_renderer = MeshRenderer(self.panel, self.panel) if self.panel else None
                self.backend = "pyrender"
            except RendererUnavailable as error:
                if backend == "pyrender":
                    raise
                notify(f"renderer: OpenCV fallback (flat, slower) because {error}".splitlines()[0])

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images `draw` returns."""
        return self.width + self.panel, self.height

    def draw(self, frame: np.ndarray, hands: list[HandEstimate], view: ViewOptions) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB -> (H, W + panel, 3) uint8 RGB with the hands drawn; the frame as is without hands."""
        if hands and view.mesh:
            image = self._meshes(frame, [(h.vertices, h.faces) for h in hands], self.K, view.alpha, self._renderer)
        else:
            image = frame.copy()
        if view.skeleton:
            for hand in hands:
                draw_skeleton(image, hand.keypoints_2d)
        if self.panel:
            image = np.concatenate([image, self._side_panel(hands)], axis=1)
        return image

    def _meshes(self, image, meshes, K, alpha, renderer: MeshRenderer | None) -> np.ndarray:
        if renderer is not None:
            return overlay(image, renderer.render(meshes, K), alpha)
        for vertices, faces in meshes:
            image = render_mesh_opencv(image, vertices, faces, K, alpha=alpha)
        return image

    def _side_panel(self, hands: list[HandEstimate]) -> np.ndarray:
        size = self.panel
        K = np.array([[size, 0.0, (size - 1) / 2.0], [0.0, size, (size - 1) / 2.0], [0.0, 0.0, 1.0]])
        views = []
        for name in ("side", "top"):
            view = np.full((size, size, 3), 32, dtype=np.uint8)
            if hands:
                view = self._meshes(view, rotate_for_panel(hands, name, float(size)), K, 1.0, self._panel_renderer)
            cv2.putText(view, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200), 1, cv2.LINE_AA)
            views.append(view)
        panel = np.concatenate(views, axis=0)
        return np.pad(panel, ((0, self.height - panel.shape[0]), (0, 0), (0, 0)))

    def close(self) -> None:
        for renderer in (self._renderer, self._panel_renderer):
            if renderer is not None:
                renderer.close()
