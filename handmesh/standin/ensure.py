"""The explicit step that writes the stand-in: `ensure_standin()`, called by the commands that say they write it."""

from __future__ import annotations

import os
import sys

from handmesh.mano_file import DEFAULT_MANO_DIR, DEFAULT_STANDIN_DIR, STANDIN_VERSION, ManoSource, locate_mano_dir
from handmesh.standin.writer import write_standin


def ensure_standin(mano_dir: str | os.PathLike | None = None, default_dir: str | os.PathLike = DEFAULT_MANO_DIR,
                   standin_dir: str | os.PathLike = DEFAULT_STANDIN_DIR, command: str = "handmesh") -> ManoSource:
    """The hand model as `mano_file.resolve_mano_dir` finds it, after writing the stand-in into `standin_dir` when
    that is what it needs (no MANO found and no current stand-in there); says so in one line on stderr, starting
    with `command`. MANO, or an explicit folder, is used as it is."""
    source, missing = locate_mano_dir(mano_dir, default_dir, standin_dir)
    if missing is not None:
        write_standin(source.directory, progress=False)
        done = "wrote" if missing == "absent" else f"renewed (the copy there was {missing})"
        print(f"{command}: {done} the stand-in hand model (version {STANDIN_VERSION}; not MANO) in "
              f"{source.directory.absolute()}", file=sys.stderr)
    return source
