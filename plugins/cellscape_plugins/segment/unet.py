"""``segment.unet``: a 2D or 3D U-Net trained from sparse labels, with tiled inference.

Training needs only scribbles: a labels image where 0 means "unlabeled" and
1..K are classes. The loss is cross-entropy over labeled voxels only
(unlabeled ones are ignored), optionally weighted so rare classes count as
much as common ones. Patches are drawn around labeled voxels and augmented
with flips, 90° rotations in the image plane, intensity jitter and
(optionally) a smooth elastic deformation. ``dim: 2`` runs the network on
XY slices — the right choice for anisotropic EM stacks and the fastest on a
CPU; ``dim: 3`` on 3D patches.

Inference covers the volume with overlapping tiles and blends their class
probabilities with a smooth window, so tile borders leave no seams; only a
tile at a time is in the network.

The trained network is a :class:`cellscape.Model` (its state dict as
arrays plus the architecture, class names and intensity normalisation), so
it is cached, saved (``save: {model: unet.npz}``) and reused like any
artefact: give it back as the ``model`` input to segment new data, or
together with ``training_labels`` to fine-tune it on a new cell type.
``save("weights.pt")`` / ``load("weights.pt")`` exchange plain PyTorch
state dicts, read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import math
import pickle  # only for its error type: weights are read with weights_only=True
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._training import segmentation_outputs, training_classes
from ._unet_net import build


@attrs.frozen
class UNetParams:
    dim: int = cs.param(2, choices=(2, 3), help="2: network on XY slices (anisotropic stacks, fast); 3: on 3D patches")
    base_channels: int = cs.param(8, ge=2, le=128, help="feature channels of the first level (doubling per level)")
    depth: int = cs.param(3, ge=2, le=6, help="resolution levels")
    patch_voxels: int = cs.param(64, ge=16, le=512, unit="voxel", help="training patch and inference tile edge")
    iterations: int = cs.param(300, ge=0, le=1_000_000, help="training steps (0 with a model: no fine-tuning)")
    batch_size: int = cs.param(4, ge=1, le=256, help="patches per training step")
    learning_rate: float = cs.param(1e-3, gt=0, le=1, help="Adam step size")
    class_weight: str | None = cs.param("balanced", choices=("balanced", None),
                                        help="balanced: rare labeled classes weigh as much as common ones")
    augment: bool = cs.param(True, help="flips, 90° in-plane rotations and intensity jitter")
    elastic: bool = cs.param(False, help="also a smooth random elastic deformation of training patches")
    overlap: float = cs.param(0.25, ge=0, lt=0.75, help="tile overlap at inference, as a fraction of the tile")
    seed: int = cs.param(0, help="random seed: same seed, same network")
    device: str = cs.param("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available")


def _torch() -> Any:
    return cs.require("torch", extra="ml", who="segment.unet")


def blend_window(shape: tuple[int, ...], overlap: int) -> np.ndarray:
    """Tile weights: 1 inside, falling smoothly (raised cosine) to a small floor over ``overlap`` voxels at the edges."""
    weights = np.ones(shape, np.float32)
    for axis, n in enumerate(shape):
        ramp = np.ones(n, np.float32)
        if overlap > 0 and n > 2 * overlap:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
            ramp[:overlap] = edge
            ramp[-overlap:] = edge[::-1]
        weights *= np.maximum(ramp, 1e-3).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return weights


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start positions covering 0..n with tiles of ``tile`` overlapping by at least ``overlap``."""
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = [*range(0, n - tile, step), n - tile]
    return sorted(set(starts))


