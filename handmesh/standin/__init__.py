"""The stand-in hand model: a generated hand in MANO's exact file format, so everything runs without MANO.

`build_standin(side)` returns the dict a MANO pickle holds; `write_standin(out_dir)` writes MANO_RIGHT.pkl and
MANO_LEFT.pkl; `ensure_standin(mano_dir)` writes them where `mano_file.resolve_mano_dir` looks when it finds no MANO.
Files carry the extra key `mano_file.STANDIN_KEY` so every tool can tell them from MANO, and
`mano_file.STANDIN_VERSION_KEY` (an int, `mano_file.STANDIN_VERSION`) so copies written by another handmesh are
recognised and renewed.
"""

from handmesh.standin.ensure import ensure_standin
from handmesh.standin.writer import build_standin, write_standin

__all__ = ["build_standin", "ensure_standin", "write_standin"]
