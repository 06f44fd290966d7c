"""File formats: lossless round trips, physical sizes from headers, clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape.io._angles import read_tilt_angles


def volume() -> cs.Volume:
    rng = np.random.default_rng(1)
    return cs.Volume(rng.random((5, 6, 7)).astype(np.float32), (4.0, 2.5, 2.5), (10.0, -20.0, 30.0))


def labels() -> cs.Labels:
    rng = np.random.default_rng(2)
    return cs.Labels(rng.integers(0, 4, (5, 6, 7)).astype(np.uint16), {1: "cytosol", 3: "mitochondrion"}, (8.0, 2.0, 2.0),
                     (1.0, 2.0, 3.0))


def tet_mesh() -> cs.TetMesh:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1.5]], float) * 10.123456789
    tets = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    boundary = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 4], [1, 4, 3], [2, 3, 4]])
    return cs.TetMesh(points, tets, [1, 2], boundary, [5, 5, 5, 6, 6, 6], {1: "cytosol", 2: "nucleus"},
                      {5: "plasma_membrane", 6: "nuclear_envelope"})


def surface(markers=(1, 1, 2, 2)) -> cs.SurfaceMesh:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) * 3.3333333
    tris = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    names = {m: f"region{m}" for m in set(markers)}
    return cs.SurfaceMesh(points, tris, list(markers), names)


def assert_same(a: cs.Artefact, b: cs.Artefact) -> None:
    assert type(a) is type(b)
    arrays_a, meta_a = a.to_payload()
    arrays_b, meta_b = b.to_payload()
    assert meta_a == meta_b
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


@pytest.mark.parametrize("suffix", [".mrc", ".tif", ".ome.tif", ".zarr", ".ome.zarr", ".npz"])
def test_volume_round_trip(tmp_path, suffix: str) -> None:
    original = volume()
    assert_same(cs.read(cs.write(original, tmp_path / f"v{suffix}")), original)


@pytest.mark.parametrize("suffix", [".mrc", ".tif", ".ome.tiff", ".zarr", ".npz"])
def test_labels_round_trip(tmp_path, suffix: str) -> None:
    original = labels()
    back = cs.read(cs.write(original, tmp_path / f"l{suffix}"))
    assert isinstance(back, cs.Labels)
    assert back.class_names == original.class_names
    np.testing.assert_array_equal(back.data, original.data)
    assert back.voxel_size_nm == original.voxel_size_nm


def test_mrc_reads_voxel_size_in_angstrom_from_a_foreign_header(tmp_path) -> None:
    import mrcfile

    with mrcfile.new(tmp_path / "foreign.mrc") as mrc:
        mrc.set_data(np.zeros((3, 4, 5), np.float32))
        mrc.voxel_size = (12.0, 12.0, 24.0)  # Å, (x, y, z)
    read = cs.read(tmp_path / "foreign.mrc")
    assert isinstance(read, cs.Volume)
    assert read.voxel_size_nm == pytest.approx((2.4, 1.2, 1.2))
    as_labels = cs.read(tmp_path / "foreign.mrc", kind="volume")
    assert as_labels.shape == (3, 4, 5)


def test_tilt_series_from_mrc_and_tlt(tmp_path) -> None:
    rng = np.random.default_rng(3)
    tilts = cs.TiltSeries(rng.random((4, 6, 8)).astype(np.float32), [-45.0, -15.5, 15.5, 45.0], 0.75)
    cs.write(tilts, tmp_path / "stack.mrc")
    assert (tmp_path / "stack.tlt").exists()
    np.testing.assert_array_equal(read_tilt_angles(tmp_path / "stack.tlt"), tilts.tilt_angles_deg)
    assert_same(cs.read(tmp_path / "stack.mrc"), tilts)
    (tmp_path / "stack.tlt").rename(tmp_path / "stack.rawtlt")
    assert isinstance(cs.read(tmp_path / "stack.mrc"), cs.TiltSeries)
    (tmp_path / "stack.rawtlt").write_text("-45\n0\n45\n")
    with pytest.raises(cs.InputError, match="4 images but 3 angles in stack.rawtlt"):
        cs.read(tmp_path / "stack.mrc")
    (tmp_path / "stack.rawtlt").write_text("-45\nabc\n")
    with pytest.raises(cs.InputError, match="line 2 is not an angle"):
        cs.read(tmp_path / "stack.mrc")
    (tmp_path / "stack.rawtlt").write_text("-95\n-15\n15\n45\n")
    with pytest.raises(cs.InputError, match="outside ±90°"):
        cs.read(tmp_path / "stack.mrc")


@pytest.mark.parametrize("name", ["stack.tif", "stack.ome.tif"])
def test_tilt_series_from_tiff_and_tlt(tmp_path, name) -> None:
    tilts = cs.TiltSeries(np.random.default_rng(4).random((4, 6, 8)).astype(np.float32), [-45.0, -15.5, 15.5, 45.0],
                          0.75, tilt_axis_angle_deg=-3.5)
    cs.write(tilts, tmp_path / name)
    assert (tmp_path / "stack.tlt").exists()
    assert_same(cs.read(tmp_path / name), tilts)


def test_foreign_tiff_stack_with_rawtlt_reads_as_tilt_series(tmp_path) -> None:
    import tifffile

    stack = np.arange(3 * 5 * 7, dtype=np.uint16).reshape(3, 5, 7)
    tifffile.imwrite(tmp_path / "series.tif", stack, photometric="minisblack", resolution=(1e7 / 2.5, 1e7 / 2.5),
                     resolutionunit=3)  # 2.5 nm per pixel
    (tmp_path / "series.rawtlt").write_text("-30\n0\n30\n")
    tilts = cs.read(tmp_path / "series.tif")
    assert isinstance(tilts, cs.TiltSeries)
    assert tilts.pixel_size_nm == pytest.approx(2.5)
    np.testing.assert_array_equal(tilts.projections, stack)
    (tmp_path / "series.rawtlt").write_text("-30\n0\n")
    with pytest.raises(cs.InputError, match=r"series.tif: 3 images but 2 angles in series.rawtlt"):
        cs.read(tmp_path / "series.tif")


def test_tiff_pages_written_one_by_one(tmp_path) -> None:
    import tifffile

    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for value in range(3):
            tif.write(np.full((6, 8), value, np.float32))
    (tmp_path / "pages.tlt").write_text("-20\n0\n20\n")
    tilts = cs.read(tmp_path / "pages.tif")
    assert tilts.projections.shape == (3, 6, 8)
    np.testing.assert_array_equal(tilts.projections[:, 0, 0], [0, 1, 2])
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        tif.write(np.zeros((6, 8), np.float32))
        tif.write(np.zeros((5, 8), np.float32))
    with pytest.raises(cs.InputError, match=r"mixed.tif: the file holds images of different sizes \(5x8, 6x8\)"):
        cs.read(tmp_path / "mixed.tif")


def test_ome_tiff_physical_sizes_from_a_foreign_file(tmp_path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "x.ome.tif", np.zeros((3, 4, 5), np.uint8), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.004, "PhysicalSizeY": 0.004, "PhysicalSizeZ": 0.05})
    read = cs.read(tmp_path / "x.ome.tif")
    assert read.voxel_size_nm == pytest.approx((50.0, 4.0, 4.0))


@pytest.mark.parametrize("suffix", [".vtu", ".msh", ".xdmf", ".npz"])
def test_tet_mesh_round_trip(tmp_path, suffix: str) -> None:
    original = tet_mesh()
    back = cs.read(cs.write(original, tmp_path / f"m{suffix}"))
    np.testing.assert_array_equal(back.points, original.points)
    np.testing.assert_array_equal(back.tetrahedra, original.tetrahedra)
    np.testing.assert_array_equal(back.region_markers, original.region_markers)
    np.testing.assert_array_equal(back.boundary_triangles, original.boundary_triangles)
    np.testing.assert_array_equal(back.boundary_markers, original.boundary_markers)
    if suffix in (".vtu", ".msh", ".npz"):
        assert back.region_names == original.region_names
        assert back.boundary_names == original.boundary_names


@pytest.mark.parametrize("suffix", [".vtp", ".vtu", ".msh", ".xdmf"])
def test_surface_round_trip_with_markers(tmp_path, suffix: str) -> None:
    original = surface()
    back = cs.read(cs.write(original, tmp_path / f"s{suffix}"), kind="surface_mesh")
    np.testing.assert_array_equal(back.vertices, original.vertices)
    np.testing.assert_array_equal(back.triangles, original.triangles)
    np.testing.assert_array_equal(back.markers, original.markers)
    if suffix in (".vtp", ".vtu", ".msh"):
        assert back.marker_names == original.marker_names


@pytest.mark.parametrize("suffix", [".obj", ".stl", ".ply"])
def test_geometry_only_formats(tmp_path, suffix: str) -> None:
    one = surface(markers=(1, 1, 1, 1))
    back = cs.read(cs.write(one, tmp_path / f"s{suffix}"))
    np.testing.assert_allclose(back.vertices[back.triangles], one.vertices[one.triangles], rtol=1e-6)
    with pytest.raises(cs.InputError, match="cannot hold triangle markers .* write .vtp"):
        cs.write(surface(), tmp_path / f"two{suffix}")


@pytest.mark.parametrize("suffix", [".mrc", ".tif", ".vtp", ".vtu", ".msh", ".ply"])
def test_truncated_or_garbage_files_are_input_errors(tmp_path, suffix: str) -> None:
    original = volume() if suffix in (".mrc", ".tif") else (tet_mesh() if suffix in (".vtu", ".msh") else surface((1, 1, 1, 1)))
    path = cs.write(original, tmp_path / f"x{suffix}")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    with pytest.raises(cs.InputError, match=f"x\\{suffix}"):
        cs.read(path)
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x00\x01this is not a file of that format" * 20)
    with pytest.raises(cs.InputError, match=f"garbage\\{suffix}"):
        cs.read(garbage)


def test_mesh_file_with_out_of_range_indices_or_nan_names_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(cs.InputError, match="bad.obj"):
        cs.read(bad)
    nan = tmp_path / "nan.obj"
    nan.write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(cs.InputError, match="nan.obj: SurfaceMesh: vertices holds 1 NaN"):
        cs.read(nan)


def test_missing_file_and_wrong_kind(tmp_path) -> None:
    with pytest.raises(cs.InputError, match="no such file"):
        cs.read(tmp_path / "missing.mrc")
    with pytest.raises(cs.InputError, match="cannot hold a TetMesh"):
        cs.write(tet_mesh(), tmp_path / "m.tif")
    path = cs.write(volume(), tmp_path / "v.mrc")
    with pytest.raises(cs.InputError, match="MRC files cannot hold a SurfaceMesh"):
        cs.read(path, kind="surface_mesh")
    with pytest.raises(cs.InputError, match="cannot read files with suffix '.xyz'"):
        (tmp_path / "a.xyz").write_text("")
        cs.read(tmp_path / "a.xyz")


def test_labels_too_large_for_mrc(tmp_path) -> None:
    big = cs.Labels(np.full((2, 2, 2), 70000, np.uint32))
    with pytest.raises(cs.InputError, match="up to 65535"):
        cs.write(big, tmp_path / "big.mrc")
