"""FreiHAND data: the Dataset (`freihand`), annotation caches (`annotations`), crops and augmentation (`transforms`),
the LightningDataModule (`datamodule`) and the synthetic FreiHAND-format generator (`synth`).

The names below are imported on first use (importing pytorch_lightning or the MANO layer takes seconds), so
`from handmesh.data import FreiHANDDataset` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FreiHANDDataset": "handmesh.data.freihand",
    "Augmentation": "handmesh.data.transforms",
    "FreiHANDDataModule": "handmesh.data.datamodule",
    "load_annotation": "handmesh.data.annotations",
    "synthesize": "handmesh.data.synth",
    "decode_mano": "handmesh.data.synth",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'handmesh.data' has no attribute {name!r}")
