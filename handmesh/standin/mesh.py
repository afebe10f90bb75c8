"""The stand-in hand's triangle mesh: 778 vertices, 1538 faces, open at the wrist, in MANO's vertex budget.

Digits are tubes of 8-vertex rings along their bones (a ring on every finger joint distal to the web), closed by
a rounded cap whose pole is the fingertip vertex. The palm is everything else (see palm.py): a disc with five
holes (the digits' first rings) and an open 16-vertex wrist ring. Every vertex lies on `Anatomy.field`'s zero
set; the palm gets whatever vertices the tubes leave of MANO's 778.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handmesh.joints import FINGERTIP_VERTEX_IDS, NUM_FACES, NUM_VERTICES
from handmesh.standin.anatomy import FINGERS, Anatomy, Chain
from handmesh.standin.palm import WRIST_RING, palm_patch, wrist_ring

RING = 8  # vertices around a digit
SPACING = 0.0068  # metres: largest gap between a digit's rings
CAP_ANGLES = np.radians([58.0, 28.0])  # polar angles of the cap rings, from the digit's axis
TUBE_START = {"index": 0.5, "middle": 0.5, "pinky": 0.5, "ring": 0.5, "thumb": 0.35}  # first ring, along bone 1
# Tip vertex id of each digit in FINGERS order (index, middle, pinky, ring, thumb).
TIP_IDS = dict(zip(("thumb", "index", "middle", "ring", "pinky"), FINGERTIP_VERTEX_IDS))


@dataclass(frozen=True)
class HandMesh:
    """The rest mesh and what the rig needs to know about each vertex."""

    vertices: np.ndarray  # (778, 3) float64 metres
    faces: np.ndarray  # (1538, 3) int64, outward winding
    digit: np.ndarray  # (778,) int64: index into FINGERS for digit-tube vertices, -1 for the palm
    axial: np.ndarray  # (778,) float64 metres along the digit's bones from its base joint (tube vertices; else 0)
    wrist_ring: np.ndarray  # (16,) vertex ids of the open boundary, in order


@dataclass
class _Tube:
    vertices: np.ndarray  # (n, 3)
    faces: np.ndarray  # (m, 3) local ids
    axial: np.ndarray  # (n,)
    tip: int  # local id of the pole
    axis: np.ndarray  # (M, 3) the axis polyline from the first ring's centre to the tip's centre
    radius: float  # metres: the first ring's largest distance from the axis


def _point_on_chain(chain: Chain, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis point, direction and dorsal unit vector at arc length t along the chain's bones."""
    lengths = chain.lengths()
    directions = chain.directions()
    knots = np.concatenate([[0.0], np.cumsum(lengths)])
    bone = int(np.clip(np.searchsorted(knots, t, side="right") - 1, 0, 2))
    point = chain.points[bone] + (t - knots[bone]) * directions[bone]
    direction, dorsal = directions[bone], chain.dorsal[bone]
    if bone > 0 and abs(t - knots[bone]) < 1e-9:  # on a joint: halfway between the two bones' frames
        direction = directions[bone - 1] + directions[bone]
        dorsal = chain.dorsal[bone - 1] + chain.dorsal[bone]
    direction = direction / np.linalg.norm(direction)
    dorsal = dorsal - dorsal.dot(direction) * direction
    return point, direction, dorsal / np.linalg.norm(dorsal)


