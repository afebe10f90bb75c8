"""Procedural backgrounds for the synthetic dataset: gradients, value noise, blurred shapes, stripes and checkers,
two-surface "scenes", mixed together. Pure numpy/OpenCV, seeded by the caller's Generator, ~1-3 ms at 224x224."""

from __future__ import annotations

import cv2
import numpy as np


def random_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.0, 0.9),
                  value: tuple[float, float] = (0.1, 0.95)) -> np.ndarray:
    """(3,) float32 RGB in [0, 1] from a random hue, saturation and value."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _coords(size: int, angle: float) -> np.ndarray:
    """(S, S) coordinate along direction `angle`, in [-1, 1]-ish units."""
    grid = (np.arange(size, dtype=np.float32) - size / 2) / (size / 2)
    return np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]


def _palette(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Maps t (S, S) in [0, 1] through a piecewise-linear palette of colours (C, 3) -> (S, S, 3)."""
    stops = np.linspace(0.0, 1.0, len(colours))
    return np.dstack([np.interp(t, stops, colours[:, channel]) for channel in range(3)]).astype(np.float32)


def gradient(size: int, rng: np.random.Generator) -> np.ndarray:
    """Linear or radial blend of 2-3 colours."""
    colours = np.stack([random_colour(rng) for _ in range(rng.integers(2, 4))])
    if rng.random() < 0.6:
        t = (_coords(size, rng.uniform(0, 2 * np.pi)) + 1) / 2
    else:
        centre = rng.uniform(-1, 1, size=2)
        grid = (np.arange(size, dtype=np.float32) - size / 2) / (size / 2)
        t = np.hypot(grid[None, :] - centre[0], grid[:, None] - centre[1]) / rng.uniform(1.0, 2.5)
    return _palette(t, colours)


def value_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """Multi-octave smooth noise through a random palette (clouds, stone, fabric-like blotches)."""
    total = np.zeros((size, size), dtype=np.float32)
    weight = 1.0
    cells = int(rng.integers(2, 6))
    for _ in range(int(rng.integers(2, 5))):
        grid = rng.random((cells, cells)).astype(np.float32)
        total += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight *= rng.uniform(0.35, 0.6)
        cells *= 2
    total = (total - total.min()) / (np.ptp(total) + 1e-6)
    colours = np.stack([random_colour(rng) for _ in range(rng.integers(2, 4))])
    return _palette(total, colours)


def shapes(size: int, rng: np.random.Generator) -> np.ndarray:
    """Random circles, rectangles, lines and polygons on a base colour, blurred by a random amount (bokeh-like)."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = random_colour(rng)
    for _ in range(int(rng.integers(4, 16))):
        colour = tuple(float(c) for c in random_colour(rng))
        kind = rng.integers(4)
        centre = tuple(int(c) for c in rng.integers(-size // 4, size + size // 4, size=2))
        extent = int(rng.uniform(0.05, 0.4) * size)
        if kind == 0:
            cv2.circle(image, centre, extent, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            corner = (centre[0] + extent, centre[1] + int(extent * rng.uniform(0.3, 2)))
            cv2.rectangle(image, centre, corner, colour, -1)
        elif kind == 2:
            end = tuple(int(c) for c in rng.integers(0, size, size=2))
            cv2.line(image, centre, end, colour, int(rng.integers(2, 14)), cv2.LINE_AA)
        else:
            points = (np.array(centre) + rng.normal(0, extent, size=(int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
    sigma = rng.choice([0.0, rng.uniform(1, 3), rng.uniform(4, 10)])
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image


def pattern(size: int, rng: np.random.Generator) -> np.ndarray:
    """Stripes, checkers or tiles at a random angle and frequency (textiles, floors, wallpaper)."""
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(2, 14)
    u = _coords(size, angle) * frequency
    if rng.random() < 0.5:
        t = 0.5 + 0.5 * np.sin(u * np.pi) if rng.random() < 0.5 else (np.floor(u) % 2).astype(np.float32)
    else:
        v = _coords(size, angle + np.pi / 2) * frequency
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    colours = np.stack([random_colour(rng), random_colour(rng)])
    image = _palette(t, colours)
    return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 2.0))


def scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """Two surfaces split by a tilted edge (wall and table, shelf, doorway), each its own texture."""
    upper, lower = generate_simple(size, rng), generate_simple(size, rng)
    edge = _coords(size, np.pi / 2 + rng.normal(0, 0.3)) - rng.uniform(-0.6, 0.6)
    blend = np.clip(edge * rng.uniform(5, 40) + 0.5, 0, 1)[..., None]
    return upper * (1 - blend) + lower * blend


_SIMPLE = (gradient, value_noise, shapes, pattern)


def generate_simple(size: int, rng: np.random.Generator) -> np.ndarray:
    return _SIMPLE[int(rng.integers(len(_SIMPLE)))](size, rng)


def generate(size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 RGB in [0, 1]: one generator, a two-surface scene, or a blend of two; plus lighting falloff.
    Drawn at half resolution and enlarged (4x less work; backgrounds look slightly out of focus, as behind a hand)."""
    full, size = size, (size + 1) // 2
    choice = rng.random()
    if choice < 0.55:
        image = generate_simple(size, rng)
    elif choice < 0.8:
        image = scene(size, rng)
    else:
        alpha = rng.uniform(0.25, 0.75)
        image = alpha * generate_simple(size, rng) + (1 - alpha) * generate_simple(size, rng)
    falloff = 1.0 - rng.uniform(0, 0.4) * np.clip((_coords(size, rng.uniform(0, 2 * np.pi)) + 1) / 2, 0, 1)
    image = np.clip(image * falloff[..., None], 0, 1).astype(np.float32)
    return cv2.resize(image, (full, full), interpolation=cv2.INTER_LINEAR)


def homogenise(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smoothed, flattened, colour-shifted copy of a background (FreiHAND's "homogenised" version)."""
    size = background.shape[0]
    smooth = cv2.GaussianBlur(background, (0, 0), size / rng.uniform(8, 25))
    mean = smooth.reshape(-1, 3).mean(axis=0)
    flat = mean + (smooth - mean) * rng.uniform(0.2, 0.6)
    return np.clip(flat * (1 + rng.normal(0, 0.25, size=3)), 0, 1).astype(np.float32)
