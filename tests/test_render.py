"""Offscreen rendering and the OpenCV fallback put a mesh where K projects it."""

from __future__ import annotations

import numpy as np
import pytest

from handmesh.render import MeshRenderer, RendererUnavailable, overlay, render_mesh_opencv

K = np.array([[100.0, 0.0, 31.0], [0.0, 100.0, 25.0], [0.0, 0.0, 1.0]])


def _square(centre_px: tuple[float, float], half_m: float = 0.053, depth: float = 1.0):
    """A square facing the camera whose centre projects to `centre_px`; two triangles."""
    cx = (centre_px[0] - K[0, 2]) * depth / K[0, 0]
    cy = (centre_px[1] - K[1, 2]) * depth / K[1, 1]
    vertices = np.array([[cx - half_m, cy - half_m, depth], [cx + half_m, cy - half_m, depth],
                         [cx + half_m, cy + half_m, depth], [cx - half_m, cy + half_m, depth]])
    return vertices, np.array([[0, 1, 2], [0, 2, 3]])


def _mask_centre(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def test_pyrender_places_mesh_where_K_projects_it():
    try:
        renderer = MeshRenderer(64, 48)
    except RendererUnavailable as error:
        pytest.skip(f"no offscreen OpenGL here: {error}")
    vertices, faces = _square((40.0, 20.0))
    rendering = renderer.render([(vertices, faces)], K)
    renderer.close()
    # The square spans 34.7..45.3 x 14.7..25.3 px: 11 x 11 pixel centres around (40, 20). Multisampled edges may
    # shift the covered set by a pixel row, so the centre is checked to half a pixel.
    np.testing.assert_allclose(_mask_centre(rendering.mask), (40.0, 20.0), atol=0.5)
    assert 100 <= rendering.mask.sum() <= 144
    np.testing.assert_allclose(rendering.depth[rendering.mask], 1.0, atol=1e-3)
    blended = overlay(np.zeros((48, 64, 3), np.uint8), rendering, alpha=1.0)
    assert (blended[~rendering.mask] == 0).all() and (blended[rendering.mask] > 0).any()


def test_opencv_fallback_places_mesh_where_K_projects_it():
    vertices, faces = _square((20.0, 30.0))
    image = np.zeros((48, 64, 3), np.uint8)
    drawn = render_mesh_opencv(image, vertices, faces, K, alpha=1.0)
    covered = drawn.any(axis=-1)
    np.testing.assert_allclose(_mask_centre(covered), (20.0, 30.0), atol=0.5)
    assert not image.any()  # the input is left untouched


def test_opencv_fallback_ignores_geometry_behind_the_camera():
    vertices, faces = _square((20.0, 30.0), depth=-1.0)
    image = np.full((48, 64, 3), 7, np.uint8)
    np.testing.assert_array_equal(render_mesh_opencv(image, vertices, faces, K), image)
