"""Pictures of predictions: an image with the true mesh beside the same image with the predicted mesh."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from handmesh.atomic import atomic_path
from handmesh.data.freihand import FreiHANDDataset, image_path
from handmesh.render import MeshRenderer, RendererUnavailable, overlay, render_mesh_opencv


def _draw(renderer: MeshRenderer | None, image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray
          ) -> np.ndarray:
    if renderer is None:
        return render_mesh_opencv(image, vertices, faces, K)
    return overlay(image, renderer.render([(vertices, faces)], K), alpha=0.7)


def _open_renderer(width: int, height: int) -> MeshRenderer | None:
    try:
        return MeshRenderer(width, height)
    except RendererUnavailable as error:
        print(f"overlays: {error}; drawing with OpenCV instead")
        return None


def write_overlays(predictor, dataset: FreiHANDDataset, vertices: np.ndarray, out_dir: Path, count: int) -> list[Path]:
    """A PNG for each of the first `count` samples of `dataset` (full image, original K): truth | prediction.

    vertices (N, 778, 3) metres, camera frame, aligned with the dataset's order; predictor gives faces and the label.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = dataset.arrays
    renderer, written = None, []
    for position in range(min(count, len(dataset))):
        index = int(dataset.indices[position])
        sample = index % dataset.num_unique
        image = cv2.cvtColor(cv2.imread(str(image_path(dataset.root, dataset.split, index))), cv2.COLOR_BGR2RGB)
        if position == 0:
            renderer = _open_renderer(image.shape[1], image.shape[0])
        K = np.asarray(arrays["K"][sample], dtype=np.float64)
        truth = _draw(renderer, image, np.asarray(arrays["verts"][sample]), predictor.faces, K)
        predicted = _draw(renderer, image, vertices[position], predictor.faces, K)
        panel = np.hstack([truth, predicted])
        label = "truth | prediction" + (" (stand-in hand model)" if predictor.is_standin else "")
        cv2.putText(panel, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        path = out_dir / f"{position:03d}.png"
        with atomic_path(path) as temporary:
            cv2.imwrite(str(temporary), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        written.append(path)
    if renderer is not None:
        renderer.close()
    return written
