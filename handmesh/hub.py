"""A model as a Hugging Face-style folder: `model.safetensors`, `config.json` and a model card `README.md`.

`handmesh export --format hub --out DIR` writes one from a checkpoint; `Predictor.from_checkpoint` reads one (a local
folder, or `hf://owner/repo` through `handmesh.checkpoints.resolve_checkpoint`). The weights are the HandModel's state
dict (safetensors: tensors only, nothing runs on load). config.json holds what the checkpoint's `handmesh` entry holds:
the format version, the construction arguments and which hand model it was trained with. MANO itself is not included
(its licence does not allow that): users supply MANO_RIGHT.pkl as for training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from handmesh.atomic import atomic_path
from handmesh.checkpoints import METADATA_KEY, metadata, model_state_dict, read_checkpoint, resolve_checkpoint
from handmesh.errors import CheckpointError, HandmeshError

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
SCORES_FILE = "scores.json"  # written by `handmesh evaluate` and the quick start
SCORE_LABELS = {  # scores.json key -> the model card's row label (others are listed under their key)
    "pa_mpjpe_mm": "PA-MPJPE (mm)", "pa_mpvpe_mm": "PA-MPVPE (mm)", "f_at_5mm": "F@5 mm", "f_at_15mm": "F@15 mm",
}


def is_hub_model(path: Path) -> bool:
    """A folder with config.json, or a .safetensors file (whose folder holds config.json)."""
    return path.is_dir() or path.suffix == ".safetensors"


def read_hub_model(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """A hub folder (or its .safetensors file) -> (HandModel state dict, `handmesh` entry as `metadata` checks it,
    the whole config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    folder, weights = (path, path / WEIGHTS_FILE) if path.is_dir() else (path.parent, path)
    config_path = folder / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_path} is missing or not JSON ({type(error).__name__}); expected a folder "
                              "written by `handmesh export --format hub`.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object written by `handmesh export --format hub`.")
    entry = metadata({METADATA_KEY: config.get(METADATA_KEY)}, config_path)
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{weights} is missing or not a safetensors file ({type(error).__name__}); expected "
                              "a folder written by `handmesh export --format hub`.") from None
    return state, entry, config


def find_scores(checkpoint: Path) -> Path | None:
    """scores.json of the run a checkpoint belongs to: beside it, or one folder up (runs/NAME/checkpoints/x.ckpt)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / SCORES_FILE).is_file():
            return folder / SCORES_FILE
    return None


def model_card(config: dict, scores: dict | None) -> str:
    """README.md: what the model is, how to run it, the hand model it needs, and its evaluation scores if any."""
    args, mano = config[METADATA_KEY]["model_args"], config[METADATA_KEY].get("mano", {})
    standin = mano.get("is_standin")
    lines = [
        "---", "library_name: handmesh", "tags: [hand-mesh-reconstruction, mano, freihand, fastvit]", "---", "",
        f"# handmesh: {args['encoder']} at {args['input_size']} px, {args['head']} head", "",
        "3D hand mesh reconstruction from one RGB image: an image encoder and a regressor of MANO pose, shape and a "
        "weak-perspective camera, giving the 778 MANO vertices and 21 keypoints in metres in the camera frame.", "",
        "## Use", "", "```", "pip install handmesh  # or the repository: pip install -e .",
        "handmesh demo --checkpoint hf://OWNER/REPO   # webcam; --source clip.mp4 for a video", "```", "",
        "## Hand model", "",
        "The hand model is **not** included (MANO's licence does not allow redistribution): put MANO_RIGHT.pkl in "
        "data/mano/ or pass --mano-dir, as for training.",
        f"Trained with: {mano.get('source', 'unknown')}.",
    ]
    if standin:
        lines.append("**Trained with the handmesh stand-in hand model, not MANO: its meshes are illustrative only.**")
    lines += ["", "## Files", "", f"- `{WEIGHTS_FILE}`: the network's weights (train-time graph).",
              f"- `{CONFIG_FILE}`: construction arguments (`{METADATA_KEY}.model_args`), hand model provenance "
              f"(`{METADATA_KEY}.mano`), training step.", ""]
    if scores:
        lines += ["## Evaluation", "", "FreiHAND protocol (official measures, `handmesh evaluate`):", "",
                  "| measure | value |", "|---|---|"]
        lines += [f"| {SCORE_LABELS.get(key, key)} | {value:.4g} |" if isinstance(value, (int, float))
                  else f"| {SCORE_LABELS.get(key, key)} | {value} |" for key, value in scores.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def write_hub_folder(checkpoint: str | os.PathLike, out: str | os.PathLike,
                     scores: str | os.PathLike | None = None) -> list[Path]:
    """A `handmesh fit` checkpoint (any `resolve_checkpoint` location of a .ckpt) -> the folder `out` with
    WEIGHTS_FILE, CONFIG_FILE and CARD_FILE, written into a temporary folder first and moved into place.
    scores: a scores.json (None: the run's, if `find_scores` finds it)."""
    from safetensors.torch import save_file

    checkpoint, out = resolve_checkpoint(checkpoint), Path(out)
    if not out.parent.is_dir():
        raise HandmeshError(f"cannot write {out}: the folder {out.parent} does not exist. "
                            "Create it or pass another --out.")
    if out.exists() and not out.is_dir():
        raise HandmeshError(f"--out {out} is a file; expected a folder for --format hub")
    data = read_checkpoint(checkpoint)
    entry = metadata(data, checkpoint)
    scores_path = Path(scores) if scores is not None else find_scores(checkpoint)
    score_values = None
    if scores_path is not None:
        try:
            score_values = json.loads(scores_path.read_text())
        except (OSError, ValueError) as error:
            raise HandmeshError(f"--scores {scores_path}: not a readable JSON file ({type(error).__name__}); expected "
                                "the scores.json written by `handmesh evaluate`") from None
    config = {METADATA_KEY: {key: entry[key] for key in ("format", "model_args", "mano") if key in entry},
              "global_step": data.get("global_step")}
    state = {key: value.contiguous() for key, value in model_state_dict(data).items()}
    with atomic_path(out) as temporary:
        temporary.mkdir()
        save_file(state, str(temporary / WEIGHTS_FILE), metadata={"format": "pt"})
        (temporary / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (temporary / CARD_FILE).write_text(model_card(config, score_values))
    return [out / WEIGHTS_FILE, out / CONFIG_FILE, out / CARD_FILE]
