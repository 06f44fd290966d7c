"""``segment.unet``: a 2D, 2.5D or 3D U-Net trained from sparse labels, with tiled inference.

Training needs only scribbles: a labels image where 0 means "unlabeled" and
1..K are classes. The loss is cross-entropy over labeled voxels only
(unlabeled ones are ignored), optionally weighted so rare classes count as
much as common ones. Every training patch is centred on a labeled voxel, so
no step is spent on a patch without a label, and is augmented with flips,
90° rotations in the image plane, intensity jitter and (optionally) a smooth
elastic deformation. Training uses AdamW with a one-cycle schedule (a short
warm-up to ``learning_rate``, then a cosine decay).

``dim: 2`` runs the network on XY slices — the right choice for anisotropic
EM stacks and the fastest on a CPU. With ``context_slices: k`` (the default
2) the network still predicts one slice at a time but sees the k slices
above and below as extra input channels ("2.5D"): at EM signal-to-noise a
membrane is far easier to tell from noise when its continuation in the
neighbouring slices is visible. ``dim: 3`` runs on 3D patches.

Intensities are normalised robustly: the median is subtracted and the
spread between the 1st and 99th percentiles sets the scale, so a few very
bright or dark voxels (gold fiducials, empty resin) do not squash the
contrast. The training volume's values are stored with the model and reused
on new volumes.

Scribbles label every class about equally (and balanced class weights make
it so in any case), so the network learns a uniform class prior and would call every ambiguous voxel near a membrane
"membrane". After training it therefore classifies the training volume (32
planes of it for a 2D network) and re-weights its probabilities from the
training prior to the class frequencies found there (``class_prior``: by
default their mean posterior, one step of the forest's EM estimate).

By default (``teacher: random_forest``) the network is not trained on the
scribbles alone: a random forest (``segment.random_forest``, its defaults) is trained
on them first, and the network learns from every voxel, the scribbles' label
where there is one and the forest's elsewhere (knowledge distillation:
Hinton et al. 2015; here from a forest to a network). Scribbles leave the
voxels next to a membrane unlabeled, and a network trained on them alone
fills that band with membrane: on the benchmark phantom it drew membranes
about 0.4 voxel too thick (Dice 0.89 against the forest's 0.955), and no
re-weighting of its probabilities repaired that. The forest's labels give
that band an answer; the network, trained longer (8000 steps by default,
since every voxel now carries a label), smooths the forest's voxel-wise
errors and ends above its teacher (see benchmarks/results/unet.md). The loss
is then unweighted and no prior re-weighting is needed: the dense labels
carry the class frequencies. ``teacher: null`` trains on the scribbles alone
(about 45 s instead of 5 min on one core for the benchmark's 128³ volume).

Inference covers the volume with overlapping tiles (the overlap-tile
strategy of the original U-Net): neighbouring tiles overlap by twice the
network's receptive radius (:func:`receptive_margin`), and each voxel is
taken from the tile in which its whole receptive field lies, so a voxel's
result does not depend on where the tiles fall — no seams, and nothing left
to blend. Only a few tiles at a time are in the network. With
``test_time_flips`` (the default) every tile is also predicted mirrored in
y, in x and in both, each also transposed (the eight symmetries of a square
in the image plane), and for a 2.5D network each of those again with the
context slices in reverse order (mirrored in z): the sixteen predictions,
mapped back, are averaged — for a network trained with ``augment`` (the
symmetries it learned to respect; one trained without is applied as is).
On the benchmark phantom this gains about 0.004 Dice on membranes over the
four mirror images alone, for 4x the inference time.

``segment.unet_apply`` applies a trained model and is chunk-safe: with
``chunks:`` in the spec, each chunk is grown by the receptive radius in y
and x (and z for 3D; the context slices in z for 2D). Chunk edges that are
multiples of the pooling stride ``2**(depth - 1)`` keep every chunk on the
whole volume's pooling grid, and the chunked labels then equal the whole
volume's up to float rounding between different tile shapes.

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
import itertools
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
from .random_forest import estimate_class_prior

_PRIOR_PLANES = 32  # a 2D network estimates the class frequencies of the training volume on this many planes
_PRIOR_VOXELS = 1_000_000  # ... from at most about this many voxels


@attrs.frozen
class UNetParams:
    dim: int = cs.param(2, choices=(2, 3), help="2: network on XY slices (anisotropic stacks, fast); 3: on 3D patches")
    context_slices: int = cs.param(2, ge=0, le=8, unit="slice",
                                   help="dim 2: neighbouring slices on each side given as extra input channels (2.5D)")
    base_channels: int = cs.param(8, ge=2, le=128, help="feature channels of the first level (doubling per level)")
    depth: int = cs.param(3, ge=2, le=6, help="resolution levels")
    patch_voxels: int = cs.param(48, ge=16, le=512, unit="voxel", help="edge of the training patches")
    tile_voxels: int | None = cs.param(None, ge=16, le=2048, unit="voxel",
                                       help="edge of the inference tiles; None: 256 (dim 2) or 128 (dim 3). Each "
                                       "tile loses a margin of the network's receptive radius on every side, so "
                                       "larger tiles waste less; memory ~ 6 x base_channels x tile^dim x 4 bytes")
    iterations: int | None = cs.param(None, ge=0, le=1_000_000,
                                      help="training steps (0 with a model: no fine-tuning); None: 1000, or 8000 with a "
                                      "teacher (a few minutes on one CPU core)")
    batch_size: int = cs.param(8, ge=1, le=256, help="patches per training step")
    learning_rate: float = cs.param(3e-3, gt=0, le=1,
                                    help="peak AdamW step size of the one-cycle schedule (warm-up, then cosine decay)")
    class_weight: str | None = cs.param("balanced", choices=("balanced", None),
                                        help="balanced: rare labeled classes weigh as much as common ones (with a teacher the "
                                        "labels are dense and the loss is unweighted)")
    augment: bool = cs.param(True, help="flips, 90° in-plane rotations and intensity jitter")
    elastic: bool = cs.param(False, help="also a smooth random elastic deformation of training patches")
    class_prior: str = cs.param("mean", choices=("mean", "estimated", "training"),
                                help="re-weight class probabilities from the training labels' prior (uniform when "
                                "class_weight is balanced; scribbles over-represent thin classes such as membranes) "
                                "to the training volume's class frequencies, estimated from the network's own "
                                "predictions on it: mean: their mean (one EM step; a gentle correction that stays "
                                "safe when the network is under-trained); estimated: EM to convergence (Saerens et "
                                "al. 2002; exact for calibrated probabilities, but it over-corrects the soft ones of "
                                "an under-trained network); training: no re-weighting (always, with a teacher: the dense "
                                "labels hold the volume's frequencies)")
    test_time_flips: bool = cs.param(True, help="average the predictions over the in-plane mirror images and "
                                     "transposes (8), and for a 2.5D network also over the context reversed in z (16)")
    teacher: str | None = cs.param("random_forest", choices=(None, "random_forest"),
                                   help="random_forest: first train segment.random_forest (its defaults) on the same "
                                   "scribbles and train the network on every voxel, the scribbles' labels where there "
                                   "are scribbles and the forest's elsewhere (distillation; unweighted loss, no prior "
                                   "re-weighting: the labels are dense); None: the scribbles alone (masked loss)")
    seed: int = cs.param(0, help="random seed: same seed, same network")
    device: str = cs.param("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available")


def _torch() -> Any:
    return cs.require("torch", extra="ml", who="segment.unet")


def receptive_margin(depth: int) -> int:
    """Voxels on each side of an output voxel that its value depends on, for a ``depth``-level network.

    Two 3-voxel convolutions per level, on the way down and up, with 2x pooling and 2x up-sampling between
    levels, see ``7 * 2**depth - 9`` voxels: a radius of ``7 * 2**(depth - 1) - 5`` (23 for depth 3). Rounded up
    to the pooling stride ``2**(depth - 1)``, so tiles and chunks cut at this margin stay on the pooling grid.
    """
    stride = 2 ** (depth - 1)
    return _round_up(7 * stride - 5, stride)


def tile_plan(n: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis: ``(tile start, core start, core stop)`` for an axis of ``n`` voxels.

    The cores partition ``0..n``; a core keeps ``margin`` voxels away from its tile's edges except where the
    tile edge is the end of the axis, so every voxel is predicted with its whole receptive field inside its
    tile (the overlap-tile strategy). ``n`` and ``tile`` are multiples of the pooling stride, so are the starts.
    """
    if n <= tile:
        return [(0, 0, n)]
    step = tile - 2 * margin
    if step <= 0:
        raise cs.InputError(f"segment.unet: parameter 'tile_voxels' ({tile}) leaves no room inside the "
                            f"{margin}-voxel margins the network needs on each side; use at least {2 * margin + 8}")
    plan, start, core = [], 0, 0
    while start + tile < n:
        plan.append((start, core, start + tile - margin))
        core = start + tile - margin
        start += step
    plan.append((n - tile, core, n))
    return plan


