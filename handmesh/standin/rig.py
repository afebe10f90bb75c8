"""The stand-in hand's rig: joint regressor, skinning weights, shape directions and pose correctives.

Everything follows MANO's conventions (see docs/mano.md): joint j's weights move the bone that starts at
joint j; `J_regressor @ v` gives the 16 joints; `v + shapedirs @ betas`; pose correctives
`posedirs @ ((R_j - I).ravel() for j in 1..15)` added before skinning.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear
from scipy.sparse import csc_matrix

from handmesh.joints import NUM_BETAS, NUM_MANO_JOINTS
from handmesh.standin.anatomy import WRIST, Anatomy
from handmesh.standin.mesh import HandMesh

BLEND = 0.004  # metres: half-width of the weight blend across a PIP, DIP or IP joint
KNUCKLE_BLEND = (-0.008, 0.006)  # metres along the finger from its MCP: the palm hands over to the finger here
THUMB_REACH = (0.013, 0.025)  # metres from the thumb's metacarpal: fully the thumb's, then the palm's
REGRESSOR_RADIUS = {0: 0.024, 13: 0.024}  # metres: vertices averaged for joints inside the palm (default below)
BULGE = 0.003  # metres: palmar bulge of a joint flexed by 90 degrees
BULGE_REACH = 0.008  # metres along the bone from the joint


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def joint_regressor(mesh: HandMesh, joints: np.ndarray) -> csc_matrix:
    """(16, 778) sparse: each joint a non-negative weighted mean of the vertices around it, as close to `joints`
    (16, 3) metres as those vertices allow and as even as possible."""
    rows = np.zeros((NUM_MANO_JOINTS, len(mesh.vertices)))
    for j, target in enumerate(joints):
        if j in mesh.joint_rings:
            ids = mesh.joint_rings[j]
        else:
            distance = np.linalg.norm(mesh.vertices - target, axis=1)
            ids = np.flatnonzero(distance < REGRESSOR_RADIUS.get(j, 0.016))
        even = np.full(len(ids), 1.0 / len(ids))
        # Least squares on [hit the joint (heavily); sum to one (heavily); stay close to even weights].
        a = np.vstack([50.0 * mesh.vertices[ids].T, 50.0 * np.ones((1, len(ids))), 0.02 * np.eye(len(ids))])
        b = np.concatenate([50.0 * target, [50.0], 0.02 * even])
        weights = lsq_linear(a, b, bounds=(0.0, 1.0), method="bvls").x
        rows[j, ids] = weights / weights.sum()
    return csc_matrix(rows)


def skinning_weights(mesh: HandMesh, anatomy: Anatomy) -> np.ndarray:
    """(778, 16) rows summing to one. Digit tubes belong to their own bones, blended over +-BLEND across each
    joint; the palm hands over to the fingers' MCP bones around the knuckles and to the thumb near its metacarpal."""
    weights = np.zeros((len(mesh.vertices), NUM_MANO_JOINTS))
    for k, chain in enumerate(anatomy.digits):
        ids = np.flatnonzero(mesh.digit == k)
        knots = np.cumsum(chain.lengths())
        t = mesh.axial[ids]
        if chain.name == "thumb":  # the tube starts past the MCP: bones 14 (proximal) and 15 (distal)
            distal = _smoothstep((t - knots[1] + BLEND) / (2 * BLEND))
            weights[ids, 14], weights[ids, 15] = 1.0 - distal, distal
        else:
            middle = _smoothstep((t - knots[0] + BLEND) / (2 * BLEND))
            distal = _smoothstep((t - knots[1] + BLEND) / (2 * BLEND))
            base = 1 + 3 * k
            weights[ids, base] = 1.0 - middle
            weights[ids, base + 1] = middle - distal
            weights[ids, base + 2] = distal
    palm = np.flatnonzero(mesh.digit < 0)
    v = mesh.vertices[palm]
    thumb = anatomy.digits[4]
    # Thumb share: near the metacarpal (and the start of the proximal phalanx), fading toward the wrist.
    seg_a, seg_b = thumb.points[0], thumb.points[1] + 0.4 * (thumb.points[2] - thumb.points[1])
    axis = seg_b - seg_a
    s = np.clip((v - seg_a) @ axis / axis.dot(axis), 0.0, 1.0)
    reach = np.linalg.norm(v - (seg_a + s[:, None] * axis), axis=1)
    share = 1.0 - _smoothstep((reach - THUMB_REACH[0]) / (THUMB_REACH[1] - THUMB_REACH[0]))
    share *= _smoothstep(((v - seg_a) @ thumb.directions()[0] + 0.010) / 0.015)
    past_mcp = _smoothstep(((v - thumb.points[1]) @ thumb.directions()[1] + 0.006) / 0.012)
    weights[palm, 13] = share * (1.0 - past_mcp)
    weights[palm, 14] = share * past_mcp
    # Finger shares: how far past its knuckle, split between neighbouring fingers by side.
    order = [0, 1, 3, 2]  # index, middle, ring, pinky: radial to ulnar
    side = np.stack([(v - anatomy.digits[k].points[0]) @ np.cross(anatomy.digits[k].dorsal[0],
                                                                   anatomy.digits[k].directions()[0])
                     for k in order], axis=1)  # (P, 4) metres toward the thumb from each finger's axis
    split = np.zeros_like(side)
    split[:, 0] = side[:, 0] >= 0.0
    split[:, 3] = side[:, 3] <= 0.0
    for i in range(3):
        between = (side[:, i] < 0.0) & (side[:, i + 1] > 0.0)
        lam = _smoothstep(side[between, i + 1] / (side[between, i + 1] - side[between, i]))
        split[between, i] += lam
        split[between, i + 1] += 1.0 - lam
    split /= split.sum(axis=1, keepdims=True)
    for i, k in enumerate(order):
        chain = anatomy.digits[k]
        along = (v - chain.points[0]) @ chain.directions()[0]
        past = _smoothstep((along - KNUCKLE_BLEND[0]) / (KNUCKLE_BLEND[1] - KNUCKLE_BLEND[0]))
        weights[palm, 1 + 3 * k] = (1.0 - share) * split[:, i] * past
    weights[palm, 0] = 1.0 - weights[palm].sum(axis=1)
    return weights


