"""`handmesh fit | validate | test`: LightningCLI over HandMeshModule and FreiHANDDataModule, configured by YAML.

    handmesh fit --config configs/quickstart.yaml [--data.root DIR] [--data.batch_size N] [--mano-dir DIR]
    handmesh fit --config configs/quickstart.yaml --ckpt_path last        # resume exactly
    handmesh validate --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/best.ckpt
    handmesh fit --config configs/freihand_fastvit_ma36.yaml --trainer.devices 8 --trainer.num_nodes 2   # DDP

Every run gets `<trainer.default_root_dir>/checkpoints/{best,last}.ckpt`, written atomically. `fit` stopped by SIGTERM
or Ctrl+C (SIGINT) saves last.ckpt of the step it reached and exits with 143 / 130; last.ckpt is also refreshed every
`--last_every_minutes` (default 30, 0: off) of training, so a SIGKILL loses at most that much. Without MANO, the
stand-in is written first (and the command says so). The runner is `handmesh.training.run_lightning`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from handmesh.paths import here_or_in_repo

# short top-level spellings of nested options (predict, synth and view spell theirs this way)
ALIASES = {"--mano-dir": "--model.mano_dir", "--data-root": "--data.root", "--batch-size": "--data.batch_size"}


def expand_aliases(argv: list[str]) -> list[str]:
    """`--mano-dir X` / `--mano-dir=X` -> `--model.mano_dir X` (and the other ALIASES); a relative `--config` file
    missing in the current folder is the checkout's (configs/...), named in full."""
    expanded = []
    for index, argument in enumerate(argv):
        name, equals, value = argument.partition("=")
        if name in ALIASES:
            expanded.append(ALIASES[name] + equals + value)
        elif name in ("--config", "-c") and (equals or index + 1 < len(argv)):
            expanded.append(name + equals + _config_path(value) if equals else argument)
        elif index > 0 and argv[index - 1] in ("--config", "-c"):
            expanded.append(_config_path(argument))
        else:
            expanded.append(argument)
    return expanded


def _config_path(path: str) -> str:
    resolved = here_or_in_repo(path)
    if resolved != Path(path).expanduser().absolute():
        print(f"handmesh: config {resolved} (no {path} in the current folder)", file=sys.stderr)
    return str(resolved)


def run_lightning(name: str, argv: list[str]) -> int:
    """`handmesh NAME ARGV` for NAME in fit, validate, test: the aliases expanded, then the library's runner; the bare
    `--help` from its cache (`handmesh.help_cache`) when it is there."""
    if argv in (["--help"], ["-h"]):
        from handmesh.help_cache import cached_help

        return cached_help(name, argv, lambda: _run(name, argv))
    return _run(name, expand_aliases(argv))


def _run(name: str, argv: list[str]) -> int:
    from handmesh.training import run_lightning

    return run_lightning(name, argv)
