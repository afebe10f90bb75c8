"""`handmesh bench`: speed of the model, the data pipeline, the evaluation and the demo, each from its own module.

    handmesh bench --what model --json          # one JSON object: train_time_ms, reparam_ms, best_ms, ...
    handmesh bench --what all --quick           # every part, smaller and shorter, as readable tables

Each part is `handmesh.bench.<part>.run(quick) -> dict` (and optionally `format_table(result) -> str`). A part that
is missing or fails is reported (with the reason) and the others still run; the exit status is then 1.
With --json, one part prints its own flat object; `--what all` prints {"model": {...}, "data": {...}, ...}, a failed
part as {"error": "..."}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import traceback
from pathlib import Path

PARTS = ("model", "data", "eval", "demo", "serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--what", default="all", choices=PARTS + ("all",), help="which part to measure (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true",
                        help="smaller models and fewer runs: a smoke test, not numbers to quote")


def _reason(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}{where}"


def run_part(part: str, quick: bool) -> tuple[dict | None, str | None, object]:
    """(result, None, module) when the part ran, (None, reason, module or None) when it is missing or failed."""
    try:
        module = importlib.import_module(f"handmesh.bench.{part}")
    except ModuleNotFoundError as error:
        if error.name == f"handmesh.bench.{part}":
            return None, f"not available: handmesh/bench/{part}.py does not exist in this version", None
        return None, f"cannot import handmesh.bench.{part}: {_reason(error)}", None
    except Exception as error:  # noqa: BLE001 - a broken part must not stop the others
        return None, f"cannot import handmesh.bench.{part}: {_reason(error)}", None
    try:
        result = module.run(quick=quick)
    except Exception as error:  # noqa: BLE001 - reported, the other parts still run
        return None, f"failed: {_reason(error)}", module
    if not isinstance(result, dict):
        return None, f"returned {type(result).__name__}, expected a dict", module
    return result, None, module


def _format_value(value) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:,.2f}"
    return str(value)


def generic_table(result: dict) -> str:
    width = max((len(key) for key in result), default=0)
    return "\n".join(f"  {key.ljust(width)}  {_format_value(value)}" for key, value in result.items())


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(args: argparse.Namespace) -> int:
    parts = PARTS if args.what == "all" else (args.what,)
    if set(parts) - {"eval"}:  # the eval bench writes its own stand-in; the others use the hand model found here
        from handmesh.standin import ensure_standin

        ensure_standin(command="handmesh bench")
    results: dict[str, dict] = {}
    failed = False
    for part in parts:
        result, reason, module = run_part(part, args.quick)
        if reason is not None:
            failed = True
            results[part] = {"error": reason}
            print(f"handmesh bench: part {part!r} {reason}", file=sys.stderr)
            continue
        results[part] = result
        if not args.json:
            formatter = getattr(module, "format_table", None)
            print(f"\n== {part} ==")
            print(formatter(result) if callable(formatter) else generic_table(result))
    if args.json:
        payload = results[parts[0]] if len(parts) == 1 else results
        if len(parts) == 1 and "error" in payload:
            payload = {"part": parts[0], **payload}
        print(json.dumps(_finite(payload), default=str, indent=1))
    return 1 if failed else 0
