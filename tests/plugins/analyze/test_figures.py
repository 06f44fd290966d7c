"""Every figure maker draws a real picture of its artefact."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh, cube_surface

import cellscape as cs
from cellscape_plugins.analyze import figures


def ball_labels() -> cs.Labels:
    z, y, x = np.mgrid[:24, :24, :24] - 11.5
    return cs.Labels((x**2 + y**2 + z**2 <= 64).astype(np.uint8) * 2, {2: "nucleus"}, 10.0)


def examples() -> list[tuple[cs.Artefact, dict]]:
    rng = np.random.default_rng(0)
    volume = cs.Volume(rng.random((24, 24, 24)).astype(np.float32), 10.0)
    mesh = cube_mesh(3, 600.0, regions_split=True)
    values = np.stack([mesh.points[:, 0] / 600.0 * t for t in (0.0, 0.5, 1.0)])
    return [
        (volume, {}),
        (ball_labels(), {"volume": volume}),
        (ball_labels(), {}),
        (cs.TiltSeries(rng.random((5, 16, 16)), [-60, -30, 0, 30, 60], 2.0), {}),
        (cube_surface(100.0), {}),
        (mesh, {}),
        (cs.Fields(mesh, [0.0, 0.5, 1.0], {"c": values}), {}),
        (cs.Table({"time_s": np.array([0.0, 1.0, 2.0]), "c in cell": np.array([1.0, 0.5, 0.2])}, {"c in cell": "uM"}), {}),
    ]


@pytest.mark.parametrize(("artefact", "inputs"), examples(), ids=lambda a: getattr(a, "kind", "inputs"))
def test_figures_are_real_pictures(artefact, inputs, tmp_path) -> None:
    import matplotlib.image

    makers = [maker for kind, maker in figures.FIGURE_MAKERS if isinstance(artefact, kind)]
    assert len(makers) == 1
    paths = makers[0](artefact, tmp_path, title="step · output", inputs=inputs)
    assert paths
    for path in paths:
        assert path.parent == tmp_path and path.name.startswith("step_output_")
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels[..., :3].std() > 0.02  # not a blank canvas


def test_tables_without_time_draw_nothing(tmp_path) -> None:
    table = cs.Table({"quantity": np.array(["a"]), "value": np.array([1.0])})
    assert figures.table_figures(table, tmp_path, title="t", inputs={}) == []


def test_tilt_montage_shows_lowest_zero_and_highest(tmp_path) -> None:
    import matplotlib.image

    angles = np.arange(-60, 61, 3.0)
    rng = np.random.default_rng(1)
    paths = figures.tilt_series_figures(cs.TiltSeries(rng.random((len(angles), 12, 12)), angles, 1.5), tmp_path,
                                        title="tilts", inputs={})
    wide = matplotlib.image.imread(paths[0]).shape[1]
    few = figures.tilt_series_figures(cs.TiltSeries(rng.random((2, 12, 12)), [-10.0, 10.0], 1.5), tmp_path,
                                      title="two", inputs={})
    assert wide > 1.8 * matplotlib.image.imread(few[0]).shape[1]  # five panels against two


def test_labels_with_sparse_instance_numbers_draw(tmp_path) -> None:
    import matplotlib.image

    data = np.zeros((8, 8, 8), np.uint32)
    data[2:6, 2:6, 2:6] = 4_000_000
    data[4:, :3] = 17
    path = figures.labels_figures(cs.Labels(data), tmp_path, title="instances", inputs={})[0]
    assert matplotlib.image.imread(path)[..., :3].std() > 0.02
