"""A bench's result as data: the measurements with the machine, the software and the settings that produced them.

    record = make_record("model", result, {"what": "model", "quick": False}, load_start, git_commit())
    path = write_record(record, "results")   # results/model-amd-epyc-avx2-torch2.14.1.json, written atomically
    read_records("results")                  # -> [BenchRecord], sorted by file name

A file is named by what was measured, the machine and the torch version (as timm names its benchmark files), so a
rerun on the same machine and software replaces its file, and a run elsewhere adds one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from handmesh.atomic import write_bytes_atomic
from handmesh.errors import HandmeshError

FORMAT_VERSION = 1
# CPU flags that change which kernels torch, oneDNN and ONNX Runtime use (widest first: the file name's ISA level)
ISA_LEVELS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))
FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("torch", "onnxruntime", "timm", "numpy", "numba")


class ResultsError(HandmeshError):
    """A results file or folder is missing, malformed, or not of this format."""


@dataclass(frozen=True)
class Machine:
    cpu: str  # the model name /proc/cpuinfo gives, else platform's
    isa: str  # widest vector extension among ISA_LEVELS, e.g. "avx2"; "baseline" when none
    logical_cpus: int  # os.cpu_count(): every CPU the system has
    usable_cpus: int  # os.sched_getaffinity(0): the CPUs this process may run on
    flags: tuple[str, ...]  # those of FLAGS the CPU has
    system: str  # e.g. "Linux x86_64"

    @property
    def slug(self) -> str:
        """`amd-epyc-avx2`: the CPU model and ISA level, lower case, for file names."""
        words = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*", " ", self.cpu.lower())
        return "-".join(re.findall(r"[a-z0-9]+", words)[:6] + [self.isa])


@dataclass(frozen=True)
class Load:
    """The system's load averages (runnable processes over 1, 5, 15 minutes) before and after the bench."""

    start: tuple[float, float, float] | None
    end: tuple[float, float, float] | None
    usable_cpus: int

    @property
    def under_load(self) -> bool | None:
        """More runnable processes than usable CPUs at either end: wall-clock timings are inflated (ratios hold up
        better, as the benches time their candidates interleaved). None where the OS gives no load average."""
        ones = [average[0] for average in (self.start, self.end) if average is not None]
        return max(ones) > self.usable_cpus if ones else None


@dataclass(frozen=True)
class BenchRecord:
    what: str  # the bench part: model, data, eval, demo, serve
    date: str  # UTC, ISO 8601, when the bench finished
    settings: dict  # the command's settings: what, quick, torch threads
    machine: Machine
    software: dict[str, str | None]  # python and PACKAGES -> version (None: not installed)
    load: Load
    git_commit: str | None  # the repository's HEAD, "+dirty" appended when the tree had changes; None outside git
    measurements: dict = field(default_factory=dict)  # the part's flat result (JSON has no NaN: those are null)
    format_version: int = FORMAT_VERSION

    @property
    def file_name(self) -> str:
        quick = "-quick" if self.settings.get("quick") else ""
        torch_version = re.sub(r"[^0-9A-Za-z.]+", "-", self.software.get("torch") or "none")
        return f"{self.what}{quick}-{self.machine.slug}-torch{torch_version}.json"

    def to_json(self) -> str:
        payload = dataclasses.asdict(self)
        payload["under_load"] = self.load.under_load
        return json.dumps(json_safe(payload), indent=1, default=str) + "\n"


def json_safe(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            text = cpuinfo.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def machine_info() -> Machine:
    cpuinfo = _cpuinfo()
    has = set(cpuinfo.get("flags", "").split())
    cpu = cpuinfo.get("model name") or platform.processor() or platform.machine() or "unknown"
    isa = next((level for flag, level in ISA_LEVELS if flag in has), "baseline")
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return Machine(cpu=" ".join(cpu.split()), isa=isa, logical_cpus=logical, usable_cpus=usable,
                   flags=tuple(flag for flag in FLAGS if flag in has),
                   system=f"{platform.system()} {platform.machine()}")


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def load_average() -> tuple[float, float, float] | None:
    try:
        return tuple(round(value, 2) for value in os.getloadavg())
    except (AttributeError, OSError):
        return None


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
    """HEAD of the git checkout holding `folder` (default: this package's) with "+dirty" when tracked files have
    uncommitted changes; None outside a checkout or without git."""
    folder = Path(__file__).resolve().parent if folder is None else Path(folder)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def make_record(what: str, measurements: dict, settings: dict, load_start: tuple | None,
                commit: str | None) -> BenchRecord:
    """The record of a bench that has just finished: `load_start` and `commit` (`git_commit()`) were read before it
    started; the machine, the software, the date and the load at the end are read here."""
    machine = machine_info()
    return BenchRecord(
        what=what, date=datetime.now(timezone.utc).isoformat(timespec="seconds"), settings=dict(settings),
        machine=machine, software=software_versions(),
        load=Load(start=load_start, end=load_average(), usable_cpus=machine.usable_cpus),
        git_commit=commit, measurements=dict(measurements),
    )


def results_folder(folder: str | os.PathLike) -> Path:
    """`folder`, created if missing; ResultsError when a file is in the way (checked before a bench runs)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ResultsError(f"--out: expected a folder for the results files, found a file at {folder}; "
                           "give a folder path (it is created if missing)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_record(record: BenchRecord, folder: str | os.PathLike) -> Path:
    """Write `record` as JSON into `folder` (created if needed) under its file name, atomically; returns the path."""
    path = results_folder(folder) / record.file_name
    write_bytes_atomic(path, record.to_json().encode())
    return path


def record_from_dict(payload: dict, source: str = "record") -> BenchRecord:
    """The inverse of `BenchRecord.to_json` (after json.loads); ResultsError when a field is missing or mistyped."""
    try:
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
        machine = dict(payload["machine"], flags=tuple(payload["machine"]["flags"]))
        load = payload["load"]
        return BenchRecord(
            what=str(payload["what"]), date=str(payload["date"]), settings=dict(payload["settings"]),
            machine=Machine(**machine), software=dict(payload["software"]),
            load=Load(start=tuple(load["start"]) if load["start"] else None,
                      end=tuple(load["end"]) if load["end"] else None, usable_cpus=int(load["usable_cpus"])),
            git_commit=payload["git_commit"], measurements=dict(payload["measurements"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ResultsError(f"{source}: expected a `handmesh bench --out` results file (format {FORMAT_VERSION}), "
                           f"found {type(error).__name__}: {error}; rewrite it with `handmesh bench --out`") from None


def read_records(folder: str | os.PathLike) -> list[BenchRecord]:
    """Every results file (*.json) in `folder`, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsError(f"expected a folder of `handmesh bench --out` results files, found no folder at {folder}")
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ResultsError(f"{path}: expected a JSON results file, found {error}; rewrite it with "
                               "`handmesh bench --out`") from None
        records.append(record_from_dict(payload if isinstance(payload, dict) else {}, str(path)))
    return records
