"""Lossless artefact files (.npz) and content hashes.

An artefact file is an uncompressed NumPy ``.npz`` holding the payload arrays
plus two small entries: ``__kind__`` (the artefact kind) and ``__meta__`` (the
JSON metadata as UTF-8 bytes). It is read with ``allow_pickle=False``: no file
can run code when loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._data import Artefact, artefact_kinds, canonical_meta
from ._errors import InputError

#: arrays larger than this are hashed slab by slab along their first axis
_HASH_BLOCK_BYTES = 16 << 20


def content_hash(obj: Artefact) -> str:
    """SHA-256 of an artefact's content (kind, metadata, every array's dtype, shape and bytes)."""
    arrays, meta = obj.to_payload()
    digest = hashlib.sha256()
    digest.update(obj.kind.encode() + b"\0" + canonical_meta(meta) + b"\0")
    for name in sorted(arrays):
        array = np.asarray(arrays[name], order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        header = f"{name}|{array.dtype.str}|{array.shape}".encode()
        digest.update(header + b"\0")
        if array.dtype.kind == "U":
            digest.update(json.dumps(array.tolist()).encode())
        elif array.ndim == 0 or array.nbytes <= _HASH_BLOCK_BYTES:
            digest.update(array.tobytes())
        else:  # slab by slab: the same bytes in the same order, without a copy of a (memory-mapped) volume
            step = max(1, _HASH_BLOCK_BYTES // max(1, array[0].nbytes))
            for start in range(0, len(array), step):
                digest.update(np.ascontiguousarray(array[start:start + step]).data)
    return digest.hexdigest()


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place in one step.

    A reader never sees a half-written file: either the old one, none, or
    the complete new one (``os.replace`` is atomic on one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_npz(obj: Artefact, path: str | os.PathLike[str]) -> None:
    """Write an artefact to a ``.npz`` file atomically."""
    arrays, meta = obj.to_payload()
    entries = {name.replace("/", "::"): np.asarray(a, order="C") for name, a in arrays.items()}
    entries["__kind__"] = np.frombuffer(obj.kind.encode(), dtype=np.uint8)
    entries["__meta__"] = np.frombuffer(canonical_meta(meta), dtype=np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **entries)

    atomic_write(Path(path), write)


def read_npz(path: str | os.PathLike[str]) -> Artefact:
    """Read an artefact written by :func:`write_npz`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable cellscape .npz file ({exc})") from exc
    if "__kind__" not in entries or "__meta__" not in entries:
        raise InputError(f"{path}: .npz file lacks the __kind__/__meta__ entries cellscape writes")
    kind = entries.pop("__kind__").tobytes().decode()
    meta = json.loads(entries.pop("__meta__").tobytes().decode())
    cls = artefact_kinds().get(kind)
    if cls is None:
        raise InputError(f"{path}: unknown artefact kind '{kind}' (is the plugin that defines it installed?)")
    arrays = {name.replace("::", "/"): a for name, a in entries.items()}
    try:
        return cls.from_payload(arrays, meta)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: {kind} file is missing or has malformed entry {exc}") from exc
