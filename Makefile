# cellscape — every target sets up .venv itself, from nothing but Python 3.11+.
#   make demo    light install (no torch, no PETSc), then the demo pipeline end to end
#   make test    full install (all extras, contrib plugins, MPICH + PETSc with MPI), then the test suite
#   make bench   full install, then the benchmarks; tables go to benchmarks/results/

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PETSC_VERSION := 3.26.1
TORCH_VERSION := 2.13.0
# PETSc built against Debian's MPICH (mpicc), without Fortran or CUDA.
export PETSC_CONFIGURE_OPTIONS ?= --with-cuda=0 --with-fc=0
# PETSc and petsc4py have no wheels: they are built once (about 15 min on 2 cores) into this wheelhouse, outside
# the checkout and keyed by version and MPI, so fresh clones on this machine install them in seconds. pip's own
# cache cannot do this: it would reuse a wheel built with other configure options.
PETSC_WHEELS ?= $(HOME)/.cache/cellscape-wheels/petsc-$(PETSC_VERSION)-mpich
SYSTEM_PACKAGES := libopenblas-dev liblapack-dev mpich libmpich-dev chromium libegl1 libegl-mesa0 libgl1-mesa-dri

.PHONY: demo test bench lint clean env env-full sysdeps

$(VENV)/.light: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# the demo meshes (pymeshlab checks surfaces before TetGen) and solves (pyamg): light, but not bare
	$(PIP) install -q -e ".[mesh,solve]"
	touch $@

env: $(VENV)/.light

# PETSc compiles against BLAS/LAPACK headers and an MPI (Debian packages; mpiexec runs the 2-rank tests);
# the report test opens a run report in headless Chromium.
sysdeps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
	    echo "BLAS/LAPACK headers and MPICH: present"; \
	elif [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	else \
	    echo "PETSc needs BLAS/LAPACK headers and MPI: run as root 'apt-get install $(SYSTEM_PACKAGES)' (or sudo), then make again" >&2; \
	    exit 1; \
	fi

$(PETSC_WHEELS)/.built: | sysdeps
	rm -rf $(PETSC_WHEELS)
	$(PYTHON) -m venv $(PETSC_WHEELS)/build-venv
	$(PETSC_WHEELS)/build-venv/bin/pip install -q --disable-pip-version-check cython numpy setuptools wheel
	MPICC=mpicc $(PETSC_WHEELS)/build-venv/bin/pip wheel -q --no-deps --no-cache-dir petsc==$(PETSC_VERSION) -w $(PETSC_WHEELS)
	$(PETSC_WHEELS)/build-venv/bin/pip install -q $(PETSC_WHEELS)/petsc-$(PETSC_VERSION)-*.whl
	# petsc4py's own isolated build would compile PETSc a second time: build it against the one just installed
	$(PETSC_WHEELS)/build-venv/bin/pip wheel -q --no-deps --no-cache-dir --no-build-isolation petsc4py==$(PETSC_VERSION) -w $(PETSC_WHEELS)
	touch $@

$(VENV)/.full: $(VENV)/.light contrib/cellscape-example/pyproject.toml $(PETSC_WHEELS)/.built | sysdeps
	$(PIP) install -q torch==$(TORCH_VERSION)
	# mpi4py's binary wheel looks for libmpi.so.12; Debian's MPICH is libmpich.so.12: build it against mpicc
	$(PIP) install -q --no-binary mpi4py "mpi4py>=4"
	$(PIP) install -q -e ".[ml,mesh,solve,dask,mpi,dev]"
	$(PIP) install -q --no-index --find-links $(PETSC_WHEELS) petsc==$(PETSC_VERSION) petsc4py==$(PETSC_VERSION)
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
	CELLSCAPE_FULL_ENV=1 $(PY) -m pytest -q

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py

lint: $(VENV)/.full
	$(VENV)/bin/ruff check core plugins tests contrib benchmarks

clean:
	rm -rf $(VENV) runs cellscape-runs .pytest_cache .ruff_cache