class UNet(cs.Segmenter):
    """2D/3D U-Net from sparse labels: masked loss, class weights, augmentation, tiled blended inference."""

    name = "segment.unet"
    Params = UNetParams
    inputs = {
        "volume": cs.Volume,
        "training_labels": cs.Port(cs.Labels, optional=True, help="sparse labels: 0 unlabeled, 1..K classes"),
        "model": cs.Port(cs.Model, optional=True, help="a trained segment.unet model (to apply or fine-tune)"),
    }
    outputs = {
        "labels": cs.Labels,
        "probability": cs.Port(cs.Volume, help="probability of the chosen class at each voxel"),
        "model": cs.Model,
    }

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self.model: cs.Model | None = None
        self.history: list[float] = []

    # -- the stage call -------------------------------------------------------------------------------------------

    def segment(self, volume: cs.Volume, training_labels: cs.Labels | None = None,
                model: cs.Model | None = None) -> dict[str, cs.Artefact]:
        if model is not None:
            self.load(model)
        if training_labels is not None:
            self.fit(volume, training_labels)
        elif self.model is None:
            raise cs.InputError(f"{self.name}: give 'training_labels' to train a network, or a trained 'model' "
                                "to apply")
        probabilities = self.predict_proba(volume)
        assert self.model is not None
        return segmentation_outputs(probabilities, self.model, volume)

    # -- training -------------------------------------------------------------------------------------------------

    def fit(self, volume: cs.Volume, training_labels: cs.Labels) -> cs.Model:
        """Train (or fine-tune the loaded model) on the labeled voxels; returns the trained :class:`cellscape.Model`."""
        torch = _torch()
        p = self.params
        values = training_classes(volume, training_labels, self.name)
        data = np.asarray(volume.data, np.float32)
        if self.model is not None:
            meta = dict(self.model.meta)
            if meta["class_values"] != values:
                raise cs.InputError(f"{self.name}: the model knows classes {meta['class_values']}, the training labels "
                                    f"hold {values}; fine-tuning needs the same classes")
        else:
            mean, std = float(data.mean()), float(data.std()) or 1.0
            meta = {"dim": p.dim, "base_channels": p.base_channels, "depth": p.depth, "class_values": values,
                    "class_names": {str(v): training_labels.class_names.get(v, f"class_{v}") for v in values},
                    "mean": mean, "std": std, "patch_voxels": p.patch_voxels}
        target = np.full(training_labels.shape, -1, np.int64)
        for index, value in enumerate(values):
            target[training_labels.data == value] = index
        image = (data - meta["mean"]) / meta["std"]
        device = self._device()
        with _seeded(torch, p.seed):
            net = self._network(meta, device)
            if self.model is not None:
                _load_state(torch, net, self.model.arrays, self.name)
            weights = None
            if p.class_weight == "balanced":
                counts = np.bincount(target[target >= 0], minlength=len(values)).astype(np.float64)
                weights = torch.tensor(counts.sum() / (len(values) * np.maximum(counts, 1)), dtype=torch.float32,
                                       device=device)
            optimiser = torch.optim.Adam(net.parameters(), lr=p.learning_rate)
            rng = np.random.default_rng(p.seed)
            patches = _PatchSampler(image, target, meta["dim"], p.patch_voxels, meta["depth"], rng)
            self.history = []
            net.train()
            for _ in self.progress(range(p.iterations), description="training"):
                x, y = patches.batch(p.batch_size, p.augment, p.elastic)
                logits = net(torch.from_numpy(x).to(device))
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).to(device), weight=weights,
                                                         ignore_index=-1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                self.history.append(float(loss.item()))
        state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        meta["iterations"] = int(meta.get("iterations", 0)) + p.iterations
        self.model = cs.Model(self.name, state, meta)
        return self.model

    # -- inference ------------------------------------------------------------------------------------------------

    def predict_proba(self, volume: cs.Volume) -> np.ndarray:
        """Class probabilities, shape (K, z, y, x), float32, by overlapping tiles blended with a smooth window."""
        torch = _torch()
        if self.model is None:
            raise cs.InputError(f"{self.name}: no trained network; call fit() or load() first")
        meta = self.model.meta
        device = self._device()
        net = self._network(meta, device)
        _load_state(torch, net, self.model.arrays, self.name)
        net.eval()
        image = (np.asarray(volume.data, np.float32) - meta["mean"]) / meta["std"]
        n_classes = len(meta["class_values"])
        multiple = 2 ** (meta["depth"] - 1)
        dim = meta["dim"]
        spatial = image.shape if dim == 3 else image.shape[1:]
        edge = _round_up(self.params.patch_voxels, multiple)
        tile = tuple(min(edge, _round_up(n, multiple)) for n in spatial)
        padded, crop = _pad_to(image, tile if dim == 3 else (1, *tile), multiple, dim)
        total = np.zeros((n_classes, *padded.shape), np.float32)
        weight_sum = np.zeros(padded.shape, np.float32)
        overlap = [round(self.params.overlap * t) for t in tile]
        window = blend_window(tile, min(overlap) if overlap else 0)
        grid_shape = padded.shape if dim == 3 else padded.shape[1:]
        starts = [tile_starts(n, t, o) for n, t, o in zip(grid_shape, tile, overlap, strict=True)]
        corners = [tuple(c) for c in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(tile))]
        planes = [None] if dim == 3 else list(range(padded.shape[0]))
        jobs = [(plane, corner) for plane in planes for corner in corners]
        with torch.no_grad():
            for batch in self.progress(list(_chunks(jobs, 8)), description="predicting"):
                tiles = []
                for plane, corner in batch:
                    region = tuple(slice(c, c + t) for c, t in zip(corner, tile, strict=True))
                    tiles.append(padded[region] if dim == 3 else padded[plane][region])
                logits = net(torch.from_numpy(np.stack(tiles)[:, None]).to(device))
                probabilities = torch.softmax(logits, dim=1).cpu().numpy()
                for (plane, corner), prob in zip(batch, probabilities, strict=True):
                    region = tuple(slice(c, c + t) for c, t in zip(corner, tile, strict=True))
                    if dim == 3:
                        total[(slice(None), *region)] += prob * window
                        weight_sum[region] += window
                    else:
                        total[(slice(None), plane, *region)] += prob * window
                        weight_sum[(plane, *region)] += window
        result = total / weight_sum
        return np.ascontiguousarray(result[(slice(None), *crop)])

    # -- saving and loading ---------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the trained network: ``.pt`` as a PyTorch state dict (+ architecture), else any cellscape format."""
        if self.model is None:
            raise cs.InputError(f"{self.name}: nothing to save; train the network first")
        path = Path(path)
        if path.suffix == ".pt":
            torch = _torch()
            state = {k: torch.from_numpy(np.array(v)) for k, v in self.model.arrays.items()}
            torch.save({"state_dict": state, "meta": self.model.meta}, path)
        else:
            cs.write(self.model, path)

    def load(self, source: str | Path | cs.Model) -> UNet:
        """Use a trained network: a :class:`cellscape.Model`, a saved model file, or a ``.pt`` state dict."""
        if isinstance(source, cs.Model):
            self.model = source.require(self.name)
            return self
        path = Path(source)
        if path.suffix == ".pt":
            torch = _torch()
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                arrays = {k: v.numpy() for k, v in saved["state_dict"].items()}
                meta = dict(saved["meta"])
            except (OSError, RuntimeError, KeyError, TypeError, AttributeError, ValueError, EOFError,
                    pickle.UnpicklingError) as exc:
                raise cs.InputError(f"{path}: not a segment.unet weights file ({type(exc).__name__}: {exc})") from exc
            self.model = cs.Model(self.name, arrays, meta)
        else:
            model = cs.read(path)
            if not isinstance(model, cs.Model):
                raise cs.InputError(f"{path}: holds a {type(model).__name__}, not a trained model")
            self.model = model.require(self.name)
        # fail now, not at the first prediction, when the weights do not fit the architecture
        _load_state(_torch(), self._network(self.model.meta, "cpu"), self.model.arrays, f"{self.name} ({path})")
        return self

    # -- helpers --------------------------------------------------------------------------------------------------

    def _device(self) -> str:
        torch = _torch()
        wanted = self.params.device
        if wanted == "cuda" and not torch.cuda.is_available():
            raise cs.InputError(f"{self.name}: parameter 'device' is 'cuda' but PyTorch sees no CUDA device; "
                                "use device: auto or cpu")
        return "cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu"

    def _network(self, meta: dict[str, Any], device: str) -> Any:
        return build(int(meta["dim"]), len(meta["class_values"]), int(meta["base_channels"]), int(meta["depth"])).to(device)


