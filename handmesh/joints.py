"""Keypoint conventions in one place: MANO's 16 joints, FreiHAND's 21 keypoints and the map between them.

FreiHAND's keypoints come from the posed MANO mesh (its toolbox's definition): 16 joints regressed from the posed
vertices (`J_regressor @ V`) and 5 fingertip vertices, reordered; `handmesh.mano.ManoLayer` computes them.
See docs/data.md (keypoints) and docs/mano.md (the MANO file). Every other module imports these names instead of
repeating numbers.
"""

from __future__ import annotations

NUM_VERTICES = 778  # MANO mesh vertices
NUM_FACES = 1538  # MANO mesh triangles (open at the wrist)
NUM_MANO_JOINTS = 16  # wrist + 5 fingers x 3 joints
NUM_KEYPOINTS = 21  # FreiHAND keypoints: 16 joints + 5 fingertips
NUM_BETAS = 10  # MANO shape coefficients
NUM_POSE_PARAMS = 48  # axis-angle: 3 global + 15 joints x 3

# MANO joint order: 0 wrist; 1-3 index; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb (CMC, MCP, IP).
MANO_JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Fingertip vertex ids of the FreiHAND toolbox, in FreiHAND finger order (thumb, index, middle, ring, pinky).
FINGERTIP_VERTEX_IDS = (744, 320, 443, 555, 672)

# FreiHAND keypoint order: 0 wrist; then per finger (thumb, index, middle, ring, pinky): MCP, PIP, DIP, tip.
KEYPOINT_NAMES = (
    "wrist",
    "thumb_mcp", "thumb_pip", "thumb_dip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)

# FREIHAND_FROM_MANO[k] = index into the 21-row stack [16 joints regressed from the posed mesh, MANO order;
# 5 fingertip vertices (thumb..pinky)] that becomes FreiHAND keypoint k. Rows 16..20 are the fingertips in
# FINGERTIP_VERTEX_IDS order.
FREIHAND_FROM_MANO = (
    0,  # wrist
    13, 14, 15, 16,  # thumb
    1, 2, 3, 17,  # index
    4, 5, 6, 18,  # middle
    10, 11, 12, 19,  # ring
    7, 8, 9, 20,  # pinky
)

ROOT_KEYPOINT = 0  # wrist, in FreiHAND order
MIDDLE_MCP_KEYPOINT = 9  # FreiHAND's reference for `uv_root` / `scale` in *_mano.json

# Bones as (parent, child) pairs in FreiHAND order: 5 chains of 4 from the wrist.
BONES = tuple(
    pair
    for finger in range(5)
    for pair in zip((0, 1 + 4 * finger, 2 + 4 * finger, 3 + 4 * finger), range(1 + 4 * finger, 5 + 4 * finger))
)
FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")
