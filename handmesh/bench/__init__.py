"""Speed measurements behind `handmesh bench`: one module per part, each with `run(quick) -> dict`."""