def _load_state(torch: Any, net: Any, arrays: dict[str, np.ndarray], who: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong = [f"{k} {tuple(arrays[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in expected if k in arrays and tuple(arrays[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        details = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"wrong shapes: {', '.join(wrong[:3])}" if wrong else "",
        ]))
        raise cs.InputError(f"{who}: the weights do not fit the network architecture ({details})")
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


@contextlib.contextmanager
def _seeded(torch: Any, seed: int) -> Iterator[None]:
    """Seed PyTorch and make its algorithms deterministic for the block."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _pad_to(image: np.ndarray, tile: tuple[int, ...], multiple: int, dim: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Reflect-pad so every axis is at least a tile and a multiple of the network's stride; return the crop back."""
    pads = []
    for axis, n in enumerate(image.shape):
        if dim == 2 and axis == 0:
            pads.append((0, 0))
            continue
        size = max(tile[axis], _round_up(n, multiple))
        pads.append((0, size - n))
    mode = "reflect" if all(b < n for (_, b), n in zip(pads, image.shape, strict=True)) else "edge"
    padded = np.pad(image, pads, mode=mode)
    return padded, tuple(slice(0, n) for n in image.shape)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _PatchSampler:
    """Random training patches centred on labeled voxels, with augmentation."""

    def __init__(self, image: np.ndarray, target: np.ndarray, dim: int, patch: int, depth: int,
                 rng: np.random.Generator):
        self.dim, self.rng = dim, rng
        multiple = 2 ** (depth - 1)
        if dim == 2:
            self.size = (1, *(min(patch, _round_up(n, multiple)) for n in image.shape[1:]))
        else:
            self.size = tuple(min(patch, _round_up(n, multiple)) for n in image.shape)
        half = [s // 2 for s in self.size]
        pads = [(h, s - h) for h, s in zip(half, self.size, strict=True)]
        mode = "reflect" if all(p[1] < n for p, n in zip(pads, image.shape, strict=True)) else "edge"
        self.image = np.pad(image, pads, mode=mode)
        self.target = np.pad(target, pads, constant_values=-1)
        self.labeled = np.argwhere(target >= 0)

    def batch(self, n: int, augment: bool, elastic: bool) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for centre in self.labeled[self.rng.integers(0, len(self.labeled), n)]:
            region = tuple(slice(c, c + s) for c, s in zip(centre, self.size, strict=True))  # padded coordinates
            x, y = self.image[region], self.target[region]
            if self.dim == 2:
                x, y = x[0], y[0]
            if augment:
                x, y = self._augment(x, y)
            if elastic:
                x, y = _elastic(x, y, self.rng)
            xs.append(np.ascontiguousarray(x, np.float32))
            ys.append(np.ascontiguousarray(y, np.int64))
        return np.stack(xs)[:, None], np.stack(ys)

    def _augment(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        for axis in range(x.ndim):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
        if x.shape[-1] == x.shape[-2]:  # 90° turns in the image (y, x) plane only: z may be anisotropic
            turns = int(rng.integers(0, 4))
            x, y = np.rot90(x, turns, axes=(-2, -1)), np.rot90(y, turns, axes=(-2, -1))
        x = x * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        return x, y


def _elastic(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, strength: float = 3.0,
             spacing: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random in-plane deformation: coarse random displacements, upsampled cubically."""
    from scipy import ndimage

    plane = x.shape[-2:]
    coarse = [rng.normal(0, strength, (max(2, plane[0] // spacing), max(2, plane[1] // spacing))) for _ in range(2)]
    shift = [ndimage.zoom(c, (plane[0] / c.shape[0], plane[1] / c.shape[1]), order=3)[: plane[0], : plane[1]]
             for c in coarse]
    grid = np.meshgrid(np.arange(plane[0]), np.arange(plane[1]), indexing="ij")
    coords = [grid[0] + shift[0], grid[1] + shift[1]]

    def warp(a: np.ndarray, order: int) -> np.ndarray:
        flat = a.reshape(-1, *plane)
        out = np.stack([ndimage.map_coordinates(s, coords, order=order, mode="reflect") for s in flat])
        return out.reshape(a.shape)

    return warp(x, 1), warp(y, 0)
