# cellscape — every target sets up .venv itself, from nothing but Python 3.11+.
#   make demo    light install (no torch, no PETSc), then the demo pipeline end to end
#   make test    full install (all extras, contrib plugins, PETSc), then the test suite
#   make bench   full install, then the benchmarks; tables go to benchmarks/results/

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PETSC_VERSION := 3.26.1
TORCH_VERSION := 2.13.0
# Serial PETSc without Fortran until the scale-out work adds MPI.
export PETSC_CONFIGURE_OPTIONS ?= --with-mpi=0 --with-cuda=0 --with-fc=0

.PHONY: demo test bench lint clean env env-full blas

$(VENV)/.light: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# the demo meshes (pymeshlab checks surfaces before TetGen) and solves (pyamg): light, but not bare
	$(PIP) install -q -e ".[mesh,solve]"
	touch $@

env: $(VENV)/.light

# PETSc has no wheels: it compiles against BLAS/LAPACK headers (Debian packages).
blas:
	@if dpkg -s libopenblas-dev liblapack-dev >/dev/null 2>&1; then \
	    echo "BLAS/LAPACK headers: present"; \
	elif [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas-dev liblapack-dev; \
	else \
	    echo "PETSc needs BLAS/LAPACK headers: run as root 'apt-get install libopenblas-dev liblapack-dev' (or sudo), then make again" >&2; \
	    exit 1; \
	fi

$(VENV)/.full: $(VENV)/.light contrib/cellscape-example/pyproject.toml | blas
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[ml,mesh,solve,dask,dev]"
	# petsc4py's own isolated build would compile PETSc a second time: build it against the installed one.
	$(PIP) install -q cython numpy setuptools
	$(PIP) install -q petsc==$(PETSC_VERSION)
	$(PIP) install -q --no-build-isolation petsc4py==$(PETSC_VERSION)
	$(PIP) install -q -e contrib/cellscape-example
	touch $@

env-full: $(VENV)/.full

# the peers the benchmarks compare against (ASTRA pulls CUDA runtime wheels: only for make bench)
$(VENV)/.bench: $(VENV)/.full
	$(PIP) install -q -e ".[bench]"
	touch $@

demo: $(VENV)/.light
	$(VENV)/bin/cellscape run spec/examples/demo.yaml --run-dir runs/demo

test: $(VENV)/.full
	$(VENV)/bin/ruff check core plugins tests contrib benchmarks
	$(PY) -m pytest -q

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py

lint: $(VENV)/.full
	$(VENV)/bin/ruff check core plugins tests contrib benchmarks

clean:
	rm -rf $(VENV) runs cellscape-runs .pytest_cache .ruff_cache
