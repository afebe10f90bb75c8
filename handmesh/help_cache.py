"""`--help` of the LightningCLI commands, kept once built: building it imports Lightning, torch, timm and every class
the parser describes (seconds), yet its text depends only on the installed code.

The text is built at HELP_COLUMNS columns, whatever the terminal (so one build serves every terminal; `make setup`
builds them), and stored in user_cache_dir()/help/<command>-<flag>-<key>.txt, replacing older builds; the key hashes
the command line, the Python version, the stat of every handmesh source file and of every site-packages folder (an
install, upgrade or removal changes the folder's entries) and the environment variables that configure the parser.
Any change builds it afresh.
"""

from __future__ import annotations

import hashlib
import io
import os
import site
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

from handmesh.atomic import write_bytes_atomic
from handmesh.paths import user_cache_dir

PACKAGE = Path(__file__).resolve().parent
ENV_PREFIXES = ("JSONARGPARSE_", "PL_", "LIGHTNING_", "HANDMESH_")  # variables that can change the parser's text
HELP_COLUMNS = 80  # the width argparse wraps the text to


def help_key(argv: list[str]) -> str:
    """A hex digest of everything the help text of `argv` depends on."""
    parts = [repr(argv), sys.version]
    for path in sorted(PACKAGE.rglob("*.py")):
        stat = path.stat()
        parts.append(f"{path.relative_to(PACKAGE)} {stat.st_mtime_ns} {stat.st_size}")
    for folder in sorted({*site.getsitepackages(), site.getusersitepackages()}):
        if os.path.isdir(folder):
            parts.append(f"{folder} {os.stat(folder).st_mtime_ns}")
    parts += sorted(f"{name}={value}" for name, value in os.environ.items() if name.startswith(ENV_PREFIXES))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_help(name: str, argv: list[str], build: Callable[[], int]) -> int:
    """Print `handmesh NAME ARGV`'s help: from the cache when it holds this key, else from `build()` (which prints it
    and returns the exit status), then kept when the status was 0. -> the exit status."""
    kind = f"{name}-{'-'.join(argument.strip('-') for argument in argv)}"  # fit-help, fit-h
    path = user_cache_dir() / "help" / f"{kind}-{help_key([name, *argv])}.txt"
    try:
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return 0
    except (OSError, UnicodeDecodeError):
        pass
    print(f"handmesh {name}: building this help once (it is kept in {path.parent})", file=sys.stderr, flush=True)
    captured, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS)  # argparse reads the width through shutil.get_terminal_size
    try:
        with redirect_stdout(captured):
            status = build()
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    text = captured.getvalue()
    sys.stdout.write(text)
    if status == 0 and text:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f"{kind}-*.txt"):  # built by code that is no longer installed
                stale.unlink(missing_ok=True)
            write_bytes_atomic(path, text.encode("utf-8"), sync=False)
        except OSError:  # a read-only home: the help was printed, the next one is built again
            pass
    return status