class UNet(cs.Segmenter):
    """2D/3D U-Net from sparse labels: masked loss, class weights, augmentation, overlap-tile inference."""

    name = "segment.unet"
    version = "2"  # 2: overlap-tile inference, context slices, class prior from the volume
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
        """Train (or fine-tune the loaded model) on the labeled voxels.

        Parameters
        ----------
        volume : cellscape.Volume
            The image, shape (z, y, x).
        training_labels : cellscape.Labels
            Sparse labels on the same grid: 0 unlabeled, 1..K classes.

        Returns
        -------
        cellscape.Model
            The trained network (also kept as ``self.model``); ``self.history`` holds the loss of every step.
        """
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
            centre, scale = robust_normalisation(data)
            meta = {"dim": p.dim, "context_slices": p.context_slices if p.dim == 2 else 0,
                    "base_channels": p.base_channels, "depth": p.depth, "class_values": values,
                    "class_names": {str(v): training_labels.class_names.get(v, f"class_{v}") for v in values},
                    "intensity_centre": centre, "intensity_scale": scale, "patch_voxels": p.patch_voxels}
        steps = training_steps(p)
        if p.teacher is not None and steps > 0:  # after every check: the forest takes a while
            training_labels = distillation_labels(volume, training_labels, p.seed)
        target = np.full(training_labels.shape, -1, np.int64)
        for index, value in enumerate(values):
            target[training_labels.data == value] = index
        image = (data - meta["intensity_centre"]) / meta["intensity_scale"]
        device = self._device()
        with _seeded(torch, p.seed):
            net = self._network(meta, device)
            if self.model is not None:
                _load_state(torch, net, self.model.arrays, self.name)
            counts = np.bincount(target[target >= 0], minlength=len(values)).astype(np.float64)
            weights = None
            if p.class_weight == "balanced" and p.teacher is None:
                weights = torch.tensor(counts.sum() / (len(values) * np.maximum(counts, 1)), dtype=torch.float32,
                                       device=device)
            optimiser = torch.optim.AdamW(net.parameters(), lr=p.learning_rate, weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=p.learning_rate,
                                                           total_steps=max(steps, 1), pct_start=0.15)
            rng = np.random.default_rng(p.seed)
            patches = _PatchSampler(image, target, meta, p.patch_voxels, rng)
            self.history = []
            net.train()
            for _ in self.progress(range(steps), description="training"):
                x, y = patches.batch(p.batch_size, p.augment, p.elastic)
                logits = net(torch.from_numpy(x).to(device))
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).to(device), weight=weights,
                                                         ignore_index=-1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                self.history.append(float(loss.item()))
        state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        meta["iterations"] = int(meta.get("iterations", 0)) + steps
        meta["teacher"] = p.teacher
        # test-time averaging uses the symmetries the network was trained to respect
        meta["augment"] = bool(meta.get("augment", True)) and p.augment
        balanced = p.class_weight == "balanced" and p.teacher is None
        training_prior = np.full(len(values), 1 / len(values)) if balanced else counts / counts.sum()
        class_prior = "training" if p.teacher is not None else p.class_prior
        meta.update({"class_prior": class_prior, "training_prior": [float(v) for v in training_prior],
                     "volume_prior": None})
        self.model = cs.Model(self.name, state, meta)
        if class_prior != "training":
            planes = None
            if meta["dim"] == 2:
                planes = np.unique(np.linspace(0, data.shape[0] - 1, _PRIOR_PLANES).round().astype(int)).tolist()
            sample = self._network_probabilities(self.model, data, planes).reshape(len(values), -1)
            sample = sample[:, :: max(1, sample.shape[1] // _PRIOR_VOXELS)]
            em_steps = 1 if class_prior == "mean" else 200  # one EM step: the mean posterior
            meta["volume_prior"] = [float(v) for v in estimate_class_prior(sample, training_prior, iterations=em_steps)]
            self.model = cs.Model(self.name, state, meta)
        return self.model

    # -- inference ------------------------------------------------------------------------------------------------

    def predict_proba(self, volume: cs.Volume) -> np.ndarray:
        """Class probabilities by overlap-tile inference (see :meth:`_network_probabilities`).

        When the model holds a ``volume_prior`` (``class_prior`` "estimated" or "mean"), the network's
        probabilities are re-weighted by ``volume_prior / training_prior`` and renormalised.

        Parameters
        ----------
        volume : cellscape.Volume
            The image, shape (z, y, x), with the contrast of the training volume.

        Returns
        -------
        ndarray
            Shape (K, z, y, x), float32, in the order of ``self.model.meta["class_values"]``.
        """
        if self.model is None:
            raise cs.InputError(f"{self.name}: no trained network; call fit() or load() first")
        probabilities = self._network_probabilities(self.model, np.asarray(volume.data, np.float32))
        meta = self.model.meta
        if meta.get("volume_prior") is not None:
            weights = np.asarray(meta["volume_prior"], np.float32) / np.asarray(meta["training_prior"], np.float32)
            probabilities *= weights.reshape(-1, 1, 1, 1)
            probabilities /= probabilities.sum(axis=0, keepdims=True)
        return probabilities

    def _network_probabilities(self, model: cs.Model, data: np.ndarray, planes: list[int] | None = None) -> np.ndarray:
        """The network's own class probabilities, (K, z, y, x) float32; for a 2D network optionally only ``planes``.

        Overlap-tile inference: tiles of ``tile_voxels`` overlap by twice :func:`receptive_margin`, and each voxel
        is taken from the one tile whose core (the tile less that margin) holds it. A voxel's result is then the
        same whatever the tiling, and a chunk grown by :meth:`chunk_halo` gives the voxels of the whole volume.
        """
        torch = _torch()
        meta = model.meta
        device = self._device()
        net = self._network(meta, device)
        _load_state(torch, net, model.arrays, self.name)
        net.eval()
        image = (data - meta["intensity_centre"]) / meta["intensity_scale"]
        dim, context, depth = int(meta["dim"]), int(meta.get("context_slices", 0)), int(meta["depth"])
        stride = 2 ** (depth - 1)
        margin = receptive_margin(depth)
        tiled_axes = 3 if dim == 3 else 2  # the trailing axes the network sees
        sizes = [_round_up(n, stride) for n in image.shape[-tiled_axes:]]
        edge = _round_up(self.params.tile_voxels or (256 if dim == 2 else 128), stride)
        tile = tuple(min(edge, n) for n in sizes)
        pads = [(0, 0)] * (3 - tiled_axes) + [(0, m - n) for m, n in zip(sizes, image.shape[-tiled_axes:], strict=True)]
        if dim == 2:
            pads[0] = (context, context)  # the context slices of the first and last planes are mirrored
            planes = list(range(image.shape[0])) if planes is None else planes
        padded = _pad(image, pads)
        out_shape = tuple(sizes) if dim == 3 else (len(planes), *sizes)
        total = np.zeros((len(meta["class_values"]), *out_shape), np.float32)
        plans = [tile_plan(n, t, margin) for n, t in zip(sizes, tile, strict=True)]
        jobs = [(None, corner) for corner in itertools.product(*plans)] if dim == 3 else \
            [(index, corner) for index in range(len(planes)) for corner in itertools.product(*plans)]
        transforms = _test_time_transforms(dim, context, self.params.test_time_flips and meta.get("augment", True))
        with torch.no_grad():
            for batch in self.progress(list(_chunks(jobs, 8 if dim == 2 else 1)), description="predicting"):
                tiles = []
                for index, corner in batch:
                    region = tuple(slice(start, start + t) for (start, _, _), t in zip(corner, tile, strict=True))
                    if dim == 3:
                        tiles.append(padded[region][None])
                    else:  # the plane and its context slices, as channels
                        tiles.append(padded[(slice(planes[index], planes[index] + 2 * context + 1), *region)])
                x = torch.from_numpy(np.stack(tiles)).to(device)
                summed = torch.zeros((x.shape[0], total.shape[0], *x.shape[2:]), dtype=x.dtype, device=device)
                for forward, inverse in transforms:
                    summed += inverse(torch.softmax(net(forward(x)), dim=1))
                probabilities = (summed / len(transforms)).cpu().numpy()
                for (index, corner), prob in zip(batch, probabilities, strict=True):
                    core = tuple(slice(low, high) for _, low, high in corner)
                    inside = tuple(slice(low - start, high - start) for start, low, high in corner)
                    where = core if dim == 3 else (index, *core)
                    total[(slice(None), *where)] = prob[(slice(None), *inside)]
        crop = tuple(slice(0, n) for n in (image.shape if dim == 3 else (len(planes), *image.shape[1:])))
        return np.ascontiguousarray(total[(slice(None), *crop)])

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
        channels = 2 * int(meta.get("context_slices", 0)) + 1
        return build(int(meta["dim"]), len(meta["class_values"]), int(meta["base_channels"]), int(meta["depth"]),
                     channels).to(device)


@attrs.frozen
class UNetApplyParams:
    dim: int = cs.param(2, choices=(2, 3), help="the model's dim (the chunk halo depends on it; checked)")
    context_slices: int = cs.param(2, ge=0, le=8, unit="slice", help="the model's context_slices (checked)")
    depth: int = cs.param(3, ge=2, le=6, help="the model's depth (checked)")
    tile_voxels: int | None = cs.param(None, ge=16, le=2048, unit="voxel",
                                       help="edge of the inference tiles; None: 256 (dim 2) or 128 (dim 3)")
    test_time_flips: bool = cs.param(True, help="average the predictions over the in-plane mirror images and "
                                     "transposes (8), and for a 2.5D network also over the context reversed in z (16)")
    device: str = cs.param("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available")


class UNetApply(UNet):
    """Apply a trained segment.unet model, chunk by chunk if asked (labels only; chunk-safe)."""

    name = "segment.unet_apply"
    Params = UNetApplyParams
    inputs = {
        "volume": cs.Volume,
        "model": cs.Port(cs.Model, help="a trained segment.unet model"),
    }
    outputs = {"labels": cs.Labels}
    chunk_port = "volume"

    def chunk_halo(self, voxel_size_nm: tuple[float, float, float]) -> tuple[int, int, int]:
        """The network's receptive margin in y and x (and z for 3D), the context slices in z for 2D.

        With chunk edges that are multiples of the pooling stride ``2**(depth - 1)``, every chunk starts on the
        whole volume's pooling grid and the chunked labels equal the whole volume's (up to float rounding
        between tile shapes).
        """
        p = self.params
        margin = receptive_margin(p.depth)
        return (p.context_slices if p.dim == 2 else margin, margin, margin)

    def segment(self, volume: cs.Volume, model: cs.Model | None = None, **_: Any) -> dict[str, cs.Artefact]:
        assert model is not None  # a required input
        self.model = model.require("segment.unet")
        meta, p = self.model.meta, self.params
        declared = {"dim": p.dim, "context_slices": p.context_slices if p.dim == 2 else 0, "depth": p.depth}
        actual = {"dim": int(meta["dim"]), "context_slices": int(meta.get("context_slices", 0)),
                  "depth": int(meta["depth"])}
        if declared != actual:
            wrong = ", ".join(f"{k}: {actual[k]}" for k in declared if declared[k] != actual[k])
            raise cs.InputError(f"{self.name}: the model has {wrong}; set the same in this step's parameters "
                                "(they set the chunk halo)")
        return {"labels": segmentation_outputs(self.predict_proba(volume), self.model, volume)["labels"]}


def training_steps(params: UNetParams) -> int:
    """The ``iterations`` asked for, or the default: 1000 from scribbles, 8000 with a teacher (dense labels)."""
    if params.iterations is not None:
        return params.iterations
    return 8000 if params.teacher is not None else 1000


def distillation_labels(volume: cs.Volume, scribbles: cs.Labels, seed: int = 0) -> cs.Labels:
    """Dense training labels from sparse ones: the scribbles where they are, a random forest's labels elsewhere.

    The forest (``segment.random_forest`` with its defaults and ``seed``) is trained on the scribbles and applied
    to the whole volume; each scribbled voxel keeps its own label.

    Parameters
    ----------
    volume : cellscape.Volume
    scribbles : cellscape.Labels
        0 unlabeled, 1..K classes, on the volume's grid.
    seed : int

    Returns
    -------
    cellscape.Labels
        Every voxel labeled, with the scribbles' class names.
    """
    # trained and applied in one stage call, which computes each chunk's features once for both
    labels = cs.method("segment.random_forest", seed=seed)(volume, training_labels=scribbles)["labels"].data
    dense = np.where(scribbles.data > 0, scribbles.data, labels).astype(scribbles.data.dtype)
    return cs.Labels(dense, scribbles.class_names, scribbles.voxel_size_nm, scribbles.origin_nm)


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


def _test_time_transforms(dim: int, context: int, augment: bool) -> list[tuple[Any, Any]]:
    """Pairs (transform of a tile batch, inverse for its prediction), both on tensors (n, C, ..., y, x).

    Without ``augment`` only the identity. With it, the eight symmetries of the square in the image (y, x)
    plane: the mirrors in y, in x and in both, each with and without the transpose (a symmetry of a tile of any
    shape for a fully convolutional network). For a 2D network with context slices, each of those also with the
    context slices in reverse order (the volume mirrored in z; the prediction of the centre plane needs no
    undoing): sixteen passes. A volume mirrored in any of these ways is then predicted as the mirror image of
    the volume's prediction.
    """
    def pair(axes: tuple[int, ...], transpose: bool, reverse: bool) -> tuple[Any, Any]:
        def forward(t: Any) -> Any:
            t = t.flip(1) if reverse else t
            t = t.flip(axes) if axes else t
            return t.transpose(-2, -1) if transpose else t

        def inverse(t: Any) -> Any:
            t = t.transpose(-2, -1) if transpose else t
            return t.flip(axes) if axes else t

        return forward, inverse

    if not augment:
        return [pair((), False, False)]
    reversals = (False, True) if dim == 2 and context > 0 else (False,)
    return [pair(axes, transpose, reverse) for reverse in reversals for transpose in (False, True)
            for axes in ((), (-1,), (-2,), (-2, -1))]


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _pad(image: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    """Pad each axis by mirroring when it is long enough, else by repeating its edge voxels.

    Axis by axis, so a chunk touching a face of the volume is padded there exactly as the whole volume is.
    """
    for axis, pad in enumerate(pads):
        if pad != (0, 0):
            widths = [(0, 0)] * image.ndim
            widths[axis] = pad
            image = np.pad(image, widths, mode="reflect" if max(pad) < image.shape[axis] else "edge")
    return image


def robust_normalisation(data: np.ndarray) -> tuple[float, float]:
    """Intensity centre (median) and scale (1st-99th percentile spread / 4.65, the std of a Gaussian) of ``data``.

    Volumes above 16 M voxels are sampled on a regular sub-grid; the result is a pair of Python floats.
    """
    step = max(1, int(np.ceil((data.size / 2**24) ** (1 / 3))))
    sample = data[(slice(None, None, step),) * data.ndim]
    low, centre, high = np.percentile(sample, (1, 50, 99))
    scale = float(high - low) / 4.65
    return float(centre), scale if scale > 0 else 1.0


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _PatchSampler:
    """Random training patches centred on labeled voxels, with augmentation.

    ``batch`` returns inputs of shape (n, C, y, x) for 2D (C = 2 context + 1 slices) or (n, 1, z, y, x) for 3D,
    and targets of shape (n, y, x) or (n, z, y, x) holding class indices, -1 where unlabeled.
    """

    def __init__(self, image: np.ndarray, target: np.ndarray, meta: dict[str, Any], patch: int,
                 rng: np.random.Generator):
        self.dim, self.context, self.rng = int(meta["dim"]), int(meta.get("context_slices", 0)), rng
        multiple = 2 ** (int(meta["depth"]) - 1)
        edge = _round_up(patch, multiple)
        sides = [min(edge, _round_up(n, multiple)) for n in image.shape]
        self.size = (2 * self.context + 1 if self.dim == 2 else sides[0], *sides[1:])
        pads = [(s // 2, s - s // 2) for s in self.size]
        self.image = _pad(image, pads)
        self.target = np.pad(target, pads, constant_values=-1)
        self.labeled = np.argwhere(target >= 0)

    def batch(self, n: int, augment: bool, elastic: bool) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for centre in self.labeled[self.rng.integers(0, len(self.labeled), n)]:
            region = tuple(slice(c, c + s) for c, s in zip(centre, self.size, strict=True))  # padded coordinates
            x, y = self.image[region], self.target[region]
            if self.dim == 2:
                y = y[self.context]  # the network predicts the centre slice; the others are its context
            if augment:
                x, y = self._augment(x, y)
            if elastic:
                x, y = _elastic(x, y, self.rng)
            xs.append(np.ascontiguousarray(x, np.float32))
            ys.append(np.ascontiguousarray(y, np.int64))
        x = np.stack(xs)
        return (x if self.dim == 2 else x[:, None]), np.stack(ys)

    def _augment(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        if rng.random() < 0.5:  # z: the context slices in reverse order, or the 3D patch upside down
            x, y = np.flip(x, 0), (y if self.dim == 2 else np.flip(y, 0))
        for axis in (-2, -1):
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
