"""The palm patch of the stand-in mesh: everything but the digit tubes, a disc with five holes and the open wrist.

Its vertices are the first exits of rays cast from a point inside the palm. They are spread by farthest-point
sampling, triangulated in a stereographic image of the ray directions (where the wrist ring and the digits' first
rings are simple loops), then evened out on the surface: edge flips toward a Delaunay mesh and Laplacian steps
that re-cast each vertex onto the skin.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay

from handmesh.standin.anatomy import WRIST, Anatomy

WRIST_RING = 16  # vertices of the open wrist boundary (MANO's wrist hole has 16 edges)
WRIST_CUT = 0.008  # metres proximal to the wrist joint where the mesh ends
PALM_CENTRE = WRIST + np.array([-0.046, -0.003, 0.003])  # (3,) rays of the palm start here
DIRECTIONS = 10000  # candidate ray directions over the whole sphere
RELAX_STEPS = 12  # rounds of edge flips and Laplacian steps
TUBE_SHADOW = 1.6  # skin within this many tube radii of a digit's axis, past its first ring, belongs to the tube


def wrist_ring(anatomy: Anatomy) -> np.ndarray:
    """(16, 3) the open boundary: rays in the cut plane from the wrist's axis."""
    centre = WRIST + np.array([WRIST_CUT, 0.0, 0.0])
    angles = 2.0 * np.pi * np.arange(WRIST_RING) / WRIST_RING
    rays = np.stack([np.zeros(WRIST_RING), np.sin(angles), np.cos(angles)], axis=1)
    return anatomy.cast(np.repeat(centre[None], WRIST_RING, 0), rays, max_length=0.06)


def _pole() -> np.ndarray:
    pole = WRIST + np.array([WRIST_CUT, 0.0, 0.0]) - PALM_CENTRE
    return pole / np.linalg.norm(pole)


def _stereographic(points: np.ndarray) -> np.ndarray:
    """(N, 2) stereographic image, from the wrist's direction, of the directions from PALM_CENTRE to points."""
    pole = _pole()
    e1 = np.cross(pole, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(pole, e1)
    q = points - PALM_CENTRE
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.stack([q @ e1, q @ e2], axis=1) / (1.0 - q @ pole)[:, None]


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: even-odd test of points (N, 2) against a closed polygon (M, 2)."""
    x, y = points[:, 0:1], points[:, 1:2]
    ax, ay = polygon[:, 0], polygon[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    crosses = ((ay > y) != (by > y)) & (x < (bx - ax) * (y - ay) / (by - ay + 1e-300) + ax)
    return crosses.sum(axis=1) % 2 == 1


def _fibonacci_sphere(count: int) -> np.ndarray:
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    phi = np.pi * (1.0 + 5.0 ** 0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _farthest_points(candidates: np.ndarray, fixed: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` candidates (N, 3) chosen greedily farthest from `fixed` (M, 3) and each other."""
    gap = np.min(np.linalg.norm(candidates[:, None] - fixed[None], axis=2), axis=1)
    chosen = []
    for _ in range(count):
        best = int(np.argmax(gap))
        chosen.append(best)
        gap = np.minimum(gap, np.linalg.norm(candidates - candidates[best], axis=1))
    return np.array(chosen)


def _on_tubes(points: np.ndarray, axes: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """(N,) bool: points lying on a digit tube past its first ring. axes: per digit, its axis polyline (M, 3)
    from the first ring's centre to the tip, and its radius (m)."""
    hidden = np.zeros(len(points), dtype=bool)
    for polyline, radius in axes:
        start, first = polyline[0], polyline[1] - polyline[0]
        past = (points - start) @ first > 0.0
        distance = np.full(len(points), np.inf)
        for a, b in zip(polyline[:-1], polyline[1:]):
            s = np.clip((points - a) @ (b - a) / (b - a).dot(b - a), 0.0, 1.0)
            distance = np.minimum(distance, np.linalg.norm(points - (a + s[:, None] * (b - a)), axis=1))
        hidden |= past & (distance < TUBE_SHADOW * radius)
    return hidden


def _interior_edges(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges shared by two triangles: (E, 2) vertex pairs (a, b) ordered as in the first triangle, and the two
    triangles (E,) holding a->b and b->a."""
    count = len(triangles)
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])  # (3T, 2)
    owner = np.tile(np.arange(count), 3)
    key = {(int(a), int(b)): int(t) for (a, b), t in zip(directed, owner)}
    pairs, first, second = [], [], []
    for (a, b), t in key.items():
        if a < b and (b, a) in key:
            pairs.append((a, b))
            first.append(t)
            second.append(key[(b, a)])
    return np.array(pairs).reshape(-1, 2), np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)


def _opposite(triangles: np.ndarray, owners: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(E,) the vertex of each owner triangle that is not on its edge."""
    tri = triangles[owners]
    return tri[~((tri == pairs[:, :1]) | (tri == pairs[:, 1:]))]


def _angle(apex: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    u, v = p - apex, q - apex
    cosine = np.einsum("ij,ij->i", u, v) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.arccos(np.clip(cosine, -1.0, 1.0))


def _flip_toward_delaunay(points: np.ndarray, triangles: np.ndarray, rounds: int = 30) -> None:
    """Flip, in place, interior edges whose opposite angles sum past 180 degrees (in 3D), keeping the winding and
    never folding a non-convex quad or doubling an edge."""
    for _ in range(rounds):
        pairs, t1, t2 = _interior_edges(triangles)
        c, d = _opposite(triangles, t1, pairs), _opposite(triangles, t2, pairs)
        a, b = pairs[:, 0], pairs[:, 1]
        # t1 holds the directed edge a->b or b->a; orient so that (a, b, c) is t1's winding.
        forward = np.array([list(triangles[t]).index(int(x)) for t, x in zip(t1, a)])
        forward = triangles[t1, (forward + 1) % 3] == b
        a, b = np.where(forward, a, b), np.where(forward, b, a)
        c, d = np.where(forward, c, d), np.where(forward, d, c)
        t1, t2 = np.where(forward, t1, t2), np.where(forward, t2, t1)
        excess = _angle(points[c], points[a], points[b]) + _angle(points[d], points[a], points[b]) - np.pi
        existing = set(map(tuple, np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]],
                                                          triangles[:, [2, 0]]]), axis=1).tolist()))
        touched: set[int] = set()
        flips = 0
        for e in np.argsort(-excess):
            if excess[e] <= 1e-9:
                break
            new_edge = (min(c[e], d[e]), max(c[e], d[e]))
            if t1[e] in touched or t2[e] in touched or new_edge in existing:
                continue
            new1, new2 = (a[e], d[e], c[e]), (d[e], b[e], c[e])  # the quad's boundary runs a, d, b, c
            old = _normal(points, triangles[t1[e]]) + _normal(points, triangles[t2[e]])
            if min(_normal(points, new1) @ old, _normal(points, new2) @ old) <= 0.0:
                continue  # not convex: flipping would fold the quad
            triangles[t1[e]], triangles[t2[e]] = new1, new2
            touched.update((t1[e], t2[e]))
            existing.add(new_edge)
            flips += 1
        if flips == 0:
            return


