"""Checkpoint files: atomic writes and safe reads (weights_only: no code runs), and handmesh's own metadata in them.

Lightning writes the training state (weights, optimizer, scheduler, loops, callbacks); `lit_module` adds a
`handmesh` entry of plain values that lets `inference.Predictor` rebuild the network without Lightning. No Lightning
import here.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from handmesh.atomic import atomic_path
from handmesh.errors import CheckpointError
from handmesh.paths import user_cache_dir

# checkpoint["handmesh"] = {"format": ..., "model_args": HandModelConfig.as_dict(), "mano": {...}}; older checkpoints
# lack the settings added later (HandModelConfig.from_dict fills them)
METADATA_KEY = "handmesh"
FORMAT_VERSION = 1
MODEL_PREFIX = "model."  # the LightningModule keeps the HandModel as `self.model`
_WHAT_TO_DO = "Use another checkpoint (runs/<name>/checkpoints/last.ckpt or best.ckpt) or train again."


HF_SCHEME = "hf://"
HUB_FILES = ("config.json", "model.safetensors")  # what `handmesh export --format hub` writes besides the card
DOWNLOAD_TIMEOUT_S = 60
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # plain http:// is accepted from these only


def is_remote(spec: str | os.PathLike) -> bool:
    return str(spec).startswith((HF_SCHEME, "https://", "http://"))


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A --checkpoint value -> a local path: a file or hub folder as given; an https:// URL downloaded once into
    user_cache_dir()/downloads; hf://owner/repo[/file] through huggingface_hub's cache (offline mode honoured;
    without a file, the repository's HUB_FILES, whose folder is returned)."""
    text = str(spec)
    if text.startswith(HF_SCHEME):
        return _from_hub(text[len(HF_SCHEME):])
    if text.startswith(("https://", "http://")):
        return _from_url(text)
    return Path(spec)


def _from_hub(name: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    parts = [part for part in name.split("/") if part]
    if len(parts) < 2:
        raise CheckpointError(f"{HF_SCHEME}{name}: expected {HF_SCHEME}owner/repo or {HF_SCHEME}owner/repo/file.ckpt")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        if filename:
            return Path(hf_hub_download(repo_id, filename))
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        raise CheckpointError(
            f"{HF_SCHEME}{name} is not in the local Hugging Face cache and could not be downloaded (offline: "
            f"HF_HUB_OFFLINE is set, or no network; {_first_line(error)}). Connect once to download it, or pass "
            "the downloaded folder or .ckpt file.") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"no Hugging Face repository {repo_id} (or it is private: log in with `hf auth login`); "
                              "check the name in hf://owner/repo.") from None
    except EntryNotFoundError:
        raise CheckpointError(f"the Hugging Face repository {repo_id} has no file {filename}; expected "
                              f"{HF_SCHEME}{repo_id} (a folder written by `handmesh export --format hub`) or the "
                              "path of a .ckpt in it.") from None
    except (HfHubHTTPError, OSError) as error:
        raise CheckpointError(f"could not fetch {HF_SCHEME}{name} ({type(error).__name__}: {_first_line(error)}); "
                              "check the network, or pass a local file.") from None


def _from_url(url: str) -> Path:
    """The URL's file in user_cache_dir()/downloads/<hash of the URL>/<its name>, downloaded atomically when missing."""
    import hashlib
    import urllib.error
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "http" and parsed.hostname not in LOOPBACK_HOSTS:
        raise CheckpointError(f"{url}: expected an https:// URL (plain http:// only from this machine)")
    name = Path(parsed.path).name or "model.ckpt"
    target = user_cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (atomic_path(target) as temporary, open(temporary, "wb") as file,
              urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response):
            while chunk := response.read(1 << 20):
                file.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CheckpointError(f"could not download {url} ({type(error).__name__}: {_first_line(error)}); check the "
                              "address and the network, or download it yourself and pass the file.") from None
    return target


def atomic_save(checkpoint: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, flushed to disk, then renamed over `path`: a crash never
    leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`; every failure becomes a CheckpointError that says why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a .ckpt file written by `handmesh fit` "
                              "(e.g. runs/quickstart/checkpoints/best.ckpt).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:  # a Python object to import and call: what weights_only exists to stop
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects ({unsafe.group(1)}), not only tensors and plain "
                "values. Expected a checkpoint written by `handmesh fit`; a foreign or tampered file could run code."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (not a file written by torch.save); expected a "
                              f".ckpt written by `handmesh fit`. {_WHAT_TO_DO}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__}: {_first_line(error)}); "
                              f"it may be truncated or corrupt. {_WHAT_TO_DO}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no model state_dict; expected a checkpoint written by `handmesh fit`.")
    return checkpoint


def metadata(checkpoint: dict, path: str | os.PathLike) -> dict:
    """The `handmesh` entry (format, model_args, mano), checked; a CheckpointError for other programs' checkpoints.
    model_args is as stored: `HandModelConfig.from_dict` reads it."""
    entry = checkpoint.get(METADATA_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("model_args"), dict):
        raise CheckpointError(
            f"{path} is a checkpoint from another program or model (no '{METADATA_KEY}' entry with the network's "
            "construction arguments); expected one written by `handmesh fit`."
        )
    if entry.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses handmesh checkpoint format {entry.get('format')}, expected {FORMAT_VERSION}; "
            "use the handmesh version that wrote it, or train again."
        )
    return entry


def model_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The HandModel's weights from a Lightning checkpoint (the `model.` prefix removed)."""
    state = checkpoint["state_dict"]
    return {key[len(MODEL_PREFIX):]: value for key, value in state.items() if key.startswith(MODEL_PREFIX)}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
