"""Crop intrinsics, the left-hand flip and its mirror back to the frame: exact maths and actual image warps."""

import numpy as np
import pytest

from handmesh.demo.crop import MIRROR, Box, crop_affine, crop_hand, frame_intrinsics, to_frame
from handmesh.render import render_mesh_opencv

W, H, S = 320, 240, 64


def project(points, K):
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def hand_like_points(seed=0, count=40):
    """(count, 3) metres in front of the camera, around the frame's centre line."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.04, (count, 3)) + np.array([0.03, -0.02, 0.5])


def test_frame_intrinsics_default_and_given():
    K = frame_intrinsics(W, H)
    np.testing.assert_allclose(K, [[320, 0, 159.5], [0, 320, 119.5], [0, 0, 1]])
    np.testing.assert_allclose(frame_intrinsics(W, H, (500, 510, 150, 100)), [[500, 0, 150], [0, 510, 100], [0, 0, 1]])


def test_crop_K_matches_the_formula_and_the_affine():
    K = frame_intrinsics(W, H)
    box = Box(170.0, 110.0, 128.0)  # x0 = 106, y0 = 46, scale 0.5
    crop = crop_hand(np.zeros((H, W, 3), np.uint8), box, K, S, is_left=False)
    np.testing.assert_allclose(crop.K, [[160, 0, 0.5 * (159.5 - 106)], [0, 160, 0.5 * (119.5 - 46)], [0, 0, 1]])
    points = hand_like_points()
    full = project(points, K)
    np.testing.assert_allclose(project(points, crop.K), full * 0.5 - [53, 23], atol=1e-9)


def test_left_crop_K_is_a_proper_camera_with_mirrored_principal_point():
    K = frame_intrinsics(W, H)
    box = Box(170.0, 110.0, 128.0)
    right = crop_hand(np.zeros((H, W, 3), np.uint8), box, K, S, is_left=False)
    left = crop_hand(np.zeros((H, W, 3), np.uint8), box, K, S, is_left=True)
    expected = right.K.copy()
    expected[0, 2] = (S - 1) - right.K[0, 2]  # cx -> (S - 1) - cx: cv2.flip maps column i to S - 1 - i
    np.testing.assert_allclose(left.K, expected)
    assert left.K[0, 0] > 0


def test_crop_pixels_land_where_the_affine_says():
    K = frame_intrinsics(W, H)
    frame = np.zeros((H, W, 3), np.uint8)
    frame[90, 140] = (255, 0, 0)  # one red pixel (row 90, column 140)
    box = Box(170.0, 110.0, 64.0)  # scale 1: a pure shift by the corner (138, 78)
    for is_left, column in ((False, 140 - 138), (True, S - 1 - (140 - 138))):
        crop = crop_hand(frame, box, K, S, is_left)
        rows, columns = np.nonzero(crop.image[..., 0])
        assert (rows.tolist(), columns.tolist()) == ([90 - 78], [column])
        np.testing.assert_allclose(crop.affine @ [140, 90, 1], [column, 90 - 78, 1])


@pytest.mark.parametrize("is_left", [False, True])
def test_mirror_round_trip_is_exact(is_left):
    """A right-hand prediction of the (flipped) crop, mapped back, projects to its own 2D keypoints in the frame."""
    K = frame_intrinsics(W, H)
    box = Box(150.0, 125.0, 150.0)
    crop = crop_hand(np.zeros((H, W, 3), np.uint8), box, K, S, is_left)
    model_points = hand_like_points(1)  # what the right-hand model outputs, in the (mirrored) world it sees
    model_uv = project(model_points, crop.K)  # its 2D keypoints in the crop it was given
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    hand = to_frame(crop, model_points[:30], model_points[30:], model_uv[30:], faces)
    # back in the frame: the 3D keypoints project to the returned 2D keypoints ...
    np.testing.assert_allclose(project(hand.keypoints_3d.astype(np.float64), K), hand.keypoints_2d, atol=1e-3)
    # ... which the crop's own affine (flip included) sends to the model's 2D keypoints
    homogeneous = np.concatenate([hand.keypoints_2d, np.ones((10, 1))], axis=1)
    np.testing.assert_allclose((homogeneous @ crop.affine.T)[:, :2], model_uv[30:], atol=1e-3)
    sign = -1.0 if is_left else 1.0
    np.testing.assert_allclose(hand.vertices, model_points[:30] * [sign, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(hand.faces, faces[:, ::-1] if is_left else faces)


def test_mirrored_faces_keep_outward_winding():
    """Reversing the triangles of a mirrored closed mesh keeps its signed volume positive."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float) + [0, 0, 2]
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])

    def volume(v, f):
        return np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6

    crop = crop_hand(np.zeros((H, W, 3), np.uint8), Box(160, 120, 100), frame_intrinsics(W, H), S, is_left=True)
    hand = to_frame(crop, vertices, vertices, np.zeros((4, 2)), faces)
    assert volume(vertices, faces) == pytest.approx(1 / 6)
    assert volume(hand.vertices.astype(float), hand.faces) == pytest.approx(1 / 6)


def test_flipped_crop_of_a_left_hand_image_is_the_mirrored_right_hand_seen_through_crop_K():
    """Image-level check of the flip: render a 'left hand' in the frame, crop it as a left hand, and compare with the
    mirrored mesh rendered straight into the crop with the crop's K."""
    rng = np.random.default_rng(3)
    centre = np.array([0.02, 0.01, 0.45])
    directions = rng.normal(size=(200, 3))
    vertices = centre + 0.05 * directions / np.linalg.norm(directions, axis=1, keepdims=True) * [1.6, 1.0, 0.5]
    vertices = np.concatenate([vertices, [[0.09, 0.0, 0.45]]])  # a spike to the right: makes the shape asymmetric
    from scipy.spatial import ConvexHull

    faces = ConvexHull(vertices).simplices
    K = frame_intrinsics(W, H)
    black = np.zeros((H, W, 3), np.uint8)
    frame = render_mesh_opencv(black, vertices, faces, K, alpha=1.0)
    u, v = project(centre[None], K)[0]
    box = Box(u + 25.0, v, 160.0)  # the shape sits left of the box centre: a missing flip would show
    crop = crop_hand(frame, box, K, 128, is_left=True)
    seen = crop.image.any(axis=-1)
    direct = render_mesh_opencv(np.zeros((128, 128, 3), np.uint8), vertices @ MIRROR, faces[:, ::-1], crop.K, alpha=1.0)
    expected = direct.any(axis=-1)
    iou = (seen & expected).sum() / (seen | expected).sum()
    assert iou > 0.95, iou
    unflipped_K = crop_affine(box, 128, False) @ K
    unflipped = render_mesh_opencv(np.zeros((128, 128, 3), np.uint8), vertices, faces, unflipped_K, alpha=1.0)
    # the check can tell a missing flip
    assert (seen & unflipped.any(-1)).sum() / (seen | unflipped.any(-1)).sum() < 0.7
