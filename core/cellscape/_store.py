"""The content-addressed artefact store and step cache of a run directory.

Layout of a run directory::

    run_dir/
      store/objects/ab/abcdef….npz    artefacts, named by their content hash
      store/steps/<cache key>.json    which artefacts a step produced for a cache key
      provenance.json                 what the last run did
      outputs you asked to save, report/

Every file is written to a temporary name and moved into place, and a step's
cache entry is written only after all its artefacts: a run killed at any
moment leaves either a complete entry or none, never a half-written file
that a later run could read.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ._data import Artefact
from ._errors import InputError, StoreError
from ._payload import atomic_write, content_hash, read_npz, write_npz


def cache_key(method: str, version: str, params: dict[str, Any], input_hashes: dict[str, str]) -> str:
    """Hash of everything that determines a step's outputs."""
    record = {"method": method, "version": version, "params": params, "inputs": input_hashes}
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (of every file, in name order, for a directory such as .zarr)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Store:
    """Artefacts by content hash, and step results by cache key, under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.steps = self.root / "steps"

    def _object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / f"{digest}.npz"

    def put(self, artefact: Artefact) -> str:
        """Store an artefact (once) and return its content hash."""
        digest = content_hash(artefact)
        path = self._object_path(digest)
        if not path.exists():
            write_npz(artefact, path)
        return digest

    def has(self, digest: str) -> bool:
        return self._object_path(digest).exists()

    def get(self, digest: str, verify: bool = True) -> Artefact:
        """Load an artefact; with ``verify``, check that its content still matches its hash."""
        path = self._object_path(digest)
        if not path.exists():
            raise StoreError(f"artefact {digest[:12]} is missing from {self.objects}")
        try:
            artefact = read_npz(path)
        except InputError as exc:
            raise StoreError(f"artefact {path} is damaged ({exc}); delete it and run again") from exc
        if verify and content_hash(artefact) != digest:
            raise StoreError(f"artefact {path} does not match its hash; delete it and run again")
        return artefact

    def path_of(self, digest: str) -> Path:
        return self._object_path(digest)

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The cached result of a cache key, if complete (every artefact present)."""
        path = self.steps / f"{key}.json"
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not all(self.has(o["hash"]) for o in entry.get("outputs", {}).values()):
            return None
        return entry

    def record(self, key: str, entry: dict[str, Any]) -> None:
        """Write a step's cache entry (after its artefacts are stored)."""
        entry = {**entry, "key": key, "recorded": time.time()}
        text = json.dumps(entry, indent=1, sort_keys=True)
        atomic_write(self.steps / f"{key}.json", lambda tmp: tmp.write_text(text))

    def clean_temporaries(self) -> int:
        """Remove temporary files a killed run left behind; return how many."""
        count = 0
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            count += 1
        return count
