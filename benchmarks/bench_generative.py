"""Generative fidelity: `generate.gmm` and `generate.gan` samples against their training sets.

Three experiments, all seeded:

1. **Parameter recovery (GMM).** A known parametric population of 150 cells (10 nm voxels): ellipsoid cells
   with lognormal semi-axes (medians 240, 200, 160 nm, log-sd 0.04), an ellipsoid nucleus of 0.35 times the
   cell's semi-axes (log-sd 0.03) shifted by 0.1 of the long semi-axis, a Poisson(6) number of spherical
   organelles with lognormal volumes (median that of a 30 nm radius ball, log-sd 0.3) placed uniformly at
   least 20 nm from membrane, nuclear envelope and each other. `generate.gmm` is fitted; the table gives
   the relative error of each recovered parameter (the issue's target: within 10 %).
2. **GMM fidelity on phantom cells.** 40 `generate.phantom_cell` cells (64³, 10 nm voxels, Poisson(4)
   mitochondria, at most 8) train `generate.gmm` (defaults); 200 sampled cells are compared with them.
3. **GAN fidelity.** The mitochondria of those 40 cells train `generate.gan` (defaults: 300 generator
   updates, 2 critic updates each, batch 8, Adam step 1e-3, one CPU thread); 200 samples are compared with the training shapes
   (both on the GAN's 32³ grid in physical units), and the share of raw samples that are one closed object
   (one 6-connected component, no cavity, not touching the grid border; target ≥ 95 %) is counted.

Descriptors come from `generate._shapes` (flying-edges surface of each object after σ = 1 voxel smoothing;
volume by the divergence theorem, area, sphericity π^(1/3) (6V)^(2/3) / A): the cell is the filled cell
label, organelles are the connected pieces of the organelle class. Each row compares the training and the
sampled distribution of one descriptor with the two-sample Kolmogorov–Smirnov statistic D (0 = identical,
with its p-value) and the 1-Wasserstein distance divided by the training standard deviation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

# experiment 1's known population: the one tests/plugins/generate/test_gmm.py recovers
from populations import (
    CELL_LOG_SD,
    CELL_MEDIAN_VOXELS,
    COUNT_MEAN,
    NAMES,
    NUCLEUS_FRACTION,
    NUCLEUS_OFFSET,
    VOLUME_LOG_SD,
    VOLUME_MEDIAN_VOXELS,
    VOXEL_NM,
    known_cell,
)

N_SAMPLES = 200
SEED = 0

# ----------------------------------------------------------------------------------------------- descriptors

def cell_descriptors(cells: list[Any]) -> dict[str, np.ndarray]:
    """Volume, area and sphericity of cells, nuclei and organelles, and organelle counts, over a list of Labels."""
    from cellscape_plugins.generate._descriptors import shape_descriptors
    from cellscape_plugins.generate._shapes import shapes_from_labels

    out: dict[str, list[float]] = {}
    for labels in cells:
        present = set(labels.label_values())
        for value, name in ((1, "cell"), (2, "nucleus"), (3, "organelle")):
            if value not in present:
                if value == 3:
                    out.setdefault("organelle count", []).append(0)
                continue
            shapes = shapes_from_labels(labels, [value], split_components=value == 3, who="bench")
            table = shape_descriptors(shapes)
            for column, label in (("volume_nm3", "volume"), ("area_nm2", "area"), ("sphericity", "sphericity")):
                out.setdefault(f"{name} {label}", []).extend(table.columns[column].tolist())
            if value == 3:
                out.setdefault("organelle count", []).append(len(shapes))
    return {k: np.asarray(v, float) for k, v in out.items()}


def shape_descriptors_of(labels_list: list[Any]) -> dict[str, np.ndarray]:
    """Volume, area and sphericity of single-object Labels (label 1)."""
    from cellscape_plugins.generate._descriptors import shape_descriptors
    from cellscape_plugins.generate._shapes import shapes_from_labels

    shapes = [s for labels in labels_list if labels.data.any() for s in shapes_from_labels(labels, [1], who="bench")]
    table = shape_descriptors(shapes)
    return {"volume": table.columns["volume_nm3"], "area": table.columns["area_nm2"],
            "sphericity": table.columns["sphericity"]}


def compare(model: str, training: dict[str, np.ndarray], samples: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    from scipy import stats

    rows = []
    for name in training:
        a, b = training[name], samples.get(name, np.zeros(0))
        if len(a) < 2 or len(b) < 2:
            continue
        ks = stats.ks_2samp(a, b)
        rows.append({
            "model": model, "descriptor": name, "training n": len(a), "samples n": len(b),
            "training mean": float(a.mean()), "sample mean": float(b.mean()),
            "KS D": float(ks.statistic), "KS p": float(ks.pvalue),
            "W1 / training sd": float(stats.wasserstein_distance(a, b) / max(a.std(), 1e-300)),
        })
    return rows


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- experiments

def parameter_recovery() -> tuple[list[dict[str, Any]], float]:
    import cellscape as cs

    rng = np.random.default_rng(SEED)
    training = [cs.Labels(known_cell(rng), NAMES, VOXEL_NM) for _ in range(150)]
    method = cs.method("generate.gmm", seed=SEED)
    start = time.perf_counter()
    method.fit(training)
    seconds = time.perf_counter() - start
    values = {(r["component"], r["parameter"]): r["value"] for r in method.parameters_table().rows()}
    truth = [
        ("mitochondrion", "count_mean", COUNT_MEAN),
        ("mitochondrion", "volume_median", VOLUME_MEDIAN_VOXELS * VOXEL_NM**3),
        ("mitochondrion", "volume_log_sd", VOLUME_LOG_SD),
        *[("cytosol", f"semi_axis_a{a}_median", VOXEL_NM * CELL_MEDIAN_VOXELS[a - 1]) for a in (1, 2, 3)],
        *[("cytosol", f"semi_axis_a{a}_log_sd", CELL_LOG_SD) for a in (1, 2, 3)],
        *[("nucleus", f"semi_axis_a{a}_median", NUCLEUS_FRACTION * VOXEL_NM * CELL_MEDIAN_VOXELS[a - 1]) for a in (1, 2, 3)],
        ("nucleus", "nucleus_offset_1_mean", NUCLEUS_OFFSET),
    ]
    rows = [{"component": c, "parameter": p, "true": float(t), "fitted": float(values[(c, p)]),
             "relative error %": 100.0 * abs(values[(c, p)] / t - 1.0)} for c, p, t in truth]
    rows.append({"component": "mitochondrion", "parameter": "count model", "true": "poisson",
                 "fitted": method.model.meta["count_models"]["mitochondrion"]["distribution"], "relative error %": ""})
    return rows, seconds


def phantom_training(n_cells: int = 40) -> list[Any]:
    from cellscape_plugins.generate.gmm import phantom_population

    counts = np.minimum(np.random.default_rng(SEED).poisson(4.0, n_cells), 8)
    return phantom_population(n_cells, [int(c) for c in counts])


def gmm_fidelity(training: list[Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    import cellscape as cs

    method = cs.method("generate.gmm", seed=SEED)
    start = time.perf_counter()
    method.fit(training)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    samples = method.sample(N_SAMPLES, seed=SEED + 1)
    sample_s = time.perf_counter() - start
    rows = compare("gmm", cell_descriptors(training), cell_descriptors(samples))
    return rows, {"fit_s": fit_s, "sample_s_per_cell": sample_s / N_SAMPLES}


def gan_fidelity(training: list[Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    import cellscape as cs
    from cellscape_plugins.generate.gan import GRID, voxelize_objects

    method = cs.method("generate.gan", class_name="mitochondrion", seed=SEED)
    start = time.perf_counter()
    model = method.fit(training)
    train_s = time.perf_counter() - start
    shapes, spacings = [], []
    for labels in training:
        s, sp = voxelize_objects(labels, "mitochondrion")
        shapes.append(s)
        spacings.append(sp)
    training_shapes = [cs.Labels(s.astype(np.uint8), {1: "mitochondrion"}, float(sp), -(GRID - 1) / 2 * float(sp))
                       for s, sp in zip(np.concatenate(shapes), np.concatenate(spacings), strict=True)]
    samples = method.sample(N_SAMPLES, seed=SEED + 1)
    quality = method.quality(N_SAMPLES, seed=SEED + 1).columns
    rows = compare("gan", shape_descriptors_of(training_shapes), shape_descriptors_of(samples))
    summary = {
        "train_s": train_s, "n_training_shapes": float(model.meta["n_training_shapes"]),
        "iterations": float(model.meta["iterations"]),
        "single_closed_share": float(np.mean(quality["single_closed"])),
        "training_single_closed_share": float(model.meta["training_single_closed_share"]),
        "more_than_one_component": float(np.mean(quality["components"] > 1)),
        "empty": float(np.mean(quality["components"] == 0)),
        "with_cavity": float(np.mean(quality["cavities"] > 0)),
        "touching_border": float(np.mean(quality["touches_border"])),
        "final_wasserstein": float(np.mean(model.arrays["history/wasserstein"][-50:])),
    }
    return rows, summary


def run() -> dict[str, Any]:
    recovery, recovery_fit_s = parameter_recovery()
    training = phantom_training()
    gmm_rows, gmm_times = gmm_fidelity(training)
    gan_rows, gan = gan_fidelity(training)
    worst = max(r["relative error %"] for r in recovery if isinstance(r["relative error %"], float))
    notes = "\n".join([
        "## Parameter recovery (GMM, 150 cells of a known population)",
        "",
        _markdown_table(recovery),
        "",
        f"Largest relative error: {worst:.1f} % (target: within 10 %). Fit time {recovery_fit_s:.1f} s.",
        "",
        "## GAN",
        "",
        f"- training: {int(gan['n_training_shapes'])} phantom mitochondria, {gan['train_s']:.0f} s on one CPU thread "
        f"({int(gan['iterations'])} generator updates)",
        f"- raw samples that are a single closed object: **{100 * gan['single_closed_share']:.1f} %** "
        f"(target ≥ 95 %; training shapes: {100 * gan['training_single_closed_share']:.1f} %); more than one "
        f"component {100 * gan['more_than_one_component']:.1f} %, empty {100 * gan['empty']:.1f} %, with a cavity "
        f"{100 * gan['with_cavity']:.1f} %, touching the grid border {100 * gan['touching_border']:.1f} %",
        f"- critic's Wasserstein estimate over the last 50 updates: {gan['final_wasserstein']:.3g}",
        "",
        "Measured on a shared 2-core machine (about 8 other jobs running): times are indicative only.",
        "",
        "## GMM timing",
        "",
        f"- fit on 40 phantom cells: {gmm_times['fit_s']:.1f} s; sampling: {gmm_times['sample_s_per_cell']:.2f} s per cell",
    ])
    return {
        "title": "Generative fidelity: generate.gmm and generate.gan samples vs training",
        "setup": (__doc__ or "").split("\n\n", 1)[1].strip(),
        "rows": gmm_rows + gan_rows,
        "notes": notes,
    }


if __name__ == "__main__":
    import run as runner

    sys.exit(runner.main(["generative"]))
