"""The stand-in hand model: a generated hand in MANO's exact file format, so everything runs without MANO.

`build_standin(side)` returns the dict a MANO pickle holds; `write_standin(out_dir)` writes MANO_RIGHT.pkl and
MANO_LEFT.pkl. Files carry the extra key `handmesh_standin` so every tool can tell them from MANO.
"""

from handmesh.standin.writer import DEFAULT_OUT_DIR, STANDIN_KEY, build_standin, write_standin

__all__ = ["DEFAULT_OUT_DIR", "STANDIN_KEY", "build_standin", "write_standin"]
