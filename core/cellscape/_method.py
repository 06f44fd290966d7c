"""Methods and the stage interfaces they implement.

A method is a class with a name (``stage.method``), a ``Params`` attrs class,
named input and output ports, and the stage's one main call::

    class WeightedBackprojection(cs.Reconstructor):
        name = "reconstruct.wbp"
        Params = WBPParams

        def reconstruct(self, tilts: cs.TiltSeries) -> cs.Volume:
            ...

The runner calls ``run(**inputs)``, which every stage class maps onto its
main call and whose result is a dict of output name → artefact. Calling the
method object directly (``wbp(tilts)``) does the same and returns the
artefact itself when there is a single output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import attrs

from ._data import Artefact, Fields, Labels, SurfaceMesh, Table, TetMesh, TiltSeries, Volume
from ._errors import InputError
from ._params import ParamInfo, build_params, param_infos, params_to_json
from ._progress import progress

__all__ = [
    "Analyzer",
    "Filter",
    "Generator",
    "Mesher",
    "Method",
    "NoParams",
    "Port",
    "Reconstructor",
    "Segmenter",
    "Solver",
    "Tetrahedralizer",
]

T = TypeVar("T")


@attrs.frozen
class NoParams:
    """Parameters of a method that takes none."""


@attrs.frozen
class Port:
    """A named input or output of a method: the artefact class it carries."""

    kind: type[Artefact]
    help: str = ""
    optional: bool = False


def _port(value: Port | type[Artefact]) -> Port:
    return value if isinstance(value, Port) else Port(value)


class Method:
    """Base class of every method. Subclass a stage class, not this one.

    Class attributes
    ----------------
    name : str
        ``stage.method`` in snake_case, e.g. ``"segment.watershed"``.
    version : str
        Version of the algorithm; bump it when results change, so cached
        results of the old version are not reused.
    Params : type
        attrs class declaring the parameters (see :func:`cellscape.param`).
    inputs, outputs : dict[str, Port | artefact class]
        Named ports, in call order.
    chunk_port : str or None
        The Volume/Labels input this method can process chunk by chunk (with
        :meth:`chunk_halo` voxels of context), or None when it needs the
        whole volume at once (e.g. a global threshold); see ``cellscape._chunked``.
    mpi_collective : bool
        Under ``mpiexec -n N cellscape run``, run this method on every rank at
        once (it communicates through MPI, e.g. a distributed PETSc solve);
        rank 0's outputs are stored. Other methods run on rank 0 only. A method
        collective for some parameters only (a solver with ``backend: petsc``)
        overrides :meth:`runs_collectively` instead.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams
    inputs: ClassVar[Mapping[str, Port | type[Artefact]]] = {}
    outputs: ClassVar[Mapping[str, Port | type[Artefact]]] = {}
    chunk_port: ClassVar[str | None] = None
    mpi_collective: ClassVar[bool] = False

    def __init__(self, params: Any = None, **values: Any):
        if params is not None and values:
            raise InputError(f"{self.name}: pass either a Params instance or keyword parameters, not both")
        if params is None:
            params = build_params(self.Params, values, where=self.name)
        elif not isinstance(params, self.Params):
            raise InputError(f"{self.name}: params must be {self.Params.__qualname__}, got {type(params).__name__}")
        self.params = params

    # -- description -------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def param_infos(cls) -> list[ParamInfo]:
        return param_infos(cls.Params)

    @classmethod
    def input_ports(cls) -> dict[str, Port]:
        return {k: _port(v) for k, v in cls.inputs.items()}

    @classmethod
    def output_ports(cls) -> dict[str, Port]:
        return {k: _port(v) for k, v in cls.outputs.items()}

    def params_json(self) -> dict[str, Any]:
        return params_to_json(self.params)

    def runs_collectively(self) -> bool:
        """Whether, with these parameters, every MPI rank runs this method together (default: ``mpi_collective``)."""
        return self.mpi_collective

    def chunk_halo(self, voxel_size_nm: tuple[float, float, float]) -> tuple[int, int, int]:
        """Voxels of context (z, y, x) each chunk needs on every side for a result equal to the whole array's.

        Only for chunk-safe methods (``chunk_port`` set); they must override it.
        """
        raise NotImplementedError(f"{self.name} declares chunk_port but not chunk_halo")

    # -- running -----------------------------------------------------------
    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        """Compute every output from the named inputs (the runner's entry point)."""
        raise NotImplementedError

    def progress(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Iterate over ``items`` showing progress in the CLI (silent elsewhere)."""
        return progress(items, total=total, description=description or self.name)

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        ports = self.input_ports()
        for name in inputs:
            if name not in ports:
                raise InputError(f"{self.name}: unknown input '{name}'; inputs are: {', '.join(ports) or 'none'}")
        for name, port in ports.items():
            value = inputs.get(name)
            if value is None:
                if not port.optional:
                    raise InputError(f"{self.name}: input '{name}' ({port.kind.__name__}) is required")
                continue
            if not isinstance(value, port.kind):
                raise InputError(
                    f"{self.name}: input '{name}' must be a {port.kind.__name__}, got {type(value).__name__}"
                )

    def _check_outputs(self, result: Any) -> dict[str, Artefact]:
        ports = self.output_ports()
        if not isinstance(result, Mapping):
            if len(ports) != 1:
                raise TypeError(f"{self.name} must return a dict with outputs {list(ports)}")
            result = {next(iter(ports)): result}
        missing = set(ports) - set(result)
        if missing:
            raise TypeError(f"{self.name} did not return output(s) {sorted(missing)}")
        for name, port in ports.items():
            if not isinstance(result[name], port.kind):
                raise TypeError(
                    f"{self.name} returned {type(result[name]).__name__} for output '{name}', "
                    f"expected {port.kind.__name__}"
                )
        return dict(result)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        names = list(self.input_ports())
        if len(args) > len(names):
            raise InputError(f"{self.name} takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
        inputs = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in inputs:
                raise InputError(f"{self.name}: input '{key}' given twice")
            inputs[key] = value
        self._check_inputs(inputs)
        outputs = self._check_outputs(self.run(**inputs))
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    def __repr__(self) -> str:
        return f"<{self.name} {self.params!r}>"


class Generator(Method):
    """Stage ``generate``: make artefacts (synthetic cells, images, shapes) from parameters and optional inputs.

    Implement ``generate(**inputs)`` returning one artefact or a dict of outputs.
    """

    stage = "generate"

    def generate(self, **inputs: Artefact) -> Any:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return self._check_outputs(self.generate(**inputs))


class Reconstructor(Method):
    """Stage ``reconstruct``: tilt series → tomogram. Implement ``reconstruct(tilts)``."""

    stage = "reconstruct"
    inputs = {"tilts": TiltSeries}
    outputs = {"volume": Volume}

    def reconstruct(self, tilts: TiltSeries) -> Volume:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return {"volume": self.reconstruct(inputs["tilts"])}  # type: ignore[arg-type]


class Filter(Method):
    """Stage ``filter``: volume → volume (denoising, background, normalization). Implement ``filter(volume)``."""

    stage = "filter"
    inputs = {"volume": Volume}
    outputs = {"volume": Volume}

    def filter(self, volume: Volume) -> Volume:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return {"volume": self.filter(inputs["volume"])}  # type: ignore[arg-type]


class Segmenter(Method):
    """Stage ``segment``: volume → labels. Implement ``segment(volume, **extra_inputs)``."""

    stage = "segment"
    inputs = {"volume": Volume}
    outputs = {"labels": Labels}

    def segment(self, volume: Volume, **extra: Artefact) -> Labels:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        volume = inputs.pop("volume")
        return self._check_outputs(self.segment(volume, **inputs))  # type: ignore[arg-type]


class Mesher(Method):
    """Stage ``mesh``: labels → surface mesh. Implement ``mesh(labels)``."""

    stage = "mesh"
    inputs = {"labels": Labels}
    outputs = {"surface": SurfaceMesh}

    def mesh(self, labels: Labels) -> SurfaceMesh:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return {"surface": self.mesh(inputs["labels"])}  # type: ignore[arg-type]


class Tetrahedralizer(Method):
    """Stage ``mesh``: surface mesh → tetrahedral volume mesh. Implement ``tetrahedralize(surface)``."""

    stage = "mesh"
    inputs = {"surface": SurfaceMesh}
    outputs = {"mesh": TetMesh}

    def tetrahedralize(self, surface: SurfaceMesh) -> TetMesh:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return {"mesh": self.tetrahedralize(inputs["surface"])}  # type: ignore[arg-type]


class Solver(Method):
    """Stage ``solve``: volume mesh → fields over time. Implement ``solve(mesh)``; the model is in Params."""

    stage = "solve"
    inputs = {"mesh": TetMesh}
    outputs = {"fields": Fields}

    def solve(self, mesh: TetMesh) -> Fields:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return {"fields": self.solve(inputs["mesh"])}  # type: ignore[arg-type]


class Analyzer(Method):
    """Stage ``analyze``: any artefacts → a table (and figures in the report). Implement ``analyze(**inputs)``."""

    stage = "analyze"
    outputs = {"table": Table}

    def analyze(self, **inputs: Artefact) -> Any:
        raise NotImplementedError

    def run(self, **inputs: Artefact) -> dict[str, Artefact]:
        return self._check_outputs(self.analyze(**inputs))
