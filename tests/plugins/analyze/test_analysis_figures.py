"""The report figures of analysis tables: Sobol bars, Morris plane, Monte Carlo bands, fit curves, scree plot, embedding."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.analyze import figures
from cellscape_plugins.analyze._forward import CachedForward, parse_parameters
from cellscape_plugins.analyze.fit import fit_least_squares

TIMES = np.array([0.5, 1.0, 2.0])


def decay(theta: np.ndarray) -> np.ndarray:
    return np.concatenate([theta[0] * np.exp(-theta[1] * TIMES), theta[0] * np.exp(-2 * theta[1] * TIMES)])


def analysis_tables() -> dict[str, cs.Table]:
    specs = parse_parameters({"a": {"bounds": [0.5, 2.0]}, "k": {"bounds": [0.1, 1.0]}}, "test",
                             require_bounds=False, distributions=True)
    uq = cs.method("analyze.uq", solver_params={}, parameters={"a": {"bounds": [0.5, 2.0]}, "k": {"bounds": [0.1, 1.0]}},
                   outputs=["A", "B"], times_s=TIMES.tolist(), n_samples=64, n_sobol=64, n_bootstrap=10,
                   analyses=["monte_carlo", "sobol", "morris"], n_trajectories=6)
    studied = uq.study(CachedForward(decay, 6), specs, ["A", "B"], TIMES)
    observed = decay(np.array([1.2, 0.4])) + 0.01 * np.random.default_rng(0).standard_normal(6)
    fit = cs.method("analyze.fit", solver_params={}, parameters={"a": {"bounds": [0.5, 2.0]}, "k": {"bounds": [0.1, 1.0]}})
    forward = CachedForward(decay, 6)
    fitted = fit.tables(fit_least_squares(forward, observed, specs[:2]), specs, ["A", "B"], TIMES, None, forward)
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(6, 1, (20, 3))])
    reduced = cs.method("analyze.reduce", clustering="none")(table=cs.Table({n: data[:, j] for j, n in enumerate("xyz")}))
    data = np.zeros((30, 30, 30), np.uint8)
    data[5:12, 5:12, 5:12] = 1
    data[15:25, 15:25, 15:25] = 2
    shapes = cs.method("analyze.morphometry")(cs.Labels(data, {1: "small", 2: "large"}, 5.0))
    return {"sobol": studied["sensitivity"], "morris": studied["screening"], "montecarlo": studied["table"],
            "fit": fitted["residuals"], "estimates": fitted["table"], "morphometry": shapes["table"],
            "components": reduced["table"], "embedding": reduced["scores"]}


@pytest.mark.parametrize("kind", ["sobol", "morris", "montecarlo", "fit", "estimates", "morphometry", "components",
                                  "embedding"])
def test_analysis_tables_get_their_figure(kind: str, tmp_path) -> None:
    import matplotlib.image

    table = analysis_tables()[kind]
    paths = figures.table_figures(table, tmp_path, title="step · output", inputs={})
    assert [p.name for p in paths] == [f"step_output_{kind}.png"]
    pixels = matplotlib.image.imread(paths[0])
    assert pixels.shape[0] > 250 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_other_tables_keep_the_time_course_plot(tmp_path) -> None:
    table = cs.Table({"time_s": np.array([0.0, 1.0]), "mean_A_cube": np.array([1.0, 0.5])})
    assert [p.name for p in figures.table_figures(table, tmp_path, title="t", inputs={})] == ["t_timecourse.png"]
    assert figures.analysis_figures(cs.Table({"output": np.array(["a"]), "time_s": np.zeros(1)}), tmp_path, "t") is None
