"""Crops and augmentation keep the image, K, 2D and 3D labels consistent (known answers, then end to end)."""

from __future__ import annotations

import cv2
import numpy as np
import orjson
import pytest
import torch

from handmesh.data.freihand import FreiHANDDataset, mask_path
from handmesh.data.transforms import (
    NUM_DRAWS,
    Augmentation,
    color_jitter,
    crop_geometry,
    draw_augmentation,
    gaussian_blur,
    occlude,
    photometric,
    project,
    rotate_global_orient,
    rotate_points,
    to_chw,
    warp_image,
)
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir

RNG = np.random.default_rng(0)


def _apply(affine, uv):
    return uv @ affine[:2, :2].T + affine[:2, 2]


@pytest.mark.parametrize("fy_ratio, image_size", [(1.0, (224, 224)), (1.07, (320, 240))])
def test_rotated_points_project_through_the_new_K_where_the_image_moved(fy_ratio, image_size):
    K = np.array([[600.0, 0, 118.3], [0, 600.0 * fy_ratio, 104.9], [0, 0, 1]])
    points = RNG.normal(0, 0.05, size=(50, 3)) + [0.02, -0.01, 0.7]
    for zoom, angle, shift in ((1.0, 0.0, (0, 0)), (1.2, 0.7, (5.5, -3.0)), (0.8, -2.5, (-10, 7)),
                               (1.0, np.pi, (0, 0))):
        geometry = crop_geometry(K, image_size, 160, zoom, angle, shift)
        moved = project(rotate_points(points, geometry), geometry.K)
        np.testing.assert_allclose(moved, _apply(geometry.affine, project(points, K)), atol=1e-3)
        assert np.allclose(geometry.K[2], [0, 0, 1]) and geometry.K[0, 1] == 0 and geometry.K[1, 0] == 0


def test_rotation_is_about_the_image_centre_and_the_crop_centre_is_fixed():
    K = np.array([[500.0, 0, 100.0], [0, 500.0, 120.0], [0, 0, 1]])  # principal point off-centre
    geometry = crop_geometry(K, (224, 224), 224, angle_rad=0.9)
    np.testing.assert_allclose(_apply(geometry.affine, np.array([[111.5, 111.5]])), [[111.5, 111.5]], atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(geometry.affine[:2, :2]), 1.0)
    identity = crop_geometry(K, (224, 224), 224)
    np.testing.assert_allclose(identity.K, K, atol=1e-12)


def test_warped_image_shows_a_point_where_the_new_K_projects_it():
    K = np.array([[550.0, 0, 110.0], [0, 560.0, 113.0], [0, 0, 1]])
    point = np.array([[0.03, -0.02, 0.6]])
    u, v = project(point, K)[0]
    rows, cols = np.mgrid[:224, :224]
    blob = np.exp(-((cols - u) ** 2 + (rows - v) ** 2) / (2 * 3.0**2))
    image = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, axis=2)
    geometry = crop_geometry(K, (224, 224), 128, zoom=1.3, angle_rad=-0.6, shift_px=(4.0, -6.0))
    warped = warp_image(image, geometry)[..., 0].astype(np.float64)
    rows, cols = np.mgrid[:128, :128]
    centroid = np.array([(warped * cols).sum(), (warped * rows).sum()]) / warped.sum()
    expected = project(rotate_points(point, geometry), geometry.K)[0]
    assert np.abs(centroid - expected).max() < 0.1


def _translation(dx, dy):
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def test_closed_form_geometry_equals_the_composed_matrices():
    """crop_geometry's scalars against the module docstring's products, with skew and fx != fy."""
    K = np.array([[610.0, 2.5, 101.0], [0, 575.0, 117.0], [0, 0, 1]])
    width, height, size, zoom, angle, shift = 240, 200, 128, 1.15, 0.8, (3.0, -5.0)
    geometry = crop_geometry(K, (width, height), size, zoom, angle, shift)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    H = K @ rotation @ np.linalg.inv(K)
    centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    moved = H @ centre
    factor = zoom * size / max(width, height)
    place = (_translation((size - 1) / 2 + shift[0], (size - 1) / 2 + shift[1]) @ np.diag([factor, factor, 1.0])
             @ _translation(-centre[0], -centre[1]) @ _translation(*(centre - moved)[:2]))
    np.testing.assert_allclose(geometry.affine, place @ H, atol=1e-10)
    np.testing.assert_allclose(geometry.K, place @ H @ K @ rotation.T, atol=1e-9)
    np.testing.assert_allclose(geometry.rotation, rotation, atol=1e-15)


