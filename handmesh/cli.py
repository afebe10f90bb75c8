"""The `handmesh` command: one subcommand per module in `handmesh/commands/`, imported only when used.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. LightningCLI commands
(fit/validate/test/predict) hand their arguments to Lightning untouched.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

from handmesh.cli_values import VERBOSE_ENV
from handmesh.errors import HandmeshError, message

# name -> (module under handmesh.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "standin": ("standin", "write the stand-in hand model in MANO's file format"),
    "render-hand": ("render_hand", "render a posed hand from any MANO-format model to a PNG"),
    "synth": ("synth", "render a synthetic dataset in FreiHAND's exact layout"),
    "view": ("view", "contact sheet of a FreiHAND-format folder with keypoints and mesh outlines"),
    "fit": ("lightning", "train (LightningCLI)"),
    "validate": ("lightning", "validate a checkpoint (LightningCLI)"),
    "test": ("lightning", "test a checkpoint (LightningCLI)"),
    "predict": ("predict", "write the evaluation split's predictions as an official pred.json"),
    "evaluate": ("evaluate", "score a pred.json with the official FreiHAND protocol"),
    "export": ("export", "export a checkpoint to ONNX"),
    "bench": ("bench", "measure speed: model, data, eval, demo"),
    "demo": ("demo", "live webcam / video / image demo"),
    "serve": ("serve", "the demo in a browser (Gradio): live webcam, images, videos"),
}
PASSTHROUGH = {"fit", "validate", "test"}  # argument parsing belongs to LightningCLI


def _load(name: str):
    return importlib.import_module(f"handmesh.commands.{COMMANDS[name][0]}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="handmesh", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="messages with their details (also after COMMAND)")
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose, argv = True, argv[1:]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            close = difflib.get_close_matches(argv[0], COMMANDS, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            print(f"handmesh: unknown command {argv[0]!r}; {hint}expected one of: {', '.join(COMMANDS)} "
                  "(`handmesh --help` describes them)", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    try:
        module = _load(name)
        if name in PASSTHROUGH:
            if verbose:
                os.environ[VERBOSE_ENV] = "1"
            return int(module.run_lightning(name, rest) or 0)
        command_parser = argparse.ArgumentParser(prog=f"handmesh {name}", description=COMMANDS[name][1])
        module.add_arguments(command_parser)
        command_parser.add_argument("-v", "--verbose", action="store_true", help="messages with their details")
        args = command_parser.parse_args(rest)
        if verbose or args.verbose:
            os.environ[VERBOSE_ENV] = "1"
        return int(module.run(args) or 0)
    except HandmeshError as error:
        print(f"handmesh {name}: error: {message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"handmesh {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
