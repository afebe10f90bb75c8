"""MANO loading (original chumpy pickle without chumpy, converted copies, bad files) and the MANO layer."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from handmesh.errors import ManoFileError
from handmesh.geometry import axis_angle_to_rotmat
from handmesh.joints import FINGERTIP_VERTEX_IDS, FREIHAND_FROM_MANO, MANO_PARENTS
from handmesh.mano import ManoLayer
from handmesh.mano_file import STANDIN_VERSION, STANDIN_VERSION_KEY, load_mano_file, resolve_mano_dir
from handmesh.standin import ensure_standin

RNG = np.random.default_rng(0)


def _toy_model_dict() -> dict:
    """A MANO-shaped dict whose joint i is exactly vertex 10 * i (one-hot J_regressor), skinned rigidly to joint 0."""
    v_template = RNG.normal(scale=0.05, size=(778, 3))
    regressor = np.zeros((16, 778))
    regressor[np.arange(16), 10 * np.arange(16)] = 1.0
    weights = np.zeros((778, 16))
    weights[:, 0] = 1.0
    return {
        "v_template": v_template,
        "f": RNG.integers(0, 778, size=(1538, 3)).astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "kintree_table": np.array([[4294967295, *MANO_PARENTS[1:]], list(range(16))], dtype=np.int64),
        "weights": weights,
        "shapedirs": RNG.normal(scale=1e-3, size=(778, 3, 10)),
        "posedirs": np.zeros((778, 3, 135)),
        "hands_components": np.eye(45),
        "hands_mean": RNG.normal(scale=0.1, size=45),
        "hands_coeffs": RNG.normal(size=(5, 45)),
        "J": regressor @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def _write_chumpy_style(path, model: dict) -> None:
    """Pickle like the original MANO file: arrays wrapped in objects of a class from a module named `chumpy`."""
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # what chumpy's pickled state looks like: the array under 'x'
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, chumpy_ch
    try:
        chumpy_keys = ("v_template", "shapedirs", "J", "weights", "posedirs")
        wrapped = {k: Ch(v) if k in chumpy_keys else v for k, v in model.items()}
        with open(path, "wb") as handle:
            pickle.dump(wrapped, handle, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def test_chumpy_pickle_loads_without_chumpy(tmp_path):
    model = _toy_model_dict()
    _write_chumpy_style(tmp_path / "MANO_RIGHT.pkl", model)
    assert "chumpy" not in sys.modules
    loaded = load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(loaded.v_template, model["v_template"])
    np.testing.assert_array_equal(loaded.J_regressor, model["J_regressor"].toarray())
    assert loaded.parents.tolist() == list(MANO_PARENTS)
    assert not loaded.is_standin
    assert "chumpy" not in sys.modules


def test_converted_pickle_loads(tmp_path):
    model = _toy_model_dict()
    model["J_regressor"] = model["J_regressor"].toarray()  # converted copies hold dense arrays
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(model, handle)
    loaded = load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(loaded.hands_mean, model["hands_mean"])
    assert loaded.faces.shape == (1538, 3) and loaded.faces.dtype == np.int64


def test_keypoints_in_freihand_order(tmp_path):
    """At the rest pose joint i is vertex 10 i; FreiHAND keypoint k is MANO joint / fingertip FREIHAND_FROM_MANO[k]."""
    model = _toy_model_dict()
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(model, handle)
    layer = ManoLayer(load_mano_file(tmp_path / "MANO_RIGHT.pkl"))
    out = layer(torch.eye(3).expand(1, 16, 3, 3))
    v = model["v_template"]
    expected_rows = [v[10 * i] for i in range(16)] + [v[i] for i in FINGERTIP_VERTEX_IDS]
    expected = np.array([expected_rows[src] for src in FREIHAND_FROM_MANO])
    # Hand-checked anchors: keypoint 1 (thumb MCP) is MANO joint 13, keypoint 4 (thumb tip) is vertex 744.
    np.testing.assert_allclose(expected[1], v[130])
    np.testing.assert_allclose(expected[4], v[744])
    np.testing.assert_allclose(out.keypoints[0].numpy(), expected, atol=1e-6)
    assert out.vertices.shape == (1, 778, 3) and out.kinematic_joints.shape == (1, 16, 3)


def test_global_rotation_rotates_rigid_mesh(tmp_path):
    model = _toy_model_dict()
    model["shapedirs"] = np.zeros((778, 3, 10))
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(model, handle)
    layer = ManoLayer(load_mano_file(tmp_path / "MANO_RIGHT.pkl"))
    pose = torch.zeros(1, 16, 3)
    pose[0, 0] = torch.tensor([0.0, 0.0, np.pi / 2])
    out = layer(axis_angle_to_rotmat(pose))
    root = torch.as_tensor(model["v_template"][0], dtype=torch.float32)
    rotation = axis_angle_to_rotmat(pose[0, 0])
    expected = (torch.as_tensor(model["v_template"], dtype=torch.float32) - root) @ rotation.T + root
    torch.testing.assert_close(out.vertices[0], expected, atol=1e-5, rtol=0)


def test_pose_from_axis_angle_adds_hands_mean(tmp_path):
    model = _toy_model_dict()
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(model, handle)
    layer = ManoLayer(load_mano_file(tmp_path / "MANO_RIGHT.pkl"))
    rotations = layer.pose_from_axis_angle(torch.zeros(1, 48))
    expected = axis_angle_to_rotmat(torch.as_tensor(model["hands_mean"], dtype=torch.float32).reshape(15, 3))
    torch.testing.assert_close(rotations[0, 1:], expected)
    torch.testing.assert_close(rotations[0, 0], torch.eye(3))


def test_missing_file_names_path_and_how_to_get_mano(tmp_path):
    with pytest.raises(ManoFileError, match=r"mano\.is\.tue\.mpg\.de") as info:
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    assert str(tmp_path) in str(info.value)


def test_truncated_file_is_a_clear_error(tmp_path):
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(_toy_model_dict(), handle)
    data = (tmp_path / "MANO_RIGHT.pkl").read_bytes()
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ManoFileError, match="truncated"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")


def test_foreign_pickle_is_refused(tmp_path):
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump({"weights": [1, 2, 3]}, handle)
    with pytest.raises(ManoFileError, match="lacks the MANO keys"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")


class _Boobytrap:
    def __reduce__(self):
        return (open, ("/tmp/handmesh-pwned", "w"))


def test_booby_trapped_pickle_executes_nothing(tmp_path):
    target = tmp_path / "MANO_RIGHT.pkl"
    with open(target, "wb") as handle:
        pickle.dump({"v_template": _Boobytrap()}, handle)
    with pytest.raises(ManoFileError, match="refusing to load"):
        load_mano_file(target)
    import os

    assert not os.path.exists("/tmp/handmesh-pwned")


def test_explicit_mano_dir_without_files_is_an_error(tmp_path):
    with pytest.raises(ManoFileError, match="no MANO_RIGHT.pkl"):
        resolve_mano_dir(tmp_path / "nowhere")


def test_real_mano_in_default_dir_wins_over_standin(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDMESH_MANO_DIR", raising=False)
    models = tmp_path / "mano" / "mano_v1_2" / "models"
    models.mkdir(parents=True)
    _write_chumpy_style(models / "MANO_RIGHT.pkl", _toy_model_dict())
    source = resolve_mano_dir(default_dir=tmp_path / "mano", standin_dir=tmp_path / "standin")
    assert source.directory == models and not source.is_standin
    assert not (tmp_path / "standin").exists()


def test_environment_variable_is_used(tmp_path, monkeypatch):
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(_toy_model_dict(), handle)
    monkeypatch.setenv("HANDMESH_MANO_DIR", str(tmp_path))
    source = resolve_mano_dir(default_dir=tmp_path / "absent")
    assert source.directory == tmp_path and "HANDMESH_MANO_DIR" in source.reason


def test_standin_left_and_right_mirror(standin_dir):
    right, left = ManoLayer.from_dir(standin_dir, "right"), ManoLayer.from_dir(standin_dir, "left")
    assert (right.side, left.side) == ("right", "left") and right.is_standin and left.is_standin
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    pose = axis_angle_to_rotmat(torch.randn(2, 16, 3, generator=torch.Generator().manual_seed(0)) * 0.3)
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(1))
    # A reflection conjugates rotations: R_left = M R_right M.
    out_right, out_left = right(pose, betas), left(mirror @ pose @ mirror, betas)
    torch.testing.assert_close(out_left.vertices, out_right.vertices @ mirror, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_left.keypoints, out_right.keypoints @ mirror, atol=1e-5, rtol=0)


def test_left_file_where_right_was_asked_is_refused(standin_dir, tmp_path):
    (tmp_path / "MANO_RIGHT.pkl").write_bytes((standin_dir / "MANO_LEFT.pkl").read_bytes())
    with pytest.raises(ManoFileError, match="holds a left hand, but a right hand was asked for"):
        ManoLayer.from_dir(tmp_path, "right")


def test_standin_matches_smplx_mano(standin_dir):
    """Our layer (flat_hand_mean=True) agrees with smplx.MANO on the same file and parameters."""
    import smplx

    reference = smplx.MANO(str(standin_dir), is_rhand=True, use_pca=False, flat_hand_mean=True)
    layer = ManoLayer.from_dir(standin_dir, "right")
    generator = torch.Generator().manual_seed(2)
    pose, betas = torch.randn(3, 48, generator=generator) * 0.3, torch.randn(3, 10, generator=generator)
    expected = reference(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=betas).vertices
    ours = layer(layer.pose_from_axis_angle(pose, add_hands_mean=False), betas).vertices
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_regressor_of_the_wrong_shape_or_with_rows_not_summing_to_one_is_refused(tmp_path):
    model = _toy_model_dict()
    model["J_regressor"] = scipy.sparse.csc_matrix(np.full((21, 778), 1.0 / 778))
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(model, handle)
    with pytest.raises(ManoFileError, match=r"shape \(21, 778\), expected \(16, 778\)"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    regressor = np.zeros((16, 778))
    regressor[np.arange(16), 10 * np.arange(16)] = 1.0
    regressor[5, 3] = 0.01  # joint 5's row sums to 1.01
    model["J_regressor"] = scipy.sparse.csc_matrix(regressor)
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(model, handle)
    with pytest.raises(ManoFileError, match=r"sum to 1 .*joint 5: 1\.01.*MANO's original file"):
        load_mano_file(tmp_path / "MANO_RIGHT.pkl")
    from handmesh.cli import main

    assert main(["render-hand", "--mano-dir", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2


def _age_standin(directory, version: int | None) -> None:
    """Rewrite the stand-in files as an earlier handmesh wrote them: another version, or (None) no version key."""
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
        data = pickle.loads((directory / name).read_bytes())
        data.pop(STANDIN_VERSION_KEY)
        if version is not None:
            data[STANDIN_VERSION_KEY] = version
        (directory / name).write_bytes(pickle.dumps(data, protocol=2))


def _copy_standin(source, target):
    target.mkdir()
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_resolving_writes_nothing_and_says_how_to_write_the_standin(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDMESH_MANO_DIR", raising=False)
    with pytest.raises(ManoFileError, match=r"no usable stand-in in .*standin \(absent\).*Run `handmesh standin`"):
        resolve_mano_dir(default_dir=tmp_path / "mano", standin_dir=tmp_path / "standin")
    assert list(tmp_path.iterdir()) == []


def test_a_lightning_module_without_mano_is_a_clear_error(tmp_path, monkeypatch):
    """A library user building HandMeshModule where there is no MANO and no stand-in is told what to run."""
    from handmesh import mano_file
    from handmesh.lit_module import HandMeshModule

    monkeypatch.delenv("HANDMESH_MANO_DIR", raising=False)
    monkeypatch.setattr(mano_file.resolve_mano_dir, "__defaults__", (None, tmp_path / "mano", tmp_path / "standin"))
    with pytest.raises(ManoFileError, match="Run `handmesh standin`.*mano_dir"):
        HandMeshModule(encoder="fastvit_t8", input_size=64)
    assert list(tmp_path.iterdir()) == []


def test_ensure_standin_writes_it_once_and_says_so(standin_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HANDMESH_MANO_DIR", raising=False)
    standin = tmp_path / "standin"
    source = ensure_standin(default_dir=tmp_path / "mano", standin_dir=standin, command="test")
    assert source.directory == standin and source.is_standin
    err = capsys.readouterr().err
    assert err.splitlines() == [f"test: wrote the stand-in hand model (version {STANDIN_VERSION}; not MANO) in "
                                f"{standin.absolute()}"]
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
        assert (standin / name).read_bytes() == (standin_dir / name).read_bytes()
    assert ensure_standin(default_dir=tmp_path / "mano", standin_dir=standin) == source
    assert capsys.readouterr().err == ""  # current: used as it is, silently


def test_outdated_standin_in_its_own_folder_is_renewed_by_ensure_standin_only(standin_dir, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.delenv("HANDMESH_MANO_DIR", raising=False)
    standin = _copy_standin(standin_dir, tmp_path / "standin")
    assert resolve_mano_dir(default_dir=tmp_path / "mano", standin_dir=standin).is_standin
    _age_standin(standin, None)
    aged = (standin / "MANO_RIGHT.pkl").read_bytes()
    with pytest.raises(ManoFileError, match="stand-in version 1.*handmesh standin"):
        resolve_mano_dir(default_dir=tmp_path / "mano", standin_dir=standin)
    assert (standin / "MANO_RIGHT.pkl").read_bytes() == aged  # resolving wrote nothing
    capsys.readouterr()
    source = ensure_standin(default_dir=tmp_path / "mano", standin_dir=standin, command="test")
    lines = capsys.readouterr().err.splitlines()
    assert source.directory == standin and len(lines) == 1
    assert lines[0].startswith("test: renewed") and "version 1" in lines[0] and str(standin.absolute()) in lines[0]
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
        assert (standin / name).read_bytes() == (standin_dir / name).read_bytes()
    _age_standin(standin, STANDIN_VERSION + 1)  # a newer handmesh's is replaced too: this one reads its own
    ensure_standin(standin, default_dir=tmp_path / "mano", standin_dir=standin)
    assert load_mano_file(standin / "MANO_RIGHT.pkl").standin_version == STANDIN_VERSION


def test_outdated_standin_given_explicitly_is_refused_with_the_command_to_renew_it(standin_dir, tmp_path):
    copy = _copy_standin(standin_dir, tmp_path / "my_standin")
    _age_standin(copy, None)
    before = (copy / "MANO_RIGHT.pkl").read_bytes()
    for find in (resolve_mano_dir, ensure_standin):
        with pytest.raises(ManoFileError, match=f"stand-in version 1.*handmesh standin --out {copy}"):
            find(copy, standin_dir=tmp_path / "standin")
    assert (copy / "MANO_RIGHT.pkl").read_bytes() == before  # the user's files are left alone
    from handmesh.cli import main

    assert main(["render-hand", "--mano-dir", str(copy), "--out", str(tmp_path / "x.png")]) == 2
