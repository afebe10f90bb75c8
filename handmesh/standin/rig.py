"""The stand-in hand's rig: joint regressor, skinning weights, shape directions and pose correctives.

Everything follows MANO's conventions (see docs/mano.md): joint j's weights move the bone that starts at
joint j; `J_regressor @ v` gives the 16 joints; `v + shapedirs @ betas`; pose correctives
`posedirs @ ((R_j - I).ravel() for j in 1..15)` added before skinning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear
from scipy.sparse import csc_matrix

from handmesh.joints import NUM_BETAS, NUM_MANO_JOINTS
from handmesh.standin.anatomy import FINGERS, WRIST, Anatomy
from handmesh.standin.mesh import HandMesh

BLEND = 0.004  # metres: half-width of the weight blend across a PIP, DIP or IP joint
KNUCKLE_BLEND = (-0.008, 0.006)  # metres along the finger from its MCP: the palm hands over to the finger here
THUMB_REACH = (0.013, 0.025)  # metres from the thumb's metacarpal: fully the thumb's, then the palm's
# Joint regressor: each joint averages the skin around it with Gaussian weights of this width (metres), out to
# REGRESSOR_CUT widths; the palm's joints (wrist, MCPs, thumb base) average wider patches.
REGRESSOR_SIGMA = {0: 0.014, 13: 0.012, 14: 0.011}
DEFAULT_REGRESSOR_SIGMA = 0.010
REGRESSOR_CUT = 3.0


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def joint_regressor(mesh: HandMesh, joints: np.ndarray) -> csc_matrix:
    """(16, 778) sparse: each joint a non-negative weighted mean of the skin around it, at `joints` (16, 3)
    metres in the rest pose (to a fraction of a millimetre).

    Like MANO's, a row spreads over every vertex within a few centimetres of its joint (its own digit and the
    palm; never a neighbouring digit): the weights stay as close as they can to a Gaussian of the distance from
    the joint. Under skinning that patch deforms, so the regressed joint leaves the bone's pivot when it bends.
    """
    rows = np.zeros((NUM_MANO_JOINTS, len(mesh.vertices)))
    for j, target in enumerate(joints):
        sigma = REGRESSOR_SIGMA.get(j, DEFAULT_REGRESSOR_SIGMA)
        digit = -1 if j == 0 else (j - 1) // 3  # index into FINGERS; the wrist belongs to the palm
        distance = np.linalg.norm(mesh.vertices - target, axis=1)
        ids = np.flatnonzero((distance < REGRESSOR_CUT * sigma) & ((mesh.digit == digit) | (mesh.digit < 0)))
        prior = np.exp(-0.5 * (distance[ids] / sigma) ** 2)
        prior /= prior.sum()
        # Least squares on [hit the joint (heavily); sum to one (heavily); stay close to the Gaussian prior],
        # the prior's residuals relative to its own size so that small far weights stay non-zero.
        scale = 1.0 / (prior + 0.1 * prior.max())
        a = np.vstack([50.0 * mesh.vertices[ids].T, 50.0 * np.ones((1, len(ids))), 0.02 * np.diag(scale)])
        b = np.concatenate([50.0 * target, [50.0], 0.02 * scale * prior])
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


@dataclass(frozen=True)
class Corrective:
    """The skin's change around one flexed joint, at 90 degrees of flexion (metres, widths along the bone)."""

    bulge: float  # palmar flesh pushed out on either side of the crease, `bulge_at` from the joint
    bulge_at: float
    bulge_width: float
    crease: float  # palmar skin drawn in at the joint line
    crease_width: float
    knuckle: float  # the dorsal side pushed out over the joint (the bone's head shows)
    knuckle_width: float
    slide: float  # dorsal skin drawn toward the joint (it stretches over the knuckle)
    slide_width: float
    reach: float  # metres from the bone's axis: nothing farther moves


CORRECTIVES = {
    "mcp": Corrective(0.0025, 0.020, 0.010, 0.0025, 0.005, 0.0050, 0.014, 0.0050, 0.028, 0.028),
    "pip": Corrective(0.0018, 0.011, 0.006, 0.0015, 0.003, 0.0035, 0.008, 0.0045, 0.018, 0.020),
    "thumb-base": Corrective(0.0035, 0.025, 0.016, 0.0, 0.004, 0.0050, 0.016, 0.0050, 0.028, 0.045),
}
SPREAD_BULGE = 0.005  # metres: flesh pushed out on the side a knuckle spreads toward, at 90 degrees of spread
# MANO's tree has no metacarpal joints, but a fist flexes the ring's and pinky's metacarpals: the knuckle sinks
# toward the palm by this much (metres) when the finger's MCP flexes 90 degrees, the palm cupping behind it.
CUPPING = {"index": 0.002, "middle": 0.003, "ring": 0.004, "pinky": 0.005}
CUPPING_WIDTH = 0.014  # metres across the palm from the metacarpal's line
# A finger's proximal phalanx glides around the metacarpal head: its base turns about a point GLIDE metres
# proximal of the kinematic MCP, fading to the plain rotation at the PIP.
GLIDE = 0.007


def _corrective_kind(chain_name: str, bone: int) -> str:
    if chain_name == "thumb":
        return "thumb-base" if bone == 0 else "pip"
    return "mcp" if bone == 0 else "pip"


