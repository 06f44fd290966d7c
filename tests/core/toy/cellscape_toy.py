"""A toy third-party plugin used by the core tests: small, fast, deterministic methods.

Each run of a method appends a line to $CELLSCAPE_TOY_LOG (when set), so tests
can count what the runner recomputed.
"""

from __future__ import annotations

import os
import time

import attrs
import numpy as np

import cellscape as cs


def _log(name: str) -> None:
    path = os.environ.get("CELLSCAPE_TOY_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(name + "\n")


@attrs.frozen
class VolumeParams:
    size: int = cs.param(8, ge=2, le=256, unit="voxel", help="edge length of the cube")
    seed: int = cs.param(0, help="random seed")
    sleep_s: float = cs.param(0.0, ge=0, unit="s", help="pause while computing (to test interruption)")


class ToyVolume(cs.Generator):
    """A seeded random cube."""

    name = "generate.toy_volume"
    Params = VolumeParams
    outputs = {"volume": cs.Volume}

    def generate(self) -> cs.Volume:
        _log(self.name)
        p = self.params
        for _ in self.progress(range(20)):
            time.sleep(p.sleep_s / 20)
        rng = np.random.default_rng(p.seed)
        return cs.Volume(rng.random((p.size,) * 3).astype(np.float32), voxel_size_nm=2.0)


@attrs.frozen
class ScaleParams:
    factor: float = cs.param(2.0, gt=0, help="multiply every voxel by this")


class ToyScale(cs.Filter):
    """Multiply a volume by a factor."""

    name = "filter.toy_scale"
    Params = ScaleParams

    def filter(self, volume: cs.Volume) -> cs.Volume:
        _log(self.name)
        return cs.Volume(volume.data * self.params.factor, volume.voxel_size_nm, volume.origin_nm)


@attrs.frozen
class CutParams:
    level: float = cs.param(0.5, help="threshold")
    mode: str = cs.param("above", choices=("above", "below"), help="which side is foreground")


class ToyCut(cs.Segmenter):
    """Threshold at a fixed level."""

    name = "segment.toy_cut"
    Params = CutParams

    def segment(self, volume: cs.Volume) -> cs.Labels:
        _log(self.name)
        mask = volume.data > self.params.level if self.params.mode == "above" else volume.data < self.params.level
        return cs.Labels(mask.astype(np.uint8), {1: "fg"}, volume.voxel_size_nm, volume.origin_nm)


class ToyStats(cs.Analyzer):
    """Mean and count of a volume (and labelled voxels)."""

    name = "analyze.toy_stats"
    inputs = {"volume": cs.Volume, "labels": cs.Port(cs.Labels, optional=True)}
    outputs = {"table": cs.Table, "split": cs.Table}

    def analyze(self, volume: cs.Volume, labels: cs.Labels | None = None) -> dict[str, cs.Table]:
        _log(self.name)
        n = 0 if labels is None else int((labels.data > 0).sum())
        table = cs.Table({"quantity": np.array(["mean", "labelled"]), "value": np.array([volume.data.mean(), n])})
        return {"table": table, "split": cs.Table({"x": np.arange(3.0)})}


class ToyExplode(cs.Filter):
    """Always fails (to test error reporting)."""

    name = "filter.toy_explode"

    def filter(self, volume: cs.Volume) -> cs.Volume:
        raise RuntimeError("boom: the toy plugin failed on purpose")


class ToyDieOnce(cs.Filter):
    """Kills its own process the first time it runs (to test that a lost worker's task is retried).

    The first run creates the file named by $CELLSCAPE_TOY_DIE_ONCE and exits the process at once,
    like a worker killed by the OOM killer; later runs find the file and copy the volume.
    """

    name = "filter.toy_die_once"

    def filter(self, volume: cs.Volume) -> cs.Volume:
        marker = os.environ["CELLSCAPE_TOY_DIE_ONCE"]
        if not os.path.exists(marker):
            with open(marker, "w") as handle:
                handle.write(str(os.getpid()))
            os._exit(17)
        _log(self.name)
        return cs.Volume(volume.data + 1, volume.voxel_size_nm, volume.origin_nm)


class ToyRanks(cs.Analyzer):
    """Collective under mpiexec: every rank adds its rank + 1 to a sum (MPI allreduce)."""

    name = "analyze.toy_ranks"
    inputs = {"volume": cs.Volume}
    mpi_collective = True

    def analyze(self, volume: cs.Volume) -> cs.Table:
        _log(self.name)
        size, total = 1, 1
        if int(os.environ.get("PMI_SIZE", "1")) > 1:
            from mpi4py import MPI

            size = MPI.COMM_WORLD.Get_size()
            total = MPI.COMM_WORLD.allreduce(MPI.COMM_WORLD.Get_rank() + 1)
        return cs.Table({"ranks": np.array([size]), "sum": np.array([total]),
                         "mean": np.array([float(volume.data.mean())])})


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    for cls in (ToyVolume, ToyScale, ToyCut, ToyStats, ToyExplode, ToyDieOnce, ToyRanks):
        registry.add_method(cls)
