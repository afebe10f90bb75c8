"""The stand-in right hand's skeleton and skin as numbers: joint positions, bone frames and an implicit surface.

Frame (MANO's): metres; the flat right hand's fingers point along -x from the wrist, the palm faces -y, the thumb
lies toward +z. The surface is the zero set of `Anatomy.field`: negative inside, positive outside, built from
smooth unions of round cones (fingers, thumb), a swept superellipse (palm and wrist) and two pads (thenar,
hypothenar). Only its zero crossings are used, so it need not be an exact distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WRIST = np.array([0.0957, 0.0064, 0.0062])  # (3,) metres: MANO's rest wrist joint, roughly
FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # MANO's joint order: finger k owns joints 1+3k..3+3k

# Four long fingers, relative to WRIST: MCP offset (m), splay toward +z (deg), segment lengths MCP-PIP, PIP-DIP,
# DIP-skin tip (m), half-widths at MCP, PIP, DIP and the tip (m).
_LONG = {
    "index": ((-0.088, -0.002, 0.0265), 8.0, (0.040, 0.024, 0.022), (0.0090, 0.0083, 0.0077, 0.0071)),
    "middle": ((-0.092, 0.0, 0.0050), 1.0, (0.044, 0.027, 0.023), (0.0092, 0.0086, 0.0079, 0.0072)),
    "pinky": ((-0.077, -0.005, -0.0330), -15.0, (0.033, 0.020, 0.020), (0.0078, 0.0071, 0.0066, 0.0061)),
    "ring": ((-0.088, -0.002, -0.0150), -7.0, (0.042, 0.026, 0.022), (0.0088, 0.0081, 0.0074, 0.0068)),
}
THICKNESS = 0.88  # finger thickness (dorsal-palmar) over width
# Thumb: CMC offset from WRIST, directions of metacarpal, proximal and distal phalanx, lengths, half-widths at
# CMC, MCP, IP and the tip.
_THUMB_CMC = (-0.022, -0.011, 0.019)
_THUMB_DIRS = ((-0.62, -0.30, 0.72), (-0.74, -0.22, 0.64), (-0.82, -0.15, 0.55))
_THUMB_LENGTHS = (0.044, 0.032, 0.028)
_THUMB_RADII = (0.0135, 0.0105, 0.0095, 0.0085)


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


@dataclass(frozen=True)
class Chain:
    """One digit: joints from its base (MCP, or CMC for the thumb) to the skin tip, and its bone frames."""

    name: str
    points: np.ndarray  # (4, 3) metres: base joint, two more joints, skin tip (most distal point)
    radii: np.ndarray  # (4,) metres: half-width of the digit at those points
    dorsal: np.ndarray  # (3, 3) unit: per bone, the direction from the palmar to the dorsal side (normal to bone)

    def directions(self) -> np.ndarray:
        """(3, 3) unit bone directions, proximal to distal."""
        steps = np.diff(self.points, axis=0)
        return steps / np.linalg.norm(steps, axis=1, keepdims=True)

    def lengths(self) -> np.ndarray:
        """(3,) metres: bone lengths (the last one to the skin tip)."""
        return np.linalg.norm(np.diff(self.points, axis=0), axis=1)

    def flexion_axes(self) -> np.ndarray:
        """(3, 3) unit: per bone, the axis about which a positive rotation bends it toward the palm."""
        return np.cross(self.directions(), -self.dorsal)


def _long_chain(name: str) -> Chain:
    offset, splay, lengths, radii = _LONG[name]
    angle = np.radians(splay)
    direction = np.array([-np.cos(angle), 0.0, np.sin(angle)])
    base = WRIST + np.array(offset)
    points = base + np.concatenate([[0.0], np.cumsum(lengths)])[:, None] * direction
    dorsal = np.tile([0.0, 1.0, 0.0], (3, 1))
    return Chain(name, points, np.array(radii), dorsal)


def _thumb_chain() -> Chain:
    directions = np.array([_unit(d) for d in _THUMB_DIRS])
    points = [WRIST + np.array(_THUMB_CMC)]
    for direction, length in zip(directions, _THUMB_LENGTHS):
        points.append(points[-1] + length * direction)
    # The thumb nail faces mostly radially (+z), tilted dorsally (+y); its pad faces the index finger and palm.
    dorsal = []
    for direction in directions:
        side = np.array([0.0, 0.5, 0.87])
        dorsal.append(_unit(side - side.dot(direction) * direction))
    return Chain("thumb", np.array(points), np.array(_THUMB_RADII), np.array(dorsal))


def chains() -> tuple[Chain, ...]:
    """The five digits in MANO's order (index, middle, pinky, ring, thumb)."""
    return tuple(_thumb_chain() if name == "thumb" else _long_chain(name) for name in FINGERS)