def _cupping(mesh: HandMesh, chain, k: int) -> np.ndarray:
    """(778, 3) metres: the finger (digit k) and the palm along its metacarpal sink palmar, from nothing at the
    wrist to CUPPING at the knuckle and beyond."""
    knuckle = chain.points[0]
    line = knuckle - WRIST
    s = np.clip((mesh.vertices - WRIST) @ line / line.dot(line), 0.0, 1.0)  # (778,) 0 at the wrist, 1 at the knuckle
    across = np.linalg.norm(mesh.vertices - (WRIST + s[:, None] * line), axis=1)
    share = np.where(mesh.digit < 0, np.exp(-0.5 * (across / CUPPING_WIDTH) ** 2), 0.0)
    return (CUPPING[chain.name] * _smoothstep(s) * share)[:, None] * -chain.dorsal[0]


def _flexion_feature(n: np.ndarray) -> np.ndarray:
    """(9,) F with <F, R - I> = (sin a + 1 - cos a) / 2 for R a rotation by a about the unit axis n."""
    cross = np.array([[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]])
    return (cross + np.outer(n, n) - np.eye(3)).ravel() / 4.0


def _glide(mesh: HandMesh, chain, weights: np.ndarray) -> np.ndarray:
    """(778, 3, 9) posedirs block of a finger's MCP: vertex v moves by (R^T - I) w(v) in the rest frame, which
    skinning by R turns into (I - R) w(v): the turn about the joint becomes one about the point w(v) = -GLIDE d
    behind it, for the proximal phalanx's base (its skinning weight), fading out toward the PIP."""
    d, length = chain.directions()[0], chain.lengths()[0]
    taper = 1.0 - _smoothstep((mesh.vertices - chain.points[0]) @ d / length)  # (778,) 1 up to the MCP, 0 at the PIP
    lever = -GLIDE * (weights @ np.eye(NUM_MANO_JOINTS)[1 + 3 * FINGERS.index(chain.name)] * taper)[:, None] * d
    block = np.zeros((len(mesh.vertices), 3, 9))
    for k in range(3):  # offset_i = sum_k (R - I)_ki lever_k: feature (R - I)_ki is column 3k + i
        for i in range(3):
            block[:, i, 3 * k + i] = lever[:, k]
    return block


def pose_correctives(mesh: HandMesh, anatomy: Anatomy, joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(778, 3, 135) posedirs: flexing a joint bulges the palmar flesh on either side of a crease at the joint,
    pushes the dorsal side out over it and draws the dorsal skin toward it (CORRECTIVES, sized at 90 degrees).

    The change follows f = (sin a + 1 - cos a) / 2 of the flexion angle a (1 at 90 degrees, 0 straight), which
    is linear in R - I: f = <([n]x + n n^T - I) / 4, R - I> for the flexion axis n.
    """
    posedirs = np.zeros((len(mesh.vertices), 3, 9 * (NUM_MANO_JOINTS - 1)))
    for k, chain in enumerate(anatomy.digits):
        axes, directions = chain.flexion_axes(), chain.directions()
        for bone in range(3):
            j = 1 + 3 * k + bone
            c = CORRECTIVES[_corrective_kind(chain.name, bone)]
            n, d = axes[bone], directions[bone]
            feature = _flexion_feature(n)  # (9,)
            rel = mesh.vertices - joints[j]  # (778, 3)
            along = rel @ d  # (778,) metres past the joint along the bone
            radial = rel - np.outer(along, d)
            distance = np.linalg.norm(radial, axis=1) + 1e-12
            outward = radial / distance[:, None]  # (778, 3) unit, away from the bone's axis
            palmar = np.cross(n, d)  # unit, toward the palm side of this bone
            facing = outward @ palmar  # (778,) 1 on the palmar midline, -1 on the dorsal one
            # A finger's PIP and DIP change only that finger; the knuckles and the thumb reach into the palm too.
            inner = bone > 0 and chain.name != "thumb"
            own = ((mesh.digit == k) | (~inner & (mesh.digit < 0))) & (distance < c.reach)
            gauss = lambda x, w: np.exp(-0.5 * (x / w) ** 2)  # noqa: E731
            palm_side = np.clip(facing, 0.0, 1.0) ** 2
            back_side = np.clip(-facing, 0.0, 1.0) ** 2
            swell = (c.bulge * gauss(np.abs(along) - c.bulge_at, c.bulge_width)
                     - c.crease * gauss(along, c.crease_width)) * palm_side
            knuckle = c.knuckle * gauss(along, c.knuckle_width) * back_side
            slide = -c.slide * np.tanh(along / c.slide_width) * gauss(along, 1.5 * c.slide_width) * back_side
            move = (swell + knuckle)[:, None] * outward + slide[:, None] * d  # (778, 3) metres at 90 degrees
            fade = own * gauss(np.maximum(distance - 0.5 * c.reach, 0.0), 0.25 * c.reach)  # (778,)
            block = (move * fade[:, None])[:, :, None] * feature[None, None, :]  # (778, 3, 9)
            if bone == 0:  # the knuckle also spreads (about its dorsal axis): the side it turns toward swells
                u = chain.dorsal[0]
                side = np.clip(outward @ np.cross(u, d), 0.0, 1.0) ** 2
                spread = SPREAD_BULGE * gauss(along, c.knuckle_width) * side * fade
                block += (spread[:, None] * outward)[:, :, None] * _flexion_feature(u)[None, None, :]
            if bone == 0 and chain.name in CUPPING:
                block += _cupping(mesh, chain, k)[:, :, None] * feature[None, None, :] + _glide(mesh, chain, weights)
            posedirs[:, :, 9 * (j - 1): 9 * j] = block
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