def test_warp_equals_opencvs_three_channel_warp_and_planes_are_nchw():
    image = (RNG.random((200, 240, 3)) * 255).astype(np.uint8)
    geometry = crop_geometry(np.array([[500.0, 0, 120], [0, 500, 100], [0, 0, 1]]), (240, 200), 96, 1.2, 0.5, (2, 1))
    warped = warp_image(image, geometry)  # warped as 4 channels inside
    np.testing.assert_array_equal(warped, cv2.warpAffine(image, geometry.affine[:2], (96, 96), flags=cv2.INTER_LINEAR))
    planes = to_chw(warped)
    assert planes.shape == (3, 96, 96) and planes.flags.c_contiguous
    np.testing.assert_array_equal(planes, warped.transpose(2, 0, 1))


def test_blur_matches_opencvs_gaussian_within_two_grey_levels():
    image = (RNG.random((64, 64, 3)) * 255).astype(np.uint8)
    for sigma in (0.4, 1.0, 1.6):
        reference = cv2.GaussianBlur(image, (2 * round(3 * sigma) + 1,) * 2, sigma, borderType=cv2.BORDER_REFLECT_101)
        assert np.abs(gaussian_blur(image, sigma).astype(int) - reference).max() <= 2  # its fixed-point rounding


def test_draws_map_uniforms_onto_the_strengths_and_colour_jitter_keeps_grey():
    strong = Augmentation(scale=0.2, rotation_deg=30, translate=0.1, color_jitter=0.4, blur_prob=0.5)
    middle = draw_augmentation(np.full((1, NUM_DRAWS), 0.5), strong, 64)  # every factor at its middle
    assert np.isclose(middle.zoom[0], np.sqrt(0.8 * 1.2)) and middle.angle_rad == [0.0] and middle.shift_px == [(0, 0)]
    np.testing.assert_allclose(middle.colour[0], np.eye(3, 4), atol=1e-12)  # b = c = s = 1, no hue turn: identity
    assert middle.blur_sigma == [0.0] and middle.occluded == [False] and middle.used == [10]  # no blur: sigma not drawn
    uniforms = np.random.default_rng(0).random((400, NUM_DRAWS))
    draws = draw_augmentation(uniforms, strong, 64)
    assert min(draws.zoom) >= 0.8 and max(draws.zoom) < 1.2 and max(np.abs(draws.angle_rad)) <= np.radians(30)
    assert np.abs(draws.shift_px).max() <= 6.4 and 0.4 < np.mean(np.array(draws.blur_sigma) > 0) < 0.6
    sigmas = np.array([sigma for sigma in draws.blur_sigma if sigma > 0])
    assert sigmas.min() >= 0.4 * 64 / 224 and sigmas.max() < 1.6 * 64 / 224
    assert 0.1 < np.mean(draws.occluded) < 0.2 and set(draws.used) == {10, 11}  # default occlusion_prob 0.15
    grey = np.repeat((RNG.random((32, 32, 1)) * 200 + 20).astype(np.uint8), 3, axis=2)
    jittered = np.stack([color_jitter(grey, colour) for colour in draws.colour[:20]]).astype(int)
    assert np.abs(jittered - jittered[..., :1]).max() <= 1  # saturation and hue keep grey pixels grey
    assert np.abs(jittered - grey).mean() > 1  # brightness / contrast still act
    assert draw_augmentation(uniforms, Augmentation(color_jitter=0.0), 64).colour is None


def test_global_orientation_turns_with_the_labels():
    layer = ManoLayer.from_dir(resolve_mano_dir().directory)
    pose = np.concatenate([RNG.normal(0, 1.0, 3), RNG.normal(0, 0.3, 45)]).astype(np.float32)
    geometry = crop_geometry(np.array([[500.0, 0, 112], [0, 500, 112], [0, 0, 1]]), (224, 224), 224, angle_rad=1.1)
    turned = rotate_global_orient(pose, geometry)
    with torch.no_grad():
        before = layer(layer.pose_from_axis_angle(torch.as_tensor(pose[None]).double())).vertices[0].numpy()
        after = layer(layer.pose_from_axis_angle(torch.as_tensor(turned[None]).double())).vertices[0].numpy()
    expected = (before - before.mean(0)) @ geometry.rotation.T
    np.testing.assert_allclose(after - after.mean(0), expected, atol=1e-5)
    np.testing.assert_array_equal(turned[3:], pose[3:])
    angles = (1.1, -2.9, 3.0, 0.0)  # a batch at once, as the dataset turns them: each as alone
    rotations = np.stack([crop_geometry(np.eye(3), (224, 224), 224, angle_rad=angle).rotation for angle in angles])
    poses = np.stack([pose, -pose, pose * 2.5, np.zeros_like(pose)])
    np.testing.assert_allclose(rotate_global_orient(poses, rotations),
                               np.stack([rotate_global_orient(p, r) for p, r in zip(poses, rotations)]), atol=1e-7)


