"""`handmesh bench`: speed of the model, the data pipeline, the evaluation and the demo, each from its own module.

    handmesh bench --what model --json          # one JSON object: train_time_ms, reparam_ms, best_ms, ...
    handmesh bench --what all --quick           # every part, smaller and shorter, as readable tables
    handmesh bench --what eval --out results/   # also results/eval-<cpu>-<isa>-torch<version>.json (a BenchRecord)
    handmesh bench --table results/             # the README's speed table, rendered from the results files

Each part is `handmesh.bench.<part>.run(quick) -> dict` (and optionally `format_table(result) -> str`). A part that
is missing or fails is reported (with the reason) and the others still run; the exit status is then 1.
With --json, one part prints its own flat object; `--what all` prints {"model": {...}, "data": {...}, ...}, a failed
part as {"error": "..."}. With --out, each part that ran is also written as a results file
(`handmesh.bench.record`: the measurements, the machine, the software versions, the load, the date and the commit).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import traceback
from pathlib import Path

from handmesh.bench.record import (
    git_commit,
    json_safe,
    load_average,
    make_record,
    read_records,
    results_folder,
    write_record,
)
from handmesh.bench.table import speed_table_block

PARTS = ("model", "data", "eval", "demo", "serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--what", default="all", choices=PARTS + ("all",), help="which part to measure (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true",
                        help="smaller models and fewer runs: a smoke test, not numbers to quote")
    parser.add_argument("--out", metavar="DIR", help="also write each part's result as a JSON file into DIR")
    parser.add_argument("--table", metavar="DIR",
                        help="measure nothing: print the README's speed table rendered from the results files in DIR")


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


def run(args: argparse.Namespace) -> int:
    if args.table is not None:
        print(speed_table_block(read_records(args.table)))
        return 0
    parts = PARTS if args.what == "all" else (args.what,)
    if set(parts) - {"eval"}:  # the eval bench writes its own stand-in; the others use the hand model found here
        from handmesh.standin import ensure_standin

        ensure_standin(command="handmesh bench")
    results: dict[str, dict] = {}
    failed = False
    commit = None
    if args.out is not None:
        results_folder(args.out)  # a bad --out fails now, not after the measurements
        commit = git_commit()  # the code that runs: read before anything changes
    for part in parts:
        load_start = load_average()
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
        if args.out is not None:
            record = make_record(part, result, {"what": part, "quick": args.quick}, load_start, commit)
            print(f"handmesh bench: wrote {write_record(record, args.out)}", file=sys.stderr)
    if args.json:
        payload = results[parts[0]] if len(parts) == 1 else results
        if len(parts) == 1 and "error" in payload:
            payload = {"part": parts[0], **payload}
        print(json.dumps(json_safe(payload), default=str, indent=1))
    return 1 if failed else 0