def _normal(points: np.ndarray, triangle) -> np.ndarray:
    p, q, r = points[list(triangle)]
    return np.cross(q - p, r - p)


def _project(anatomy: Anatomy, points: np.ndarray, steps: int = 4) -> np.ndarray:
    """(N, 3) points moved onto the skin along the field's gradient (Newton steps on the implicit value)."""
    h = 1e-5
    for _ in range(steps):
        value = anatomy.field(points)
        gradient = np.stack([(anatomy.field(points + h * e) - value) / h for e in np.eye(3)], axis=1)
        points = points - (value / np.einsum("ij,ij->i", gradient, gradient))[:, None] * gradient
    return points


def _relax(anatomy: Anatomy, points: np.ndarray, triangles: np.ndarray, movable: np.ndarray,
           axes: list[tuple[np.ndarray, float]]) -> None:
    """Even out the patch in place: flips, then half Laplacian steps projected back onto the skin."""
    ids = np.flatnonzero(movable)
    for _ in range(RELAX_STEPS):
        _flip_toward_delaunay(points, triangles)
        neighbours = np.zeros((len(points), 3))
        counts = np.zeros(len(points))
        for i in range(3):
            np.add.at(neighbours, triangles[:, i], points[triangles[:, (i + 1) % 3]])
            np.add.at(counts, triangles[:, i], 1.0)
        target = 0.5 * points[ids] + 0.5 * neighbours[ids] / counts[ids, None]
        moved = _project(anatomy, target)
        keep = ~_on_tubes(moved, axes) & (moved[:, 0] < WRIST[0] + WRIST_CUT - 0.002)
        points[ids[keep]] = moved[keep]
    _flip_toward_delaunay(points, triangles)


def palm_patch(anatomy: Anatomy, wrist: np.ndarray, holes: list[np.ndarray], axes: list[tuple[np.ndarray, float]],
               count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` palm vertices (count, 3) and the patch's outward faces over [wrist, *holes, palm vertices].

    wrist: (16, 3) open boundary; holes: each digit's first ring (8, 3); axes: see `_on_tubes`.
    """
    loops = [_stereographic(wrist)] + [_stereographic(h) for h in holes]
    directions = _fibonacci_sphere(DIRECTIONS)
    flat = _stereographic(PALM_CENTRE + directions)
    keep = _inside(flat, loops[0])
    for loop in loops[1:]:
        keep &= ~_inside(flat, loop)
    candidates = anatomy.cast(np.repeat(PALM_CENTRE[None], keep.sum(), 0), directions[keep], max_length=0.15)
    boundary = np.concatenate([wrist] + holes)
    # Keep candidates off the boundary and off the tubes so that every boundary edge survives the triangulation.
    near = np.min(np.linalg.norm(candidates[:, None] - boundary[None], axis=2), axis=1)
    candidates = candidates[(near > 0.003) & ~_on_tubes(candidates, axes)]
    chosen = candidates[_farthest_points(candidates, boundary, count)]
    points = np.concatenate([boundary, chosen])
    flat = _stereographic(points)
    # Shrink each hole about its centre in the plane: only the topology comes from this picture, and narrower
    # holes keep neighbouring rings' edges from crowding each other out of the Delaunay triangulation.
    starts = np.cumsum([len(wrist)] + [len(h) for h in holes])
    for start, hole in zip(starts[:-1], holes):
        ids = slice(start, start + len(hole))
        flat[ids] = flat[ids].mean(0) + 0.8 * (flat[ids] - flat[ids].mean(0))
    triangles = Delaunay(flat).simplices
    centroids = flat[triangles].mean(axis=1)
    keep = _inside(centroids, flat[: len(wrist)])
    for start, hole in zip(starts[:-1], holes):
        keep &= ~_inside(centroids, flat[start: start + len(hole)])
    triangles = triangles[keep]
    # Orient outward: the ray direction from the palm centre and the face normal must agree.
    a, b, c = (points[triangles[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    if np.sum(np.einsum("ij,ij->i", normals, (a + b + c) / 3.0 - PALM_CENTRE)) < 0:
        triangles = triangles[:, ::-1]
    triangles = np.ascontiguousarray(triangles)
    movable = np.arange(len(points)) >= len(boundary)
    _relax(anatomy, points, triangles, movable, axes)
    return points[len(boundary):], triangles
