"""The data model validates on construction and round-trips losslessly through its payload."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape._payload import read_npz, write_npz


def _tet_mesh() -> cs.TetMesh:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float)
    tets = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    return cs.TetMesh(points, tets, [1, 2], [[0, 1, 2], [1, 2, 4]], [5, 6], {1: "cytosol"}, {5: "pm"})


def _examples() -> list[cs.Artefact]:
    rng = np.random.default_rng(3)
    mesh = _tet_mesh()
    return [
        cs.Volume(rng.random((3, 4, 5)).astype(np.float32), (2.0, 1.5, 1.5), (10.0, 0.0, -5.0)),
        cs.Labels(rng.integers(0, 4, (3, 4, 5)).astype(np.uint16), {1: "cytosol", 3: "mito"}, 4.0),
        cs.TiltSeries(rng.random((3, 4, 5)), [-30.0, 0.0, 29.5], 0.8, 1.5),
        cs.SurfaceMesh(mesh.points, [[0, 1, 2], [0, 1, 3]], [4, 7], {4: "a", 7: "b"}),
        mesh,
        cs.Fields(mesh, [0.0, 0.5], {"ca": rng.random((2, 5)), "atp": np.ones((2, 5))}, {"ca": "uM"}),
        cs.Table({"name": np.array(["a", "b"]), "value": np.array([1.5, 2.5])}, {"value": "um^3"}, "sizes"),
        cs.Model("segment.random_forest", {"feature": np.arange(5, dtype=np.int32), "w": rng.random((2, 3)),
                                           "count": np.array(7, np.int64)},
                 {"classes": ["background", "membrane"], "scales": [0.7, 1.6]}),
    ]


@pytest.mark.parametrize("artefact", _examples(), ids=lambda a: a.kind)
def test_npz_round_trip_is_lossless(artefact: cs.Artefact, tmp_path) -> None:
    path = tmp_path / f"{artefact.kind}.npz"
    write_npz(artefact, path)
    back = read_npz(path)
    assert type(back) is type(artefact)
    assert cs.content_hash(back) == cs.content_hash(artefact)
    arrays, meta = artefact.to_payload()
    back_arrays, back_meta = back.to_payload()
    assert meta == back_meta
    for name, array in arrays.items():
        np.testing.assert_array_equal(back_arrays[name], array)
        assert back_arrays[name].dtype == array.dtype
        assert back_arrays[name].shape == array.shape


def test_content_hash_changes_with_content_and_metadata() -> None:
    data = np.zeros((2, 2, 2), np.float32)
    base = cs.content_hash(cs.Volume(data, 1.0))
    assert cs.content_hash(cs.Volume(data, 1.0)) == base
    assert cs.content_hash(cs.Volume(data, 2.0)) != base
    changed = data.copy()
    changed[0, 0, 0] = 1e-7
    assert cs.content_hash(cs.Volume(changed, 1.0)) != base
    assert cs.content_hash(cs.Volume(data.astype(np.float64), 1.0)) != base


def test_arrays_are_read_only() -> None:
    volume = cs.Volume(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        volume.data[0, 0, 0] = 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: cs.Volume(np.zeros((4, 4))), "must be 3D"),
        (lambda: cs.Volume(np.full((2, 2, 2), np.nan)), "NaN or infinite"),
        (lambda: cs.Volume(np.zeros((2, 2, 2)), (1.0, 0.0, 1.0)), "voxel_size_nm must be > 0"),
        (lambda: cs.Volume(np.zeros((2, 2, 2)), (1.0, 1.0)), "one number or three"),
        (lambda: cs.Labels(np.zeros((2, 2, 2), float)), "must be integers"),
        (lambda: cs.Labels(np.full((2, 2, 2), -1)), ">= 0"),
        (lambda: cs.TiltSeries(np.zeros((3, 4, 4)), [0, 10]), "2 tilt angles for 3 images"),
        (lambda: cs.TiltSeries(np.zeros((2, 4, 4)), [0, 95]), "within ±90°"),
        (lambda: cs.TiltSeries(np.zeros((1, 4, 4)), [0]), "at least 2 tilt images"),
        (lambda: cs.TiltSeries(np.zeros((2, 4, 4)), [0, 1], pixel_size_nm=-1), "pixel_size_nm must be > 0"),
        (lambda: cs.SurfaceMesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 3]]), "out of range"),
        (lambda: cs.SurfaceMesh([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]]), "NaN"),
        (lambda: cs.SurfaceMesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], [1, 2]), "one marker per triangle"),
        (lambda: cs.TetMesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 2, 4]]), "out of range"),
        (lambda: cs.Fields(_tet_mesh(), [0.0, 0.0], {"c": np.zeros((2, 5))}), "strictly increasing"),
        (lambda: cs.Fields(_tet_mesh(), [0.0], {"c": np.zeros((1, 4))}), "expected \\(1, 5\\)"),
        (lambda: cs.Table({"a": np.zeros(2), "b": np.zeros(3)}), "differ in length"),
    ],
)
def test_invalid_data_raises_input_error(build, message: str) -> None:
    with pytest.raises(cs.InputError, match=message):
        build()


def test_corrupt_npz_is_an_input_error(tmp_path) -> None:
    path = tmp_path / "x.npz"
    write_npz(cs.Volume(np.ones((4, 4, 4))), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(cs.InputError, match="x.npz"):
        read_npz(path)


def test_model_checks() -> None:
    with pytest.raises(cs.InputError, match="meta must be JSON-able"):
        cs.Model("segment.unet", {}, {"bad": object()})
    with pytest.raises(cs.InputError, match="method must name"):
        cs.Model("", {})
    model = cs.Model("segment.unet", {"w": np.ones(2)})
    assert model.require("segment.unet") is model
    with pytest.raises(cs.InputError, match="segment.random_forest: the model was made by segment.unet"):
        model.require("segment.random_forest")


def test_frozen_owned_arrays_are_not_copied_but_others_are() -> None:
    owned = np.arange(24, dtype=np.float32).reshape(2, 3, 4).copy()  # owns its memory
    owned.setflags(write=False)
    assert cs.Volume(owned).data is owned
    writable = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    volume = cs.Volume(writable)
    assert volume.data is not writable and not np.shares_memory(volume.data, writable)
    view = writable[:1]
    view.setflags(write=False)  # a read-only view of a writable array is still copied
    assert not np.shares_memory(cs.Volume(view).data, writable)