def skeleton() -> np.ndarray:
    """(16, 3) metres: the designed rest joints in MANO's order (the skin tips are not joints)."""
    joints = [WRIST]
    for chain in chains():
        joints.extend(chain.points[:3])
    return np.array(joints)


# ---------------------------------------------------------------------------------------------------------------
# The implicit surface


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union) with blend radius k (metres)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


@dataclass(frozen=True)
class _Cone:
    """A bone's flesh: a round cone a->b with radii ra->rb, squashed to `thickness` along unit `dorsal`."""

    a: np.ndarray  # (3,) metres
    b: np.ndarray  # (3,) metres
    ra: float
    rb: float
    dorsal: np.ndarray  # (3,)
    thickness: float

    def field(self, p: np.ndarray) -> np.ndarray:
        """(N,) roughly the distance outside the cone at points (N, 3)."""
        axis = self.b - self.a
        length = np.linalg.norm(axis)
        direction = axis / length
        rel = p - self.a
        along = rel @ direction
        squash = rel @ self.dorsal
        s = np.clip(along / length, 0.0, 1.0)
        offset = (rel + squash[:, None] * ((1.0 / self.thickness - 1.0) * self.dorsal)
                  - (s * length)[:, None] * direction)
        return np.sqrt(np.einsum("ij,ij->i", offset, offset)) - (self.ra + (self.rb - self.ra) * s)

    def lower_bound(self, p: np.ndarray) -> np.ndarray:
        """(N,) a value never above `field` (squashing only stretches distances): the bounding sphere's."""
        centre = 0.5 * (self.a + self.b)
        reach = 0.5 * np.linalg.norm(self.b - self.a) + max(self.ra, self.rb)
        return np.linalg.norm(p - centre, axis=1) - reach


@dataclass(frozen=True)
class _Part:
    """Cones joined among themselves with blend radius `inner`, then joined to the rest with `blend` (metres)."""

    cones: tuple[_Cone, ...]
    inner: float
    blend: float

    def join(self, p: np.ndarray, value: np.ndarray) -> np.ndarray:
        """The smooth union of `value` (N,) with this part, evaluated only where the part can change it."""
        bound = np.min([cone.lower_bound(p) for cone in self.cones], axis=0) - self.inner * len(self.cones) / 4
        near = np.flatnonzero(bound < value + self.blend)
        if len(near) == 0:
            return value
        q = p[near]
        part = self.cones[0].field(q)
        for cone in self.cones[1:]:
            part = _smin(part, cone.field(q), self.inner)
        value = value.copy()
        value[near] = _smin(value[near], part, self.blend)
        return value


# Palm cross-sections along s = WRIST.x - x (distance from the wrist toward the knuckles): s, half-width,
# half-thickness, centre z, centre y (relative to WRIST).
_PALM = np.array([
    [-0.030, 0.0285, 0.0175, 0.0000, 0.0000],
    [0.000, 0.0290, 0.0170, 0.0000, 0.0000],
    [0.030, 0.0350, 0.0150, -0.0010, -0.0020],
    [0.060, 0.0385, 0.0130, -0.0025, -0.0040],
    [0.090, 0.0395, 0.0110, -0.0030, -0.0050],
])
_PALM_POWER = 2.6  # superellipse exponent of the palm's cross-section