def _tube(anatomy: Anatomy, chain: Chain) -> _Tube:
    """Rings from the web to the tip centre (one on every joint past the web), then the cap."""
    lengths = chain.lengths()
    knots = np.concatenate([[0.0], np.cumsum(lengths)])
    tip_centre = knots[3] - chain.radii[3]
    bone = 1 if chain.name == "thumb" else 0  # the bone the web lies on: the thumb's is past its metacarpal
    start = knots[bone] + lengths[bone] * TUBE_START[chain.name]
    stops = [start] + [k for k in knots[1:3] if k > start] + [tip_centre]
    ts = [start]
    for a, b in zip(stops[:-1], stops[1:]):
        pieces = int(np.ceil((b - a) / SPACING - 1e-9))
        ts.extend(a + (b - a) * np.arange(1, pieces + 1) / pieces)
    angles = 2.0 * np.pi * np.arange(RING) / RING
    origins, rays, axial = [], [], []
    for t in ts:
        point, direction, dorsal = _point_on_chain(chain, t)
        lateral = np.cross(dorsal, direction)
        ring = np.outer(np.cos(angles), lateral) + np.outer(np.sin(angles), dorsal)
        origins.append(np.repeat(point[None], RING, 0))
        rays.append(ring)
        axial.append(np.full(RING, t))
    centre, direction, dorsal = _point_on_chain(chain, tip_centre)
    lateral = np.cross(dorsal, direction)
    for polar in CAP_ANGLES:
        ring = np.outer(np.cos(angles), lateral) + np.outer(np.sin(angles), dorsal)
        origins.append(np.repeat(centre[None], RING, 0))
        rays.append(np.cos(polar) * direction + np.sin(polar) * ring)
        axial.append(tip_centre + chain.radii[3] * np.full(RING, np.cos(polar)))
    origins.append(centre[None])
    rays.append(direction[None])
    axial.append(np.array([knots[3]]))
    origins, rays = np.concatenate(origins), np.concatenate(rays)
    vertices = anatomy.cast(origins, rays, max_length=3.0 * chain.radii[0])
    rings = len(ts) + len(CAP_ANGLES)
    faces = []
    for r in range(rings - 1):
        for k in range(RING):
            a, b = r * RING + k, r * RING + (k + 1) % RING
            faces += [(a, b, b + RING), (a, b + RING, a + RING)]
    pole = rings * RING
    for k in range(RING):
        faces.append(((rings - 1) * RING + k, (rings - 1) * RING + (k + 1) % RING, pole))
    axis = np.array([_point_on_chain(chain, t)[0] for t in stops])
    radius = float(np.max(np.linalg.norm(vertices[:RING] - axis[0], axis=1)))
    return _Tube(vertices, np.array(faces), np.concatenate(axial), pole, axis, radius)


def build_mesh(anatomy: Anatomy | None = None) -> HandMesh:
    """The rest mesh with MANO's vertex and face counts; the fingertip poles sit at FINGERTIP_VERTEX_IDS."""
    anatomy = anatomy or Anatomy.default()
    tubes = [_tube(anatomy, chain) for chain in anatomy.digits]
    wrist = wrist_ring(anatomy)
    holes = [tube.vertices[:RING] for tube in tubes]
    tube_total = sum(len(tube.vertices) for tube in tubes)
    palm_count = NUM_VERTICES - WRIST_RING - tube_total
    palm_points, palm_faces = palm_patch(anatomy, wrist, holes, [(t.axis, t.radius) for t in tubes], palm_count)
    # Working order: wrist ring, palm interior, then each tube (its first ring is a palm hole).
    tube_offsets = np.cumsum([WRIST_RING + palm_count] + [len(t.vertices) for t in tubes])[:-1]
    to_work = np.concatenate([np.arange(WRIST_RING)]
                             + [tube_offsets[k] + np.arange(RING) for k in range(len(tubes))]
                             + [WRIST_RING + np.arange(palm_count)])
    vertices = np.concatenate([wrist, palm_points] + [t.vertices for t in tubes])
    faces = [to_work[palm_faces]] + [t.faces + off for t, off in zip(tubes, tube_offsets)]
    faces = np.concatenate(faces)
    digit = np.concatenate([np.full(WRIST_RING + palm_count, -1)]
                           + [np.full(len(t.vertices), k) for k, t in enumerate(tubes)])
    axial = np.concatenate([np.zeros(WRIST_RING + palm_count)] + [t.axial for t in tubes])
    if len(vertices) != NUM_VERTICES or len(faces) != NUM_FACES:
        raise RuntimeError(f"stand-in mesh has {len(vertices)} vertices and {len(faces)} faces; "
                           f"expected {NUM_VERTICES} and {NUM_FACES}")
    # Final order: the working order, with each tip pole moved to its MANO fingertip id.
    tips = {tube_offsets[k] + t.tip: TIP_IDS[FINGERS[k]] for k, t in enumerate(tubes)}
    rest = iter([i for i in range(NUM_VERTICES) if i not in tips])
    slot_of_tip = {slot: work for work, slot in tips.items()}
    order = np.array([slot_of_tip[s] if s in slot_of_tip else next(rest) for s in range(NUM_VERTICES)])
    new_id = np.empty(NUM_VERTICES, dtype=np.int64)
    new_id[order] = np.arange(NUM_VERTICES)
    return HandMesh(vertices[order], new_id[faces], digit[order], axial[order], new_id[np.arange(WRIST_RING)])
