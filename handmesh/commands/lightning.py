"""`handmesh fit | validate | test`: LightningCLI over HandMeshModule and FreiHANDDataModule, configured by YAML.

    handmesh fit --config configs/quickstart.yaml [--data.root DIR] [--data.batch_size N] [--mano-dir DIR]
    handmesh fit --config configs/quickstart.yaml --ckpt_path last        # resume exactly
    handmesh validate --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/best.ckpt
    handmesh fit --config configs/freihand_fastvit_ma36.yaml --trainer.devices 8 --trainer.num_nodes 2   # DDP

Every run gets `<trainer.default_root_dir>/checkpoints/{best,last}.ckpt`, written atomically. `fit` stopped by SIGTERM
or Ctrl+C (SIGINT) saves last.ckpt of the step it reached and exits with 143 / 130; last.ckpt is also refreshed every
`--last_every_minutes` (default 30, 0: off) of training, so a SIGKILL loses at most that much.
"""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from handmesh.callbacks import LAST_EVERY_MINUTES, AtomicCheckpointIO, default_callbacks
from handmesh.checkpoints import metadata, read_checkpoint
from handmesh.cli_values import checkpoint_file
from handmesh.data.datamodule import FreiHANDDataModule
from handmesh.errors import HandmeshError
from handmesh.lit_module import HandMeshModule
from handmesh.paths import here_or_in_repo

# short top-level spellings of nested options (predict, synth and view spell theirs this way)
ALIASES = {"--mano-dir": "--model.mano_dir", "--data-root": "--data.root", "--batch-size": "--data.batch_size"}


class HandmeshCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.input_size", "data.input_size")  # one crop size for data and network
        parser.add_argument("--last_every_minutes", type=float, default=LAST_EVERY_MINUTES,
                            help="save checkpoints/last.ckpt every this many minutes of training (0: only at "
                                 "validation, at the end and when stopped by SIGTERM / SIGINT)")

    def parse_arguments(self, parser, args) -> None:
        """Parses, then gives loggers configured without a `save_dir` (TensorBoard, CSV) the run folder,
        `trainer.default_root_dir`, before checking the configuration."""
        self.config = parser.parse_args(args, _skip_validation=True)
        config = self.config[self.config.subcommand]
        if config.data.root is not None:  # a relative data folder missing here is the checkout's, when it has one
            root = here_or_in_repo(config.data.root)
            if root != Path(config.data.root).absolute():
                print(f"handmesh {self.config.subcommand}: data {root} (no {config.data.root} in the current folder)",
                      file=sys.stderr)
            config.data.root = str(root)
        trainer = config.trainer
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and "save_dir" in init_args and init_args.save_dir is None:
                init_args.save_dir = trainer.default_root_dir or "."
        try:
            parser.validate(self.config)
        except (TypeError, KeyError) as error:
            parser.error(str(error))

    def _parse_ckpt_path(self) -> None:
        """Check a checkpoint file before LightningCLI reads its hyper-parameters, so a corrupt or foreign file is a
        clear CheckpointError. Its saved network settings become the model's; ImageNet weights are not loaded again
        (the checkpoint's weights replace them)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
            checkpoint_file(ckpt_path, "--ckpt_path")  # a folder: say which .ckpt files it holds
        if ckpt_path and Path(ckpt_path).is_file():
            metadata(read_checkpoint(ckpt_path), ckpt_path)
        super()._parse_ckpt_path()
        if ckpt_path:
            self.config[subcommand].model.pretrained = None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        minutes = config.get("last_every_minutes", LAST_EVERY_MINUTES)
        if minutes < 0:
            raise HandmeshError(f"--last_every_minutes is {minutes}, expected minutes >= 0 (0: no periodic save).")
        self.trainer_defaults["callbacks"] = default_callbacks(config.trainer.default_root_dir or ".", minutes)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # keep a user-chosen plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


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
    """Run LightningCLI subcommand `name` ("fit", "validate" or "test") with `argv`; returns the exit code."""
    with warnings.catch_warnings():
        # LightningCLI warns whenever `args` is given while sys.argv has arguments: here that is by design
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            HandmeshCLI(
                HandMeshModule,
                FreiHANDDataModule,
                args=[name, *expand_aliases(argv)],
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": "handmesh", "description": "Train and evaluate the hand mesh model."},
                auto_configure_optimizers=False,
            )
        except SIGTERMException as stop:  # InterruptCheckpoint sets 128 + the signal and says where last.ckpt is
            return stop.code if isinstance(stop.code, int) else 128 + signal.SIGTERM
        except SystemExit as stop:  # argument errors (status 2) and --help / --print_config (status 0)
            if isinstance(stop.__context__, KeyboardInterrupt):  # Lightning's exit(1) after Ctrl+C outside training
                print(f"handmesh {name}: interrupted", file=sys.stderr)
                return 128 + signal.SIGINT
            return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    return 0
