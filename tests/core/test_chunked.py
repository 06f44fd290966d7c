"""Chunked processing with halos: equal to whole-array processing, bounded memory, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cellscape as cs
from cellscape._chunked import lazy_volume, run_chunked


def volume(shape=(41, 37, 33), voxel=(2.0, 1.0, 1.5), seed=0) -> cs.Volume:
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    return cs.Volume(data, voxel_size_nm=voxel, origin_nm=(5.0, 0.0, -3.0))


@pytest.mark.parametrize("method", [
    cs.method("filter.gaussian", sigma_nm=2.5),
    cs.method("filter.gaussian", sigma_voxels=1.5, truncate=3.0),
    cs.method("filter.median", size_voxels=5),
])
@pytest.mark.parametrize("chunks", [(16, 20, 13), 12, (41, 37, 33)])
def test_chunked_equals_whole_array(method, chunks, tmp_path) -> None:
    vol = volume()
    whole = method(vol)
    out = run_chunked(method, {"volume": vol}, chunks, tmp_path)["volume"]
    assert isinstance(out.data, np.memmap)
    assert out.voxel_size_nm == vol.voxel_size_nm and out.origin_nm == vol.origin_nm
    np.testing.assert_allclose(np.asarray(out.data), whole.data, rtol=0, atol=1e-6)
    assert method.chunk_halo(vol.voxel_size_nm) != (0, 0, 0)


def test_halo_is_what_makes_chunks_equal(tmp_path) -> None:
    """The same chunking with the halo set to zero differs at chunk borders: the halo is not decorative."""
    method = cs.method("filter.gaussian", sigma_nm=2.0)
    vol = volume()

    class NoHalo(type(method)):
        def chunk_halo(self, voxel_size_nm):
            return (0, 0, 0)

    wrong = run_chunked(NoHalo(method.params), {"volume": vol}, 12, tmp_path)["volume"]
    assert np.abs(np.asarray(wrong.data) - method(vol).data).max() > 1e-3


def test_lazy_inputs_from_ome_zarr_and_mrc(tmp_path) -> None:
    vol = volume()
    cs.write(vol, tmp_path / "v.ome.zarr")
    cs.write(vol, tmp_path / "v.mrc")
    method = cs.method("filter.median", size_voxels=3)
    expected = method(vol).data
    for name in ("v.ome.zarr", "v.mrc"):
        lazy = lazy_volume(tmp_path / name)
        assert lazy.shape == vol.shape
        out = run_chunked(method, {"volume": lazy}, 16, tmp_path / "scratch")["volume"]
        np.testing.assert_allclose(np.asarray(out.data), expected, atol=1e-6)
        np.testing.assert_allclose(out.voxel_size_nm, vol.voxel_size_nm, rtol=1e-5)


SPEC = """\
version: 1
name: chunked
steps:
  - id: smooth
    use: filter.gaussian
    inputs: {{volume: {{file: v.ome.zarr}}}}
    with: {{sigma_nm: 2.0}}
    {chunks}
    save: smooth.ome.zarr