def _palm(p: np.ndarray) -> np.ndarray:
    rel = p - WRIST
    s = -rel[:, 0]
    half_width, half_thick, centre_z, centre_y = (np.interp(s, _PALM[:, 0], _PALM[:, i]) for i in range(1, 5))
    u = np.abs(rel[:, 2] - centre_z) / half_width
    v = np.abs(rel[:, 1] - centre_y) / half_thick
    cross = ((u ** _PALM_POWER + v ** _PALM_POWER) ** (1.0 / _PALM_POWER) - 1.0) * half_thick
    # The distal end follows the knuckle arc: it ends just past the MCP joints of the fingers there.
    knuckles = np.array([(-_LONG[n][0][2], -_LONG[n][0][0]) for n in ("index", "middle", "ring", "pinky")])
    order = np.argsort(knuckles[:, 0])
    end = np.interp(-rel[:, 2], knuckles[order, 0], knuckles[order, 1]) + 0.004
    return -_smin(-cross, end - s, 0.006)  # smooth intersection of the sweep and the knuckle arc


def _digit_part(chain: Chain) -> _Part:
    pts, radii, dorsal = chain.points, chain.radii, chain.dorsal
    thickness = 0.92 if chain.name == "thumb" else THICKNESS
    directions = chain.directions()
    ends = [pts[0], pts[1], pts[2], pts[3] - radii[3] * directions[2]]  # the tip's round end reaches the skin tip
    cones = [_Cone(ends[i], ends[i + 1], radii[i], radii[i + 1], dorsal[i], thickness) for i in range(3)]
    if chain.name != "thumb":  # the metacarpal head: the finger's flesh reaches back into the palm
        cones.append(_Cone(pts[0] + 0.012 * directions[0], pts[0] - 0.006 * directions[0], radii[0],
                           radii[0] * 0.95, dorsal[0], thickness))
    return _Part(tuple(cones), 0.002, 0.010 if chain.name == "thumb" else 0.004)


def _pads(thumb: Chain) -> list[_Part]:
    """The thenar and hypothenar eminences on the palmar side."""
    up = np.array([0.0, 1.0, 0.0])
    thenar = _Cone(thumb.points[0] + np.array([0.004, -0.002, -0.006]),
                   thumb.points[1] + np.array([0.006, -0.002, -0.010]), 0.015, 0.010, up, 0.85)
    hypothenar = _Cone(WRIST + np.array([-0.012, -0.006, -0.020]), WRIST + np.array([-0.060, -0.007, -0.027]),
                       0.012, 0.0105, up, 0.9)
    return [_Part((thenar,), 0.0, 0.012), _Part((hypothenar,), 0.0, 0.010)]


@dataclass(frozen=True)
class Anatomy:
    """The implicit skin of the rest hand: the palm's sweep joined with the pads and the digits."""

    digits: tuple[Chain, ...]
    parts: tuple[_Part, ...]

    @classmethod
    def default(cls) -> "Anatomy":
        digits = chains()
        return cls(digits, tuple(_pads(digits[-1]) + [_digit_part(chain) for chain in digits]))

    def field(self, p: np.ndarray) -> np.ndarray:
        """(N,) implicit value at points (N, 3): < 0 inside the hand."""
        value = _palm(p)
        for part in self.parts:
            value = part.join(p, value)
        return value

    def cast(self, origins: np.ndarray, directions: np.ndarray, max_length: float) -> np.ndarray:
        """(N, 3) first exit points of rays from inside points `origins` (N, 3) along unit `directions` (N, 3).

        Marches by a safe fraction of the field's depth (it is roughly a distance), then bisects the crossing.
        Rays that never leave the hand within `max_length` metres end at `max_length`.
        """
        n = len(origins)
        lo, hi = np.zeros(n), np.full(n, max_length)
        t = np.zeros(n)
        active = np.arange(n)
        while len(active):
            value = self.field(origins[active] + t[active, None] * directions[active])
            out = value > 0.0
            hi[active[out]] = t[active[out]]
            inside = active[~out]
            lo[inside] = t[inside]
            t[inside] += np.maximum(0.5 * -value[~out] - 0.001, 0.0005)
            active = inside[t[inside] < max_length]
        for _ in range(16):  # bisection of the last step (under 2 mm) to well under a micrometre
            mid = 0.5 * (lo + hi)
            outside = self.field(origins + mid[:, None] * directions) > 0.0
            hi = np.where(outside, mid, hi)
            lo = np.where(outside, lo, mid)
        return origins + hi[:, None] * directions
