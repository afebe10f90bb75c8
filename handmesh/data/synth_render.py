"""The synthetic dataset's look: a reusable pyrender scene (skin tones with palm/back/nail tints, a forearm, key and
fill lights), composited over procedural backgrounds in FreiHAND's four versions.

Pixel convention: OpenCV's (pixel centres at integer coordinates), the one FreiHAND's `uv = K xyz` uses; pyrender puts
pixel centres at +0.5, so it is given cx + 0.5, cy + 0.5. pyrender's offscreen framebuffer is 4x multisampled: with a
transparent background its RGBA output carries the hand's coverage (anti-aliased edges) in alpha, colour premultiplied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from handmesh.data import backgrounds
from handmesh.render import vertex_normals

_OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])  # flips y and z: OpenCV camera frame -> OpenGL's
# Skin base colours (RGB in [0, 1]) from light to dark; a sample blends two neighbours.
SKIN_TONES = np.array([
    [0.96, 0.80, 0.69], [0.92, 0.72, 0.60], [0.84, 0.63, 0.50], [0.74, 0.52, 0.39],
    [0.60, 0.41, 0.29], [0.45, 0.30, 0.21], [0.33, 0.22, 0.15],
])


@dataclass(frozen=True)
class Look:
    """Per-sample appearance of the rendered hand."""

    skin: np.ndarray  # (3,) RGB base colour
    palm_lightness: float  # how much lighter the palm side is (0..0.35)
    roughness: float
    ambient: float  # ambient light level
    key_direction: np.ndarray  # (3,) unit, OpenCV camera frame, direction the light travels (z > 0: into the scene)
    key_intensity: float
    key_colour: np.ndarray  # (3,) light colour
    fill_direction: np.ndarray  # (3,)
    fill_intensity: float
    sleeve_start: float | None  # metres from the wrist where a sleeve begins, None for a bare forearm
    sleeve_colour: np.ndarray  # (3,) RGB


@dataclass(frozen=True)
class HandLayer:
    """A rendered hand ready for compositing."""

    colour: np.ndarray  # (S, S, 3) float32 RGB [0, 1], valid where alpha > 0
    alpha: np.ndarray  # (S, S) float32 coverage in [0, 1] (anti-aliased edges)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _direction(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """A random unit vector within `max_angle_deg` of +z (into the scene, camera frame)."""
    theta = np.deg2rad(rng.uniform(0, max_angle_deg))
    phi = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def sample_look(rng: np.random.Generator) -> Look:
    position = rng.uniform(0, len(SKIN_TONES) - 1)
    low = int(position)
    high = min(low + 1, len(SKIN_TONES) - 1)
    skin = SKIN_TONES[low] * (1 - (position - low)) + SKIN_TONES[high] * (position - low)
    skin = np.clip(skin * rng.normal(1.0, 0.04, size=3), 0.05, 1.0)
    key = _direction(rng, 65)
    fill = _unit(-key * np.array([1.0, 1.0, -1.0]) + rng.normal(0, 0.3, size=3))  # roughly the other side
    fill[2] = abs(fill[2]) + 0.2
    warm = rng.normal(0, 0.06)
    return Look(
        skin=skin,
        palm_lightness=float(rng.uniform(0.05, 0.3)),
        roughness=float(rng.uniform(0.45, 0.85)),
        ambient=float(rng.uniform(0.05, 0.2)),
        key_direction=key,
        key_intensity=float(rng.uniform(2.2, 4.5)),
        key_colour=np.clip(np.array([1 + warm, 1.0, 1 - warm]), 0.8, 1.0),
        fill_direction=_unit(fill),
        fill_intensity=float(rng.uniform(0.3, 1.3)),
        sleeve_start=float(rng.uniform(0.03, 0.15)) if rng.random() < 0.5 else None,
        sleeve_colour=backgrounds.random_colour(rng, value=(0.1, 0.9)).astype(np.float64),
    )


@dataclass(frozen=True)
class SkinModel:
    """Per-vertex tint weights and the wrist opening of one hand model, computed once from its rest mesh."""

    faces: np.ndarray  # (1538, 3)
    palm: np.ndarray  # (778,) 0..1, palm side
    nail: np.ndarray  # (778,) 0..1, fingernails
    wrist_loop: np.ndarray  # (L,) vertex ids of the wrist opening, in order around it

    @classmethod
    def build(cls, v_template: np.ndarray, faces: np.ndarray, palm_normal: np.ndarray,
              fingertip_ids: tuple[int, ...]) -> "SkinModel":
        """v_template (778, 3) metres; palm_normal (3,) unit out of the palm; fingertip_ids: the 5 tip vertices."""
        centred = v_template - v_template.mean(axis=0)
        side = centred @ palm_normal  # (778,) > 0 on the palm side
        palm = np.clip(0.5 + side / (2 * np.abs(side).max() * 0.3), 0, 1)
        nail = np.zeros(len(v_template))
        for tip in fingertip_ids:
            near = np.linalg.norm(v_template - v_template[tip], axis=1)  # (778,) metres
            nail = np.maximum(nail, np.clip(1.0 - near / 0.012, 0, 1) * (side < side[tip] + 0.004))
        return cls(faces, palm, np.clip(nail * 1.5, 0, 1), _largest_boundary_loop(faces))


def _largest_boundary_loop(faces: np.ndarray) -> np.ndarray:
    """Ordered vertex ids of the longest boundary loop (MANO's mesh is open only at the wrist)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    neighbours: dict[int, list[int]] = {}
    for a, b in unique[counts == 1]:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    loops, seen = [], set()
    for start in neighbours:
        if start in seen:
            continue
        loop, previous, current = [start], None, start
        seen.add(start)
        while True:
            step = [n for n in neighbours[current] if n != previous and (n not in seen or n == start)]
            if not step or step[0] == start:
                break
            previous, current = current, step[0]
            loop.append(current)
            seen.add(current)
        loops.append(loop)
    return np.array(max(loops, key=len), dtype=np.int64) if loops else np.zeros(0, dtype=np.int64)


# Forearm rings: distance from the wrist opening (metres) and radius relative to it.
_ARM_DISTANCES = (0.0, 0.015, 0.04, 0.08, 0.14, 0.22, 0.32)
_ARM_SCALES = (1.0, 1.02, 1.05, 1.09, 1.14, 1.18, 1.2)


def dress(skin: SkinModel, vertices: np.ndarray, keypoints: np.ndarray,
          look: Look) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hand as rendered: skin tones on the mesh plus a forearm (optionally sleeved) out of the wrist opening.

    vertices (778, 3), keypoints (21, 3) camera frame metres -> (vertices (N, 3), faces (F, 3), colours (N, 3) RGB).
    The first 778 vertices are the hand's own; the forearm is only drawn, never annotated.
    """
    tint = look.skin * (1 + look.palm_lightness * skin.palm[:, None])  # (778, 3)
    colours = tint * (1 - skin.nail[:, None] * 0.3) + skin.nail[:, None] * np.array([0.95, 0.78, 0.75]) * 0.3
    loop = skin.wrist_loop
    if len(loop) < 3:
        return vertices, skin.faces, colours
    ring = vertices[loop]  # (L, 3)
    centre = ring.mean(axis=0)
    axis = _unit(keypoints[0] - keypoints[9])  # middle MCP -> wrist: along the forearm
    distances, scales = list(_ARM_DISTANCES), list(_ARM_SCALES)
    ring_colours = [colours[loop].mean(axis=0)] * len(distances)
    if look.sleeve_start is not None:
        cut = int(np.searchsorted(distances, look.sleeve_start))
        scale = float(np.interp(look.sleeve_start, _ARM_DISTANCES, _ARM_SCALES))
        distances[cut:cut] = [look.sleeve_start, look.sleeve_start + 0.002]
        scales[cut:cut] = [scale, scale * 1.15]
        scales[cut + 2 :] = [value * 1.15 for value in scales[cut + 2 :]]
        ring_colours = [ring_colours[0]] * (cut + 1) + [look.sleeve_colour] * (len(distances) - cut - 1)
    count = len(loop)
    arm = [centre + (ring - centre) * scale + axis * distance for distance, scale in zip(distances[1:], scales[1:])]
    all_vertices = np.concatenate([vertices, *arm])
    ids = [loop] + [len(vertices) + k * count + np.arange(count) for k in range(len(arm))]
    quads = []
    for near, far in zip(ids[:-1], ids[1:]):
        nxt_near, nxt_far = np.roll(near, -1), np.roll(far, -1)
        quads.append(np.stack([near, nxt_near, nxt_far], axis=1))
        quads.append(np.stack([near, nxt_far, far], axis=1))
    arm_faces = np.concatenate(quads)
    first = all_vertices[arm_faces[len(arm_faces) // 2]]  # (3, 3): a face in the middle of the forearm
    outward = np.cross(first[1] - first[0], first[2] - first[0]) @ (
        first.mean(axis=0) - centre - axis * axis.dot(first.mean(axis=0) - centre))
    if outward < 0:  # wind the forearm's triangles so that their normals point out of it, like the hand's
        arm_faces = arm_faces[:, ::-1]
    arm_colours = np.concatenate([np.tile(colour, (count, 1)) for colour in ring_colours[1:]])
    return all_vertices, np.concatenate([skin.faces, arm_faces]), np.concatenate([colours, arm_colours])


class HandScene:
    """One offscreen renderer and scene reused for every sample (creating GL contexts is the slow part)."""

    def __init__(self, size: int = 224):
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # must precede the first pyrender import
        from handmesh.render import MeshRenderer  # raises RendererUnavailable with install advice when GL is missing

        MeshRenderer(4, 4).close()  # probes EGL once, with the project's error message
        import pyrender

        self._pyrender = pyrender
        self.size = size
        self._renderer = pyrender.OffscreenRenderer(size, size)
        self._scene = pyrender.Scene(bg_color=[0, 0, 0, 0])
        self._key = self._scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.0))
        self._fill = self._scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=1.0))
        self._camera = self._scene.add(pyrender.IntrinsicsCamera(fx=1, fy=1, cx=0, cy=0, znear=0.01, zfar=20.0))
        self._mesh = None

    @staticmethod
    def _light_pose(direction: np.ndarray) -> np.ndarray:
        """4x4 OpenGL pose whose -z axis is `direction` (given in the OpenCV camera frame)."""
        z = -(_OPENGL_FROM_OPENCV @ direction)
        helper = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = _unit(np.cross(helper, z))
        pose = np.eye(4)
        pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
        return pose

    def render(self, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, K: np.ndarray,
               look: Look) -> HandLayer:
        """vertices (N, 3) metres camera frame, faces (F, 3), colours (N, 3) RGB in [0, 1] (see `dress`), K (3, 3)."""
        pyrender = self._pyrender
        # pyrender shades vertex colours as linear RGB and gamma-encodes the output
        linear = np.clip(colours, 0, 1) ** 2.2
        colours = np.concatenate([linear, np.ones((len(linear), 1))], axis=1).astype(np.float32)
        positions = (vertices @ _OPENGL_FROM_OPENCV.T).astype(np.float32)
        normals = vertex_normals(positions.astype(np.float64), faces)  # (N, 3) area-weighted, not unit
        normals = (normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12)).astype(np.float32)
        material = pyrender.MetallicRoughnessMaterial(
            metallicFactor=0.0, roughnessFactor=look.roughness, baseColorFactor=(1.0, 1.0, 1.0, 1.0), doubleSided=True
        )
        primitive = pyrender.Primitive(positions=positions, normals=normals, color_0=colours,
                                       indices=faces.astype(np.uint32), material=material)
        if self._mesh is not None:
            self._scene.remove_node(self._mesh)
        self._mesh = self._scene.add(pyrender.Mesh([primitive]))
        self._scene.ambient_light = np.full(3, look.ambient)
        self._key.light.color, self._key.light.intensity = look.key_colour, look.key_intensity
        self._fill.light.intensity = look.fill_intensity
        self._scene.set_pose(self._key, self._light_pose(look.key_direction))
        self._scene.set_pose(self._fill, self._light_pose(look.fill_direction))
        camera = self._camera.camera
        camera.fx, camera.fy = K[0, 0], K[1, 1]
        camera.cx, camera.cy = K[0, 2] + 0.5, K[1, 2] + 0.5
        rgba, _ = self._renderer.render(self._scene, flags=pyrender.RenderFlags.RGBA)
        alpha = rgba[..., 3].astype(np.float32) / 255.0  # (S, S) coverage
        hand = rgba[..., :3].astype(np.float32) / 255.0 / np.maximum(alpha, 1e-6)[..., None]  # un-premultiplied
        return HandLayer(colour=np.clip(hand, 0, 1), alpha=alpha)

    def close(self) -> None:
        self._renderer.delete()


def _hue_shift(image: np.ndarray, degrees: float, saturation: float = 1.0) -> np.ndarray:
    """(H, W, 3) float32 RGB [0, 1] -> hue rotated by `degrees`, saturation scaled."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
    hsv[..., 0] = (hsv[..., 0] + degrees) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _composite(hand: np.ndarray, alpha: np.ndarray, background: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Hand over background, the background darkened by a soft drop shadow (S, S) in [0, 1]."""
    shaded = background * (1 - shadow)[..., None]
    return hand * alpha[..., None] + shaded * (1 - alpha[..., None])


def drop_shadow(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(S, S) soft shadow of the hand's silhouette, offset and blurred, strength 0..0.45."""
    size = alpha.shape[0]
    offset = rng.normal(0, 0.04 * size, size=2)
    moved = cv2.warpAffine(alpha, np.float32([[1, 0, offset[0]], [0, 1, offset[1]]]), (size, size))
    blurred = cv2.GaussianBlur(moved, (0, 0), rng.uniform(0.02, 0.06) * size)
    return blurred * rng.uniform(0.0, 0.45)


def _finish(image: np.ndarray, rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
    """Camera response: gamma and white balance (one lookup table per channel), sensor noise -> uint8 RGB.
    noise (S, S, 3) int16: a zero-mean noise field, scaled here by a random strength."""
    levels = np.linspace(0.0, 1.0, 256)
    gamma, gains = rng.uniform(0.85, 1.15), rng.normal(1.0, 0.03, size=3)
    table = np.stack([np.clip(levels**gamma * gain * 255 + 0.5, 0, 255) for gain in gains], axis=1).astype(np.uint8)
    pixels = cv2.LUT((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), table[None])  # (256, 1, 3) per channel
    grain = noise * int(rng.integers(0, 5)) // 4  # 0 to ~4 grey levels of standard deviation
    return np.clip(pixels + grain, 0, 255).astype(np.uint8)


def four_versions(layer: HandLayer, rng: np.random.Generator) -> list[np.ndarray]:
    """FreiHAND's four colourisations of one rendered hand, as (S, S, 3) uint8 RGB, geometry identical:
    0 original (hand on a procedural background), 1 homogenised background, 2 another background and a shifted
    hand hue, 3 "auto-colourised": a third background and a random colour mix of the whole image."""
    size = layer.alpha.shape[0]
    shadow = drop_shadow(layer.alpha, rng)
    first = backgrounds.generate(size, rng)
    hand = layer.colour
    versions = [
        _composite(hand, layer.alpha, first, shadow),
        _composite(hand, layer.alpha, backgrounds.homogenise(first, rng), shadow),
        _composite(_hue_shift(hand, rng.uniform(-25, 25), rng.uniform(0.7, 1.3)), layer.alpha,
                   backgrounds.generate(size, rng), shadow),
    ]
    mix = np.eye(3) + rng.normal(0, 0.12, size=(3, 3))
    mix /= mix.sum(axis=1, keepdims=True)
    auto = _composite(hand, layer.alpha, backgrounds.generate(size, rng), shadow) @ mix.T.astype(np.float32)
    versions.append(auto)
    noise = (rng.standard_normal(layer.colour.shape, dtype=np.float32) * 4).astype(np.int16)
    return [_finish(version, rng, noise) for version in versions]