"""


def test_spec_step_with_chunks_matches_the_whole_array_run(tmp_path) -> None:
    vol = volume()
    cs.write(vol, tmp_path / "v.ome.zarr")
    (tmp_path / "whole.yaml").write_text(SPEC.format(chunks=""))
    (tmp_path / "chunked.yaml").write_text(SPEC.format(chunks="chunks: [16, 20, 13]"))
    whole = cs.run(tmp_path / "whole.yaml", run_dir=tmp_path / "run", report=False)
    chunked = cs.run(tmp_path / "chunked.yaml", run_dir=tmp_path / "run", report=False)
    assert chunked.computed == ["smooth"]  # chunking is part of the cache key
    np.testing.assert_allclose(chunked.artefact("smooth").data, whole.artefact("smooth").data, atol=1e-6)
    saved = cs.read(tmp_path / "run" / "smooth.ome.zarr")
    np.testing.assert_allclose(saved.data, whole.artefact("smooth").data, atol=1e-6)
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())["steps"][0]
    assert record["chunks"] == [16, 20, 13]
    assert not list((tmp_path / "run" / "store" / "scratch").glob("*.npy"))  # the scratch copy is gone


def test_a_method_that_is_not_chunk_safe_is_a_spec_error_naming_it(tmp_path) -> None:
    cs.write(volume(), tmp_path / "v.ome.zarr")
    (tmp_path / "bad.yaml").write_text(SPEC.format(chunks="chunks: 16").replace("filter.gaussian", "filter.normalize")
                                       .replace("{sigma_nm: 2.0}", "{}"))
    with pytest.raises(cs.SpecError, match=r"bad.yaml:8.*filter.normalize is not chunk-safe"):
        cs.run(tmp_path / "bad.yaml", run_dir=tmp_path / "run")


def test_chunks_smaller_than_the_halo_are_an_error_saying_what_to_use(tmp_path) -> None:
    method = cs.method("filter.gaussian", sigma_nm=6.0)  # radius 24 voxels along x (1 nm voxels)
    with pytest.raises(cs.InputError, match=r"chunks \(12, 12, 12\) are smaller than the halo .* at least 24 voxels"):
        run_chunked(method, {"volume": volume((60, 60, 60), (1.0, 1.0, 1.0))}, 12, tmp_path)


CHILD = textwrap.dedent("""
    import resource, sys, threading
    import numpy as np
    import cellscape as cs
    from cellscape._chunked import lazy_volume, run_chunked

    path, mode, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
    method = cs.method("filter.gaussian", sigma_nm=2.0)
    threading.stack_size(1 << 20)
    # warm up once on a small file: imports, thread pools and codecs exist before the cap
    small = scratch + "/small.ome.zarr"
    cs.write(cs.Volume(np.ones((20, 20, 20), np.float32)), small)
    for _ in range(2):
        run_chunked(method, {{"volume": lazy_volume(small)}}, 10, scratch)
    method(cs.read(small))
    data_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData"))
    cap = data_kb * 1024 + {cap}  # half the volume on top of what the process holds now
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    try:
        if mode == "chunked":
            out = run_chunked(method, {{"volume": lazy_volume(path)}}, 32, scratch)["volume"]
        else:
            out = method(cs.read(path))
    except (MemoryError, cs.InputError) as exc:
        print("out of memory:", type(exc).__name__)
        sys.exit(3)
    print("done", float(np.asarray(out.data[500:510, 60:70, 60:70]).mean()))
""")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_volume_larger_than_the_memory_given_is_processed_chunked(tmp_path) -> None:
    """Under a data-memory cap of half the volume, the chunked run completes and the whole-array run cannot."""
    shape = (1024, 128, 128)  # 64 MiB of float32: deep, so a slab of chunks is a small part of it
    vol = volume(shape, (1.0, 1.0, 1.0))
    cs.write(vol, tmp_path / "deep.ome.zarr")
    expected = float(cs.method("filter.gaussian", sigma_nm=2.0)(vol).data[500:510, 60:70, 60:70].mean())
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(cap=vol.data.nbytes // 2))
    # glibc otherwise gives each thread its own malloc arena, which counts against RLIMIT_DATA however little it holds
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    runs = {}
    for mode in ("chunked", "whole"):
        runs[mode] = subprocess.run([sys.executable, str(script), str(tmp_path / "deep.ome.zarr"), mode, str(tmp_path)],
                                    capture_output=True, text=True, env=env, timeout=500)
    assert runs["chunked"].returncode == 0, runs["chunked"].stdout + runs["chunked"].stderr[-2000:]
    assert abs(float(runs["chunked"].stdout.split()[-1]) - expected) < 1e-5
    assert runs["whole"].returncode == 3, "the cap must be too small for the whole-array run, or the test proves nothing"


def test_peak_memory_is_set_by_the_chunks_not_the_volume(tmp_path) -> None:
    """A cube 8× larger than the bound is filtered chunked with at most volume/8 allocated at once (tracemalloc).

    The bound: two threads, each holding a 48³ block (the 32³ chunk and its 8-voxel halo), one decoded 64³ stored
    chunk and the trimmed output, about 1.5 MiB each; one slab of chunks (32 × 256 × 256 plus halos) would need 12 MiB.
    """
    import tracemalloc

    vol = volume((256, 256, 256), (1.0, 1.0, 1.0), seed=3)
    cs.write(vol, tmp_path / "cube.ome.zarr")
    method = cs.method("filter.gaussian", sigma_nm=2.0)
    expected = method(vol).data[100:140, 30:90, 200:256].copy()
    nbytes = vol.data.nbytes
    del vol
    lazy = lazy_volume(tmp_path / "cube.ome.zarr")
    tracemalloc.start()
    try:
        out = run_chunked(method, {"volume": lazy}, 32, tmp_path / "scratch", workers=2)["volume"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(np.asarray(out.data[100:140, 30:90, 200:256]), expected, atol=1e-6)
    assert peak < nbytes / 8, f"peak {peak / 2**20:.1f} MiB for a {nbytes / 2**20:.0f} MiB volume"
