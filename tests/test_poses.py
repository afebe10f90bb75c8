"""Named poses read as what they are named on any MANO-format hand: the stand-in and a perturbed model (rest fingers
splayed, rest thumb turned, another hands_mean), so they cannot be tuned to one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handmesh.mano import ManoLayer
from handmesh.poses import POSE_NAMES, named_pose

from mano_numpy import write_perturbed

TIPS = (4, 8, 12, 16, 20)  # FreiHAND keypoints: thumb, index, middle, ring, pinky tips


@pytest.fixture(scope="module", params=["standin", "perturbed"])
def layer(request, standin_dir, tmp_path_factory) -> ManoLayer:
    directory = standin_dir if request.param == "standin" else write_perturbed(
        standin_dir, tmp_path_factory.mktemp("perturbed_mano"), seed=3)
    layer = ManoLayer.from_dir(directory, "right")
    layer.posed = {}  # name -> (21, 3) keypoints, each pose solved once per model
    return layer


def _keypoints(layer: ManoLayer, name: str) -> np.ndarray:
    if name not in layer.posed:
        with torch.inference_mode():  # as callers render: the thumb's solve still differentiates
            layer.posed[name] = layer(named_pose(layer, name)).keypoints[0].double().numpy()  # (21, 3) model frame
    return layer.posed[name]


def _hand_frame(layer: ManoLayer) -> dict:
    """From the flat hand's keypoints: palm centre, unit finger direction, width direction (pinky -> index MCP) and the
    palm normal (right hand: width x fingers), hand length (wrist -> middle tip) and width (pinky -> index MCP)."""
    flat = _keypoints(layer, "flat")
    fingers = flat[9] - flat[0]
    fingers /= np.linalg.norm(fingers)
    width = flat[5] - flat[17]
    normal = np.cross(width, fingers)
    normal /= np.linalg.norm(normal)
    return {"palm": flat[[0, 5, 9, 13, 17]].mean(0), "fingers": fingers, "normal": normal, "flat": flat,
            "length": np.linalg.norm(flat[12] - flat[0]), "width": np.linalg.norm(width)}


def test_pinch_brings_thumb_and_index_tips_together(layer):
    frame = _hand_frame(layer)
    keypoints = _keypoints(layer, "pinch")
    assert np.linalg.norm(keypoints[4] - keypoints[8]) < 0.015
    # the other fingers stay open: their tips are still far from the palm
    assert np.all(np.linalg.norm(keypoints[[12, 16, 20]] - frame["palm"], axis=1) > 0.4 * frame["length"])


@pytest.mark.parametrize("name", ["fist", "point"])
def test_fist_curls_the_fingers_and_folds_the_thumb_over_them(layer, name):
    frame = _hand_frame(layer)
    keypoints = _keypoints(layer, name)
    curled = [12, 16, 20] if name == "point" else [8, 12, 16, 20]
    offsets = keypoints[curled] - frame["palm"]
    assert np.all(np.linalg.norm(offsets, axis=1) < 0.3 * frame["length"])  # every curled fingertip near the palm
    assert np.all(offsets @ frame["normal"] > 0)  # curled toward the palm side
    if name == "point":
        assert np.linalg.norm(keypoints[8] - frame["palm"]) > 0.4 * frame["length"]  # the index stays out
    thumb = keypoints[4] - frame["palm"]
    assert thumb @ frame["normal"] > 0.1 * frame["length"]  # palmar side, in front of the palm
    across = (keypoints[4] - frame["flat"][17]) @ (frame["flat"][5] - frame["flat"][17]) / frame["width"] ** 2
    assert 0.0 < across < 1.0  # within the hand's width (pinky to index MCP), not beside the hand
    assert np.linalg.norm(thumb) < 0.45 * frame["length"]


def test_named_poses_are_deterministic_rotations(layer):
    for name in POSE_NAMES:
        pose = named_pose(layer, name)
        assert pose.shape == (1, 16, 3, 3) and pose.dtype == torch.float32
        torch.testing.assert_close(pose @ pose.transpose(-1, -2), torch.eye(3).expand(1, 16, 3, 3), atol=1e-5, rtol=0)
        if name in layer.posed:  # solved again: the same hand
            np.testing.assert_array_equal(layer(pose).keypoints[0].detach().double().numpy(), layer.posed[name])
    torch.testing.assert_close(named_pose(layer, "flat"), torch.eye(3).expand(1, 16, 3, 3))
