"""U-Net against the random forest: Dice from the same 1% scribbles on the same phantom, and what each costs.

Input: the phantom of `bench_segment` (N³ voxels of 4 nm: a cell with a dark 2-voxel plasma membrane,
mitochondria with a dark rim, vesicles as dark rings; blur σ = 1 voxel, membrane contrast / noise
std = 3), classes 1 cytosol and outside, 2 membrane (plasma membrane and vesicle rings), 3
mitochondria; training labels from `generate.scribbles` (1% of the voxels, in-plane strokes, the
same number per class). Two phantoms (seeds 0 and 1) with their own scribbles, so neither method's
defaults are judged on one volume.

Rows, per phantom: `segment.random_forest` with its defaults; `segment.unet` with its defaults
(2D network on XY slices with 2 context slices on each side, 1000 training steps, class prior
from the mean posterior). Each is trained and then applied to the whole training volume (the voxels outside the
scribbles are the test set, as in `bench_segment`), each in its own process. For the first phantom
the trained U-Net is also applied by `segment.unet_apply` chunk by chunk
(`cellscape._chunked.run_chunked`, chunks of 64³ grown by the network's receptive margin), to show
that chunked inference gives the whole-volume labels in less memory.

Columns: Dice per class against the truth; training and prediction seconds (wall clock; the forest
with its default 2 threads, torch with 1: on the shared machine 2 torch threads were several times
slower than 1); peak memory of the process above its state before the call (input loaded), for
training and prediction together; for the chunked row, the share of voxels whose label equals the
whole-volume prediction.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as harness
from bench_segment import phantom

N = 128
SEEDS = (0, 1)
CHUNKS = 64
THREADS = 1  # torch's threads: on the shared machine, 2 spinning threads made training 7x slower than 1


def _volume(image: np.ndarray):
    import cellscape as cs

    return cs.Volume(image, 4.0)


def random_forest(image: np.ndarray, scribbles: np.ndarray, job: dict, timer: dict) -> np.ndarray:
    import time

    import cellscape as cs

    rf = cs.method("segment.random_forest")
    start = time.perf_counter()
    rf.fit(_volume(image), cs.Labels(scribbles, {}, 4.0))
    timer["train"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = rf(_volume(image))["labels"].data
    timer["predict"] = time.perf_counter() - start
    return labels


def unet(image: np.ndarray, scribbles: np.ndarray, job: dict, timer: dict) -> np.ndarray:
    import time

    import cellscape as cs

    net = cs.method("segment.unet")
    start = time.perf_counter()
    net.fit(_volume(image), cs.Labels(scribbles, {}, 4.0))
    timer["train"] = time.perf_counter() - start
    net.save(job["model"])
    start = time.perf_counter()
    labels = net(_volume(image))["labels"].data
    timer["predict"] = time.perf_counter() - start
    return labels


def unet_chunked(image: np.ndarray, scribbles: np.ndarray, job: dict, timer: dict) -> np.ndarray:
    import time

    import cellscape as cs
    from cellscape._chunked import run_chunked

    model = cs.read(job["model"])
    apply = cs.method("segment.unet_apply")
    start = time.perf_counter()
    labels = run_chunked(apply, {"volume": _volume(image), "model": model}, CHUNKS, job["folder"], workers=1)["labels"]
    result = np.array(labels.data)
    timer["predict"] = time.perf_counter() - start
    return result


METHODS = {"random_forest": random_forest, "unet": unet, "unet_chunked": unet_chunked}


def child(job: dict) -> dict:
    folder = Path(job["folder"])
    image, scribbles = np.load(folder / "image.npy"), np.load(folder / "scribbles.npy")
    timer: dict = {}
    import dask.array  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import torch

    import cellscape as cs  # libraries are loaded before the measurement

    torch.set_num_threads(THREADS)

    cs.methods()
    stats = harness.measure(lambda: METHODS[job["name"]](image, scribbles, job, timer), folder)
    return {**stats, "train_seconds": timer.get("train", 0.0), "predict_seconds": timer["predict"]}


def dice(labels: np.ndarray, truth: np.ndarray, value: int) -> float:
    a, b = labels == value, truth == value
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def run() -> dict:
    import cellscape as cs

    rows = []

    def row(name: str, seed: int, labels: np.ndarray, stats: dict, truth: np.ndarray) -> dict:
        return {
            "method": name, "phantom seed": seed, "Dice cytosol": dice(labels, truth, 1),
            "Dice membrane": dice(labels, truth, 2), "Dice mitochondria": dice(labels, truth, 3),
            "train [s]": stats["train_seconds"], "predict [s]": stats["predict_seconds"],
            "peak memory [MB]": stats["peak_mb"], "labels equal to whole-volume U-Net": "",
        }

    with tempfile.TemporaryDirectory() as folder:
        here = Path(folder)
        for seed in SEEDS:
            image, truth, _ = phantom(N, seed)
            scribbles = cs.method("generate.scribbles", fraction=0.01, seed=2 + seed)(cs.Labels(truth, {}, 4.0)).data
            np.save(here / "image.npy", image)
            np.save(here / "scribbles.npy", scribbles)
            rows.append(row("segment.random_forest (defaults)", seed,
                            *harness.run_child(__file__, {"name": "random_forest"}, folder), truth))
            model = str(here / f"unet_{seed}.npz")
            whole, stats = harness.run_child(__file__, {"name": "unet", "model": model}, folder)
            rows.append(row("segment.unet (defaults: 2D, 2 context slices, 1000 steps)", seed, whole, stats, truth))
            if seed == SEEDS[0]:
                chunked, stats = harness.run_child(__file__, {"name": "unet_chunked", "model": model}, folder)
                rows.append(row(f"segment.unet_apply, chunks of {CHUNKS}³ (same model)", seed, chunked, stats, truth))
                rows[-1]["labels equal to whole-volume U-Net"] = float(np.mean(chunked == whole))
    forest = [r for r in rows if r["method"].startswith("segment.random_forest")]
    net = [r for r in rows if r["method"].startswith("segment.unet (")]
    summary = "; ".join(
        f"seed {f['phantom seed']}: membrane {n['Dice membrane']:.3f} vs {f['Dice membrane']:.3f}, mitochondria "
        f"{n['Dice mitochondria']:.3f} vs {f['Dice mitochondria']:.3f}, training {n['train [s]'] / f['train [s]']:.1f}x "
        "the forest's time" for f, n in zip(forest, net, strict=True))
    return {
        "title": "U-Net against the random forest from 1% scribbles",
        "setup": (f"{N}³ synthetic EM volumes of bench_segment (membranes, mitochondria, vesicles; blur σ=1, SNR 3; "
                  f"phantom seeds {', '.join(map(str, SEEDS))}), 1% of the voxels labeled by generate.scribbles; each "
                  "method trained on the scribbles and applied to the whole volume, defaults throughout. Peak memory: "
                  "training and prediction together, above the process's state with the input loaded."),
        "rows": rows,
        "notes": ("Target of issue #4: U-Net Dice ≥ random forest. U-Net vs forest (Dice) — " + summary + ". "
                  "Variants of the U-Net tried on phantom seed 0 before this run (one run each, Dice membrane / "
                  "mitochondria, class prior by EM unless said): 300 steps 0.24 / 0.49 (an under-trained network's "
                  "soft probabilities make EM over-correct; 0.87 / 0.94 with the mean posterior, hence that default), "
                  "1000 steps 0.895 / 0.964 (0.886 / 0.966 with the mean posterior), 2000 steps 0.898 / 0.957, 4 "
                  "context slices 0.865 / 0.975, 16 base channels 0.887 / 0.964: the membrane gap stays. "
                  "A 3D network (dim 3) was not tried at this size: too slow to train on this machine. The "
                  "chunked row applies the same model chunk by chunk: its labels equal the whole-volume labels "
                  "(the overlap-tile inference makes each voxel independent of where tiles and chunks fall). "
                  "Measured on a shared 2-core machine (other jobs running), so seconds are indicative; the forest "
                  "and the U-Net ran one after the other in the same run."),
    }


if __name__ == "__main__":
    harness.child_main(child)