def test_photometric_follows_its_draws_and_keeps_the_format():
    image = (RNG.random((64, 64, 3)) * 255).astype(np.uint8)
    uniforms = np.random.default_rng(3).random((2, NUM_DRAWS))
    draws = draw_augmentation(uniforms, Augmentation(color_jitter=0.4, blur_prob=1.0), 64)
    first = photometric(image, draws, 1)
    assert first.shape == image.shape and first.dtype == np.uint8 and draws.blur_sigma[1] > 0
    np.testing.assert_array_equal(first, photometric(image, draws, 1))  # the draws decide everything
    expected = gaussian_blur(color_jitter(image, draws.colour[1]), draws.blur_sigma[1])
    np.testing.assert_array_equal(first, expected)
    assert np.abs(first.astype(int) - image).mean() > 5
    in_place = image.copy()
    assert photometric(in_place, draws, 1, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, first)
    off = draw_augmentation(uniforms, Augmentation(color_jitter=0.0, blur_prob=0.0), 64)
    out = np.zeros_like(image)
    np.testing.assert_array_equal(photometric(image, off, 0, out=out), image)
    np.testing.assert_array_equal(out, image)


def test_occluder_covers_part_of_the_hand_and_planes_fill_a_batch():
    image = np.full((64, 64, 3), 7, np.uint8)
    keypoints = np.full((21, 2), 32.0)  # every keypoint at the centre
    covered = occlude(image, 0.3, np.random.default_rng(4), keypoints)
    np.testing.assert_array_equal(covered, occlude(image, 0.3, np.random.default_rng(4), keypoints))
    changed = (covered != 7).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert changed.any() and changed.mean() <= (0.3 * 64 + 1) ** 2 / 64**2 and abs(rows.mean() - 32) < 12
    assert not (image != 7).any()  # a copy, unless told to paint in place
    batch = np.zeros((2, 3, 64, 64), np.uint8)
    assert np.shares_memory(to_chw(covered, out=batch[1]), batch)
    np.testing.assert_array_equal(batch[1], covered.transpose(2, 0, 1))
    assert not batch[0].any()
    with pytest.raises(ValueError, match="C-contiguous"):
        to_chw(covered, out=batch[1].transpose(0, 2, 1))


def test_augmented_items_move_image_and_labels_together(tiny_root):
    """End to end: the augmented 2D keypoints are one affine image of the original ones (residual < 0.5 px), that
    affine carries the original picture onto the augmented one, and the hand mask onto the keypoints."""
    geometric = Augmentation(scale=0.25, rotation_deg=180, translate=0.1, color_jitter=0, blur_prob=0, occlusion_prob=0)
    dataset = FreiHANDDataset(tiny_root, "training", input_size=160, val_fraction=0.0, augment=geometric,
                              progress=False)
    K_all = np.asarray(orjson.loads((tiny_root / "training_K.json").read_bytes()))
    xyz_all = np.asarray(orjson.loads((tiny_root / "training_xyz.json").read_bytes()))
    verts_all = np.asarray(orjson.loads((tiny_root / "training_verts.json").read_bytes()))
    torch.manual_seed(0)
    for position in (0, 4, 9):
        item = dataset[position]
        sample = int(item["sample_id"])
        original = project(xyz_all[sample], K_all[sample]).astype(np.float64)  # (21, 2) in the 224 image
        augmented = item["keypoints_2d"].numpy().astype(np.float64)
        np.testing.assert_allclose(project(item["keypoints_3d"].numpy(), item["K"].numpy()), augmented, atol=0.05)
        design = np.hstack([original, np.ones((21, 1))])
        solution, *_ = np.linalg.lstsq(design, augmented, rcond=None)  # (3, 2)
        assert np.abs(design @ solution - augmented).max() < 0.5
        affine = solution.T  # (2, 3)
        source = cv2.cvtColor(cv2.imread(str(tiny_root / "training" / "rgb" / f"{int(item['index']):08d}.jpg")),
                              cv2.COLOR_BGR2RGB)
        expected = cv2.warpAffine(source, affine, (160, 160)).astype(np.float64)
        assert np.abs(item["image"].permute(1, 2, 0).numpy() - expected).mean() < 0.01 * 255
        mask = cv2.imread(str(mask_path(tiny_root, sample)), cv2.IMREAD_GRAYSCALE)
        mask = cv2.dilate(cv2.warpAffine(mask, affine, (160, 160)), np.ones((5, 5), np.uint8)) > 127
        inside = np.round(augmented).astype(int)
        visible = ((inside >= 0) & (inside < 160)).all(axis=1)
        assert mask[inside[visible, 1], inside[visible, 0]].all()
        assert torch.allclose(item["vertices"].norm(dim=1),
                              torch.as_tensor(verts_all[sample], dtype=torch.float32).norm(dim=1),
                              atol=1e-5)  # a rotation about the camera
