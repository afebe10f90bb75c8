"""Session fixtures shared by the test files: the stand-in hand model and a tiny synthetic FreiHAND folder.

Every test sees the stand-in through $HANDMESH_MANO_DIR, so the suite never depends on (or writes next to) a user's
own MANO files in data/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handmesh.mano_file import MANO_DIR_ENV

TINY_TRAIN, TINY_EVAL = 6, 3  # unique training samples (x 4 versions) and evaluation samples of `tiny_root`


@pytest.fixture(scope="session", autouse=True)
def standin_dir(tmp_path_factory) -> Path:
    """The stand-in MANO files, written once per session; $HANDMESH_MANO_DIR points at them."""
    from handmesh.standin import write_standin

    directory = tmp_path_factory.mktemp("standin")
    write_standin(directory, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MANO_DIR_ENV, str(directory))
        yield directory


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, standin_dir) -> Path:
    """A FreiHAND-format folder rendered by `handmesh synth`: TINY_TRAIN x 4 training and TINY_EVAL evaluation
    images."""
    from handmesh.data.synth import synthesize

    root = tmp_path_factory.getbasetemp() / "tiny_freihand"
    synthesize(standin_dir, root, TINY_TRAIN, TINY_EVAL, seed=0, progress=False, log=None)
    return root
