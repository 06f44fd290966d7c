"""Running a spec under ``mpiexec -n N cellscape run spec.yaml``.

Every rank starts the same runner. Rank 0 decides what to do with each step
(cached, computed by rank 0 alone, or computed by every rank together) and
broadcasts the decision and the resulting artefact hashes, so all ranks walk
the pipeline in step. Methods marked ``mpi_collective`` (solvers whose PETSc
backend distributes the matrix over ``COMM_WORLD``) run on every rank at once,
reading their inputs from the run's store (on a file system all ranks see);
rank 0 stores their outputs. Everything else — meshing, segmentation, saving,
provenance, the report — happens on rank 0 only, while the other ranks wait.

MPI is detected from the launcher's environment (MPICH/Hydra ``PMI_SIZE``,
Open MPI ``OMPI_COMM_WORLD_SIZE``, Slurm ``PMI_SIZE``/``SLURM_NTASKS`` under
``srun``); outside a launcher nothing imports mpi4py.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["mpi_shared", "patient_bcast", "rank_alone", "world", "world_rank", "world_size"]

_ALONE: contextvars.ContextVar[bool] = contextvars.ContextVar("cellscape_mpi_alone", default=False)


def world_size() -> int:
    """Number of ranks the launcher started (1 outside ``mpiexec``/``srun``)."""
    for variable in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(variable)
        if value and value.isdigit():
            return int(value)
    return 1


def world_rank() -> int:
    """This process's rank as the launcher numbered it (0 outside ``mpiexec``/``srun``), without importing MPI."""
    for variable in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(variable)
        if value and value.isdigit():
            return int(value)
    return 0


def world() -> Any | None:
    """mpi4py's ``COMM_WORLD`` when started by an MPI launcher with more than one rank, else None."""
    if world_size() <= 1:
        return None
    from ._deps import require

    require("mpi4py", extra="mpi", who="running under mpiexec")
    from mpi4py import MPI

    return MPI.COMM_WORLD


def patient_bcast(comm: Any, value: Any, root: int = 0, poll_s: float = 0.02) -> Any:
    """``comm.bcast(value)``, but the ranks that wait for ``root`` sleep instead of spinning.

    MPI implementations busy-poll inside blocking calls: a rank waiting in
    ``bcast`` while rank 0 meshes for a minute would take a whole core from it.
    Here the waiting ranks poll a non-blocking barrier every ``poll_s`` seconds.
    """
    request = comm.Ibarrier()
    if comm.Get_rank() != root:
        while not request.Test():
            time.sleep(poll_s)
    else:
        request.Wait()
    return comm.bcast(value, root=root)


def mpi_shared() -> bool:
    """Whether code running now may use MPI's ``COMM_WORLD`` collectively.

    True outside the runner (a script under ``mpiexec`` runs on every rank)
    and inside a step the runner runs on every rank (``runs_collectively``);
    False inside a step the runner runs on rank 0 alone, where a collective
    call would wait forever for the other ranks. Plugins that pick an MPI
    communicator (the PETSc solver backend) ask this first.
    """
    return not _ALONE.get()


@contextlib.contextmanager
def rank_alone() -> Iterator[None]:
    """Mark the code inside as running on one rank while the others wait (see :func:`mpi_shared`)."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)
