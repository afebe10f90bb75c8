"""Offscreen rendering (pyrender's and the lean overlay renderer) and the OpenCV fallback put a mesh where K projects
it; a region rendered with a shifted principal point is the full render's pixels; layers blend exactly."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from handmesh.render import (
    LayerRenderer,
    MeshLayer,
    MeshRenderer,
    RendererUnavailable,
    blend_layer,
    gl_projection,
    overlay,
    render_mesh_opencv,
    vertex_normals,
)

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


def _layer_renderer(width: int, height: int) -> LayerRenderer:
    try:
        return LayerRenderer(width, height)
    except RendererUnavailable as error:
        pytest.skip(f"no offscreen OpenGL here: {error}")


def test_layer_renderer_places_mesh_where_K_projects_it():
    renderer = _layer_renderer(64, 48)
    try:
        vertices, faces = _square((40.0, 20.0))
        layer = renderer.render([(vertices, faces)], K)
        small = renderer.render([(vertices, faces)], K, size=(50, 30))  # a smaller viewport, same camera
    finally:
        renderer.close()
    # 34.7..45.3 x 14.7..25.3 px: exactly the 11 x 11 pixel centres 35..45 x 15..25 (no multisampling)
    rows, cols = np.nonzero(layer.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (15, 25, 35, 45) and layer.mask.sum() == 121
    assert set(np.unique(layer.coverage)) == {0, 255}
    # facing the camera squarely at the centre: the full colour (ambient + the rest), 0.8 * 255 = 204 in red
    assert abs(int(layer.color[20, 40, 0]) - 204) <= 1 and not layer.color[~layer.mask].any()
    np.testing.assert_array_equal(small.coverage, layer.coverage[:30, :50])


def test_a_region_with_shifted_principal_point_is_the_full_render():
    """What the demo does: render only the hand's bounding box, the camera's principal point moved by its corner."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.04)
    vertices = np.asarray(sphere.vertices) + (0.03, -0.02, 0.5)  # (642, 3) metres, off-centre
    frame_K = np.array([[300.0, 0.0, 79.5], [0.0, 300.0, 59.5], [0.0, 0.0, 1.0]])
    renderer = _layer_renderer(160, 120)
    try:
        full = renderer.render([(vertices, sphere.faces)], frame_K)
        x0, y0, x1, y1 = 65, 15, 135, 85  # holds the sphere: it projects to about 73..122 x 23..72 px
        region_K = frame_K.copy()
        region_K[:2, 2] -= (x0, y0)
        region = renderer.render([(vertices, sphere.faces)], region_K, size=(x1 - x0, y1 - y0))
    finally:
        renderer.close()
    assert 1000 < full.mask.sum() == full.mask[y0:y1, x0:x1].sum()  # all of it inside the region
    colour_difference = np.abs(region.color.astype(int) - full.color[y0:y1, x0:x1].astype(int)).max(axis=-1)
    assert (region.mask != full.mask[y0:y1, x0:x1]).sum() <= 3  # edge pixels may flip in rounding
    assert (colour_difference > 1).sum() <= 3


def test_gl_projection_maps_K_pixels_to_opengl_pixel_centres():
    width, height = 64, 48
    point = np.array([0.1, -0.05, 2.0, 1.0])  # metres
    clip = gl_projection(K, width, height) @ point
    ndc = clip[:3] / clip[3]
    u, v = (K @ point[:3])[:2] / point[2]
    np.testing.assert_allclose((ndc[:2] + 1) / 2 * (width, height), (u + 0.5, v + 0.5), atol=1e-4)
    assert -1 < ndc[2] < 1


def test_vertex_normals_are_area_weighted_face_normals():
    vertices, faces = _square((20.0, 30.0))  # two triangles of area 2 * 0.053^2 each, in the plane z = 1
    normals = vertex_normals(vertices, faces)
    twice_area = 2 * (2 * 0.053) ** 2 / 2
    np.testing.assert_allclose(normals[:, :2], 0, atol=1e-12)
    np.testing.assert_allclose(np.abs(normals[:, 2]), [2 * twice_area, twice_area, 2 * twice_area, twice_area])


def test_blend_layer_known_answers():
    image = np.full((2, 3, 3), 100, np.uint8)
    color = np.array([[[200, 0, 50], [100, 0, 25], [0, 0, 0]]] * 2, np.uint8)  # premultiplied: full, half, none
    coverage = np.array([[255, 128, 0]] * 2, np.uint8)
    opaque = image.copy()
    blend_layer(opaque, MeshLayer(color, coverage), alpha=1.0)
    np.testing.assert_allclose(opaque[0].astype(int), [[200, 0, 50], [150, 50, 75], [100, 100, 100]], atol=1)
    translucent = image.copy()
    blend_layer(translucent, MeshLayer(color[:1, :2], coverage[:1, :2]), alpha=0.5, x0=1, y0=1)
    np.testing.assert_array_equal(translucent[0], image[0])  # outside the layer: untouched
    np.testing.assert_array_equal(translucent[1, 0], image[1, 0])
    np.testing.assert_allclose(translucent[1, 1:].astype(int), [[150, 50, 75], [125, 75, 87.5]], atol=1)
