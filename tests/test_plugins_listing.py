"""`cellscape plugins` lists every built-in method and the contrib one, with stage, distribution and version."""

from __future__ import annotations

import json

from cellscape.cli import main

BUILT_IN = {
    "generate.phantom_cell": "generate", "generate.tilt_series": "generate", "reconstruct.wbp": "reconstruct",
    "segment.threshold": "segment", "segment.watershed": "segment", "mesh.marching_cubes": "mesh",
    "mesh.tetrahedralize": "mesh", "solve.diffusion": "solve", "analyze.summary": "analyze",
}


def test_listing(capsys) -> None:
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    methods = {m["name"]: m for m in listing["methods"]}
    for name, stage in BUILT_IN.items():
        assert methods[name]["stage"] == stage
        assert methods[name]["distribution"] == "cellscape"
        assert methods[name]["version"] == "0.1.0"
        assert methods[name]["summary"]
    assert methods["segment.ridge_membrane"]["distribution"] == "cellscape-example"
    assert listing["failures"] == [] and listing["conflicts"] == {}


def test_every_parameter_has_help_and_every_method_a_docstring() -> None:
    import cellscape as cs

    for info in cs.methods():
        assert info.summary, info.name
        for param in info.params:
            assert param.help, f"{info.name}.{param.name}"


def test_listing_builtin_methods_imports_no_heavy_library() -> None:
    """Discovery imports plugin modules only: numerical libraries load when a method runs."""
    import subprocess
    import sys

    heavy = ("scipy", "skimage", "sklearn", "torch", "vtk", "pymeshlab", "tetgen", "petsc4py", "matplotlib", "numba")
    code = f"import sys, cellscape as cs; cs.methods(); print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
