"""Running Lightning: `run_lightning("fit" | "validate" | "test", args)`, LightningCLI over HandMeshModule and
FreiHANDDataModule, configured by YAML.

Every run gets `<trainer.default_root_dir>/checkpoints/{best,last}.ckpt`, written atomically (`callbacks`), and
loggers configured without a `save_dir` (TensorBoard, CSV) write into `trainer.default_root_dir` too. Only public
LightningCLI hooks are used: a checkpoint given by `--ckpt_path` is checked in `parse_arguments`, before Lightning
reads its hyper-parameters, so a corrupt or foreign file is a clear CheckpointError; resuming keeps the checkpoint's
network settings and does not load ImageNet weights again (`before_instantiate_classes`).
"""

from __future__ import annotations

import importlib
import inspect
import signal
import sys
import warnings
from pathlib import Path

import yaml
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

RUN_FOLDER = "<trainer.default_root_dir>"  # a logger's save_dir until the run folder is known
NAMED_CHECKPOINTS = ("last", "best", "hpc")  # --ckpt_path values Lightning resolves itself
# Other libraries' messages that carry no information for a handmesh run (messages are regular expressions)
QUIET_WARNINGS = (
    "LightningCLI's args parameter is intended",  # handmesh passes `args` while sys.argv has arguments, by design
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch's pytree, from Lightning's own _pytree.py
)
QUIET_INFO = ("litlogger",)  # Lightning's tip to install its hosted logger, printed on fit


class HandmeshCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.input_size", "data.input_size")  # one crop size for data and network
        parser.add_argument("--last_every_minutes", type=float, default=LAST_EVERY_MINUTES,
                            help="save checkpoints/last.ckpt every this many minutes of training (0: only at "
                                 "validation, at the end and when stopped by SIGTERM / SIGINT)")

    def parse_arguments(self, parser, args) -> None:
        """Parses; then a relative data folder missing here is the checkout's, and a checkpoint file is checked
        (a folder: the message lists its .ckpt files) before LightningCLI reads its hyper-parameters."""
        self.config = parser.parse_args(args)
        subcommand = self.config.subcommand
        config = self.config[subcommand]
        if config.data.root is not None:
            root = here_or_in_repo(config.data.root)
            if root != Path(config.data.root).absolute():
                print(f"handmesh {subcommand}: data {root} (no {config.data.root} in the current folder)",
                      file=sys.stderr)
            config.data.root = str(root)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path not in NAMED_CHECKPOINTS:
            config.ckpt_path = str(checkpoint_file(ckpt_path, "--ckpt_path"))
            metadata(read_checkpoint(config.ckpt_path), config.ckpt_path)  # CheckpointError unless handmesh's

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        minutes = config.get("last_every_minutes", LAST_EVERY_MINUTES)
        if minutes < 0:
            raise HandmeshError(f"--last_every_minutes is {minutes}, expected minutes >= 0 (0: no periodic save).")
        root_dir = config.trainer.default_root_dir or "."
        for logger in config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and init_args.get("save_dir") == RUN_FOLDER:
                init_args.save_dir = root_dir
        if config.get("ckpt_path"):
            config.model.pretrained = None  # the checkpoint's weights replace ImageNet's
        from handmesh.standin import ensure_standin  # here, not at the top: `fit --help` does not build the stand-in

        ensure_standin(config.model.mano_dir, command=f"handmesh {self.subcommand}")  # the module finds it there
        self.trainer_defaults["callbacks"] = default_callbacks(root_dir, minutes)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # keep a user-chosen plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def loggers_follow_run_folder(args: list[str]) -> list[str]:
    """After each `--config FILE` whose trainer.logger entries lack a `save_dir` their class takes, adds
    `--trainer.logger` with those entries' save_dir set to RUN_FOLDER (replaced by trainer.default_root_dir before the
    loggers are built); later arguments still override it."""
    out = []
    for index, argument in enumerate(args):
        out.append(argument)
        name, equals, value = argument.partition("=")
        if name in ("--config", "-c") and equals:
            out.extend(_logger_override(value))
        elif index > 0 and args[index - 1] in ("--config", "-c"):
            out.extend(_logger_override(argument))
    return out


def _logger_override(config_path: str) -> list[str]:
    try:
        config = yaml.safe_load(Path(config_path).read_text())
    except (OSError, yaml.YAMLError):
        return []  # LightningCLI reports it
    loggers = (config.get("trainer") or {}).get("logger") if isinstance(config, dict) else None
    entries = loggers if isinstance(loggers, list) else [loggers]
    if not all(isinstance(entry, dict) and "class_path" in entry for entry in entries):
        return []
    changed = False
    for entry in entries:
        init_args = entry.setdefault("init_args", {}) or {}
        entry["init_args"] = init_args
        if init_args.get("save_dir") is None and _takes_save_dir(entry["class_path"]):
            init_args["save_dir"], changed = RUN_FOLDER, True
    return [f"--trainer.logger={yaml.safe_dump(loggers, default_flow_style=True, width=1 << 16).strip()}"] \
        if changed else []


def _takes_save_dir(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or "pytorch_lightning.loggers"), name)
        return "save_dir" in inspect.signature(cls).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def run_lightning(name: str, args: list[str]) -> int:
    """Run LightningCLI subcommand `name` ("fit", "validate" or "test") with `args` (LightningCLI's spelling);
    returns the exit code."""
    from lightning_utilities.core import rank_zero  # its `log` carries Lightning's rank_zero_info messages

    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        quiet = _DropMessages(QUIET_INFO)
        rank_zero.log.addFilter(quiet)
        try:
            HandmeshCLI(
                HandMeshModule,
                FreiHANDDataModule,
                args=[name, *loggers_follow_run_folder(args)],
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
        finally:
            rank_zero.log.removeFilter(quiet)
    return 0


class _DropMessages:
    """A logging filter that drops records containing any of `fragments`."""

    def __init__(self, fragments: tuple[str, ...]):
        self.fragments = fragments

    def filter(self, record) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)
