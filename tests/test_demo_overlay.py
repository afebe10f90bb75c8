"""The demo's overlay: meshes rendered over their region only give the full-frame render's pixels; the side panel;
the llvmpipe thread setting is the demo's alone."""

import os

import cv2
import numpy as np
import pytest
import torch

from handmesh.demo.crop import Box, HandEstimate, frame_intrinsics
from handmesh.demo.overlay import LLVMPIPE_THREADS, OverlayRenderer, ViewOptions, llvmpipe_threads
from handmesh.mano import ManoLayer
from handmesh.poses import named_pose, viewing_placement
from handmesh.render import LayerRenderer, RendererUnavailable, blend_layer

W, H = 320, 240


@pytest.fixture(scope="module")
def hand(standin_dir) -> HandEstimate:
    """The stand-in's flat hand, palm to the camera, spanning ~40% of the frame's height, right of centre."""
    layer = ManoLayer.from_dir(standin_dir)
    with torch.no_grad():
        output = layer(named_pose(layer, "flat"))
    vertices, keypoints = output.vertices[0].double().numpy(), output.keypoints[0].double().numpy()
    K = frame_intrinsics(W, H)
    placed = viewing_placement(layer, np.concatenate([vertices, keypoints]), K[0, 0], H, 0.4)
    placed = placed + np.array([0.075, 0.0, 0.0]) * placed[:, 2].mean()  # 0.075 f = 24 px right of centre
    uv = placed[778:] @ K.T
    keypoints_2d = uv[:, :2] / uv[:, 2:]
    return HandEstimate(placed[:778], layer.faces.numpy(), placed[778:], keypoints_2d, Box.around(keypoints_2d), False)


def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def gl_overlay(side_view: bool = False) -> OverlayRenderer:
    try:
        return OverlayRenderer(W, H, frame_intrinsics(W, H), "gl", side_view=side_view)
    except RendererUnavailable as error:
        pytest.skip(f"no offscreen OpenGL here: {error}")


def test_region_rendering_gives_the_full_frame_render(hand):
    image, K = frame(), frame_intrinsics(W, H)
    overlay = gl_overlay()
    try:
        drawn = overlay.draw(image, [hand], ViewOptions(alpha=0.7))
    finally:
        overlay.close()
    renderer = LayerRenderer(W, H)  # after the overlay's is closed: one EGL renderer at a time
    try:
        layer = renderer.render([(hand.vertices, hand.faces)], K)
    finally:
        renderer.close()
    expected = image.copy()
    blend_layer(expected, layer, 0.7)
    assert 2000 < layer.mask.sum() < 0.5 * W * H
    difference = np.abs(drawn.astype(int) - expected.astype(int)).max(axis=-1)
    assert (difference > 1).sum() <= 5  # rasterisation noise on a few edge pixels at most
    assert (drawn[~layer.mask] == image[~layer.mask]).all()  # nothing drawn off the mesh
    changed = np.abs(drawn.astype(int) - image.astype(int)).max(axis=-1) > 30
    assert changed[layer.mask].mean() > 0.5


def test_side_panel_views_match_the_opencv_fallback(hand):
    """Both views of the panel show the hand where the OpenCV fallback, given the same placement, draws it."""
    overlay = gl_overlay(side_view=True)
    try:
        drawn, empty = overlay.draw(frame(), [hand], ViewOptions()), overlay.draw(frame(), [], ViewOptions())
    finally:
        overlay.close()
    fallback = OverlayRenderer(W, H, frame_intrinsics(W, H), "opencv", side_view=True)
    fallback = fallback.draw(frame(), [hand], ViewOptions())
    assert drawn.shape == fallback.shape == (H, W + H // 2, 3)
    for top in (0, H // 2):
        views = [image[top : top + H // 2, W:].astype(int) for image in (drawn, fallback, empty)]
        gl_mask, cv_mask = (np.abs(view - views[2]).max(axis=-1) > 0 for view in views[:2])
        assert gl_mask.sum() > 200
        np.testing.assert_allclose(np.argwhere(gl_mask).mean(axis=0), np.argwhere(cv_mask).mean(axis=0), atol=2.0)
        near_cv = cv2.dilate(cv_mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # fallback edges differ by 1 px
        assert near_cv[gl_mask].mean() > 0.95


def test_llvmpipe_threads_are_set_only_while_the_context_is_made(monkeypatch):
    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    with llvmpipe_threads(LLVMPIPE_THREADS):
        assert os.environ["LP_NUM_THREADS"] == str(LLVMPIPE_THREADS)
    assert "LP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # the user's own setting wins and stays
    with llvmpipe_threads(LLVMPIPE_THREADS):
        assert os.environ["LP_NUM_THREADS"] == "3"
    assert os.environ["LP_NUM_THREADS"] == "3"