def pose_correctives(mesh: HandMesh, anatomy: Anatomy, joints: np.ndarray) -> np.ndarray:
    """(778, 3, 135) posedirs: each flexed finger joint swells its palmar side by up to BULGE.

    The swelling follows f = (sin a + 1 - cos a) / 2 of the flexion angle a (1 at 90 degrees, 0 straight), which
    is linear in R - I: f = <([n]x + n n^T - I) / 4, R - I> for the flexion axis n.
    """
    posedirs = np.zeros((len(mesh.vertices), 3, 9 * (NUM_MANO_JOINTS - 1)))
    for k, chain in enumerate(anatomy.digits):
        axes, directions = chain.flexion_axes(), chain.directions()
        for bone in range(3):
            j = 1 + 3 * k + bone
            if bone == 0 and chain.name != "thumb":
                continue  # MCP flexion: the palm's skin folds instead; leave it to the skinning
            n = axes[bone]
            cross = np.array([[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]])
            feature = (cross + np.outer(n, n) - np.eye(3)).ravel() / 4.0  # (9,)
            rel = mesh.vertices - joints[j]
            along = rel @ directions[bone]
            radial = rel - np.outer(along, directions[bone])
            palmar = np.cross(n, directions[bone])  # unit, toward the palm side of this bone
            facing = np.clip((radial @ palmar) / (np.linalg.norm(radial, axis=1) + 1e-12), 0.0, 1.0)
            # A bump 5 mm wide along the bone, cut off BULGE_REACH from the joint: flexing moves nothing farther.
            near = np.exp(-0.5 * (along / 0.005) ** 2) * (np.abs(along) < BULGE_REACH)
            near *= np.linalg.norm(radial, axis=1) < 0.02
            own = (mesh.digit == k) | (mesh.digit < 0)
            bulge = BULGE * near * facing * own  # (778,)
            posedirs[:, :, 9 * (j - 1): 9 * j] = (bulge[:, None] * palmar)[:, :, None] * feature[None, None, :]
    return posedirs


