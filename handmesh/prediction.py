"""Predicting FreiHAND's evaluation split: the official `pred.json` (camera frame, metres) and its sidecar.

Each evaluation image is read whole and resized to the network's input size (as in training); the root position comes
from the predicted weak-perspective camera and the crop's K. Only `evaluation/rgb/` and `evaluation_K.json` are read,
as the official pred.py does. The official format has no room for provenance, so `pred.json.meta.json` beside it says
which hand model (MANO or the stand-in) and checkpoint made it, and when (`predjson.write_pred_meta`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handmesh.data.datamodule import freihand_loader
from handmesh.data.freihand import FreiHANDDataset
from handmesh.inference import Predictor
from handmesh.predjson import write_pred_json, write_pred_meta


@dataclass(frozen=True)
class PredictionFiles:
    pred_json: Path  # the official [xyz_list, verts_list]
    meta: Path  # its sidecar
    keypoints: np.ndarray  # (N, 21, 3) metres, camera frame, evaluation order
    vertices: np.ndarray  # (N, 778, 3) metres, camera frame


def predict_split(predictor: Predictor, dataset: FreiHANDDataset, batch_size: int, num_workers: int,
                  progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 21, 3) keypoints and (N, 778, 3) vertices, metres, camera frame, in dataset order. progress: False hides the
    progress (a bar on a terminal, else a line every 10 %)."""
    from handmesh.progress import progress_bar

    loader = freihand_loader(dataset, batch_size, num_workers)  # in order, as validation reads it
    keypoints, vertices = [], []
    for batch in progress_bar(loader, desc="predict", unit="batch", disable=progress is False, delay=2.0):
        prediction = predictor.predict_images(batch["image"], batch["K"])
        keypoints.append(prediction.keypoints_3d)
        vertices.append(prediction.vertices)
    return np.concatenate(keypoints), np.concatenate(vertices)


def write_predictions(predictor: Predictor, data_root: str | os.PathLike, out: str | os.PathLike, checkpoint: str,
                      batch_size: int = 32, num_workers: int = 2, progress: bool | None = None) -> PredictionFiles:
    """Predict the evaluation split of `data_root` and write `out` (pred.json) and its sidecar, atomically.
    `checkpoint` names the weights in the sidecar. Replaces `out` if it exists: callers decide whether it may."""
    dataset = FreiHANDDataset(data_root, split="evaluation", input_size=predictor.input_size, augment=None,
                              labels=False)  # images and evaluation_K.json, as the official pred.py reads them
    keypoints, vertices = predict_split(predictor, dataset, batch_size, num_workers, progress)
    out = write_pred_json(out, keypoints, vertices)
    meta = {
        "generator": "handmesh predict",
        "hand_model": "the handmesh STAND-IN hand model (not MANO)" if predictor.is_standin else "MANO",
        "is_standin": predictor.is_standin,
        "checkpoint": str(checkpoint),
        "predictor": predictor.description,
        "data_root": str(Path(data_root).absolute()),
        "samples": len(keypoints),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return PredictionFiles(out, write_pred_meta(out, meta), keypoints, vertices)