# Shape directions: (name, scale per unit beta, which bones, kind). kind: "all" uniform growth; "length" along
# bones; "girth" across bones; "thick" along each bone's dorsal axis; "palm-x", "palm-z" the palm's length/width.
SHAPES = (
    ("size", 0.06, "all", "all"),
    ("finger length vs palm", 0.06, "fingers", "length"),
    ("palm width", 0.07, "palm", "palm-z"),
    ("thickness", 0.10, "everything", "thick"),
    ("finger girth", 0.08, "fingers", "girth"),
    ("thumb length", 0.07, "thumb", "length"),
    ("palm length", 0.05, "palm", "palm-x"),
    ("pinky length", 0.08, "pinky", "length"),
    ("index longer, ring shorter", 0.05, "index-ring", "length"),
    ("thumb girth", 0.08, "thumb", "girth"),
)

def _shape_sign(bones: str, digit: str) -> float:
    """How much a digit's bones take part in a shape direction over the bones `bones`: 1, -1 or 0."""
    if bones == "index-ring":
        return {"index": 1.0, "ring": -1.0}.get(digit, 0.0)
    chosen = bones == "everything" or bones == digit or (bones == "fingers" and digit != "thumb")
    return 1.0 if chosen else 0.0


def _bone_maps(anatomy: Anatomy, bones: str, kind: str, scale: float) -> np.ndarray:
    """(16, 3, 3) linear growth of each joint's bone for one shape direction."""
    maps = np.zeros((NUM_MANO_JOINTS, 3, 3))
    if kind == "all":
        maps[:] = scale * np.eye(3)
        return maps
    if kind in ("palm-x", "palm-z"):
        maps[0] = scale * np.diag([1.0, 0.0, 0.0] if kind == "palm-x" else [0.0, 0.0, 1.0])
        return maps
    if kind == "thick":
        maps[0] = scale * np.diag([0.0, 1.0, 0.0])
    if bones == "fingers" and kind == "length":
        maps[0] = -0.5 * scale * np.diag([1.0, 0.0, 0.0])  # longer fingers on a shorter palm
    for k, chain in enumerate(anatomy.digits):
        sign = _shape_sign(bones, chain.name)
        for bone, (d, up) in enumerate(zip(chain.directions(), chain.dorsal)):
            linear = {"length": np.outer(d, d), "girth": np.eye(3) - np.outer(d, d), "thick": np.outer(up, up)}
            maps[1 + 3 * k + bone] = sign * scale * linear[kind]
    return maps


def shape_directions(mesh: HandMesh, anatomy: Anatomy, weights: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(778, 3, 10) shapedirs: per beta, each bone grows linearly about its joint and carries its children along;
    vertices follow their bones through the skinning weights, so the change is smooth across joints."""
    parents = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    shapedirs = np.zeros((len(mesh.vertices), 3, NUM_BETAS))
    for b, (_, scale, bones, kind) in enumerate(SHAPES):
        maps = _bone_maps(anatomy, bones, kind, scale)
        moves = np.zeros((NUM_MANO_JOINTS, 3))  # (16, 3) displacement of each joint
        if kind == "all":
            moves = (joints - WRIST) @ maps[0].T
        else:
            for j in range(1, NUM_MANO_JOINTS):
                p = parents[j]
                moves[j] = moves[p] + maps[p] @ (joints[j] - joints[p])
        per_bone = moves[None] + np.einsum("jab,vjb->vja", maps, mesh.vertices[:, None] - joints[None])
        shapedirs[:, :, b] = np.einsum("vj,vja->va", weights, per_bone)
    return shapedirs
