"""``generate.gan``: a 3D Wasserstein GAN (gradient penalty) that samples new organelle shapes.

Training shapes
---------------
The objects of one class of a :class:`cellscape.Labels` volume (connected
components, 26-connectivity; none may touch the volume border) are
voxelised on a 32³ grid: each is centred on its centroid, turned so that its
principal axes lie along x, y, z (longest along x) when ``align`` is on, and
scaled so its longest extent spans ``fill_fraction`` of the grid. The grid
spacing of each object (nm per grid voxel) is kept. Since every object is
scaled to the same extent, its spacing goes with its shape (a long thin
object gets a large spacing and few voxels; on phantom mitochondria the
correlation of log spacing and log voxel count is −0.99), so the spacing
is regressed on the voxel count, ``log s = a + b log n + ε``, and a sampled
shape gets the spacing its own voxel count predicts, plus the residual
noise: it comes out in physical units with the size its shape implies. Targets are the binary shapes blurred by
``smooth_sigma_voxels`` (a critic learns more from soft edges), and each
training batch is flipped at random along the three axes (an object and its
mirror images are equally likely).

Training
--------
WGAN-GP (Gulrajani et al., 2017): the critic minimises ``D(fake) − D(real) +
λ (|∇D(x̂)| − 1)²`` at random points ``x̂`` between real and generated shapes
(the penalty on half of each batch, which halves the cost of the double
backward pass), ``critic_steps`` critic updates per generator update; Adam
with β = (0.5, 0.9). Everything random — initial weights, batches, latent
vectors, flips — comes from ``seed``, so the same seed on the same machine
gives the same weights. The networks are in
:mod:`cellscape_plugins.generate._gan_net`.

Sampling and quality
--------------------
A sample is the generator's occupancy thresholded at 0.5. Its *raw* quality is
recorded before any clean-up: a single closed object has exactly one
connected component (6-connectivity), no cavity (an enclosed background
region) and does not touch the grid border. The shape returned is then the
largest component with its cavities filled, as :class:`cellscape.Labels`
(label 1, the training class name) and, through ``mesh.marching_cubes``, as a
:class:`cellscape.SurfaceMesh`. ``quality(n, seed)`` gives the share of raw
single closed objects (issue target: ≥ 95 %).

The model is a :class:`cellscape.Model`: generator and critic state dicts as
arrays (``generator/...``, ``critic/...``), the training spacings and the loss
history; ``save("gan.pt")`` writes a PyTorch state dict file read back with
``torch.load(..., weights_only=True)``, ``save("gan.npz")`` cellscape's own
format. Never pickle.
"""

from __future__ import annotations

import contextlib
import math
import pickle  # only for its error type: weights are read with weights_only=True
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._gan_net import GRID, build_critic, build_generator, set_template

FORMAT = "cellscape-wgan-gp-2"
#: Fewest training shapes the GAN accepts.
MIN_SHAPES = 8


@attrs.frozen
class GANParams:
    class_name: str = cs.param("mitochondrion", help="class of the training objects in the labels")
    iterations: int = cs.param(300, ge=0, le=1_000_000, help="generator updates")
    critic_steps: int = cs.param(2, ge=1, le=10, help="critic updates per generator update")
    batch_size: int = cs.param(8, ge=2, le=256, help="shapes per batch")
    latent_dim: int = cs.param(64, ge=2, le=1024, help="length of the latent vector")
    base_channels: int = cs.param(8, ge=2, le=64, help="channels of the first critic layer and last generator layer")
    learning_rate: float = cs.param(1e-3, gt=0, le=1, help="Adam step size of both networks")
    gradient_penalty: float = cs.param(10.0, ge=0, help="weight λ of the gradient penalty")
    fill_fraction: float = cs.param(0.75, gt=0.1, le=0.95, help="longest object extent / grid edge")
    align: bool = cs.param(True, help="turn each training object to its principal axes (longest along x)")
    smooth_sigma_voxels: float = cs.param(0.7, ge=0, le=3, unit="voxel", help="blur of the training targets")
    n_quality_samples: int = cs.param(100, ge=1, le=100_000, help="samples scored for the single-object share")
    threads: int = cs.param(1, ge=1, le=256, help="torch threads while training and sampling; these small networks "
                                                  "run fastest on one (more threads mostly wait for each other)")
    seed: int = cs.param(0, ge=0, help="random seed: same seed, same network and samples")


def _torch() -> Any:
    return cs.require("torch", extra="ml", who="generate.gan")


@contextlib.contextmanager
def _torch_threads(torch: Any, count: int) -> Iterator[None]:
    """Run torch's operators on ``count`` threads inside the block, then restore the caller's setting.

    Each layer of a 32³ network is a few milliseconds of work; split over threads on a busy machine, every
    operator ends waiting for the slowest thread, which made training 5-10x slower on two shared cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _seeded(torch: Any, seed: int) -> Iterator[None]:
    """Seed torch's global generator (layer initialisation) without leaking the state to the caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------------------ training shapes


def voxelize_objects(labels: cs.Labels, class_name: str, fill_fraction: float = 0.75, align: bool = True,
                     who: str = "generate.gan") -> tuple[np.ndarray, np.ndarray]:
    """Every object of a class on a 32³ grid.

    Parameters
    ----------
    labels : Labels
        Objects are the connected components (26-connectivity) of the voxels of class ``class_name``.
    class_name : str
        A name in ``labels.class_names``.
    fill_fraction : float
        The longest extent of each object spans this fraction of the grid edge.
    align : bool
        Turn objects to their principal axes (longest along x, shortest along z).

    Returns
    -------
    shapes : ndarray, shape (n, 32, 32, 32), bool
    spacing_nm : ndarray, shape (n,)
        Grid spacing of each object, nm per grid voxel.
    """
    from scipy import ndimage

    values = [v for v, name in labels.class_names.items() if name == class_name]
    if not values:
        known = ", ".join(repr(n) for n in sorted(set(labels.class_names.values()))) or "none"
        raise cs.InputError(f"{who}: the labels have no class named {class_name!r}; their classes are {known}: set "
                            "'class_name' to one of them")
    data = np.asarray(labels.data)
    voxel = np.asarray(labels.voxel_size_nm, float)
    objects, _ = ndimage.label(np.isin(data, values), structure=np.ones((3, 3, 3), bool))
    centred = np.arange(GRID) - (GRID - 1) / 2.0
    grid = np.stack(np.meshgrid(centred, centred, centred, indexing="ij"), axis=-1).reshape(-1, 3)
    shapes, spacings = [], []
    for index, box in enumerate(ndimage.find_objects(objects), start=1):
        if any(s.start == 0 or s.stop == n for s, n in zip(box, data.shape, strict=True)):
            raise cs.InputError(f"{who}: {class_name} object {index} touches the volume border (bounding box "
                                f"{[(s.start, s.stop) for s in box]} in a {data.shape} grid), so its shape is cut; "
                                "crop with a margin around the objects or remove those at the border")
        grown = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        mask = objects[grown] == index
        points = np.argwhere(mask) * voxel
        centre = points.mean(axis=0)
        if align:
            _, vectors = np.linalg.eigh(np.cov((points - centre).T) if len(points) > 1 else np.eye(3))
            frame = vectors[:, ::-1][:, [2, 1, 0]]  # grid z, y, x along the smallest, middle, largest axis
        else:
            frame = np.eye(3)
        along = (points - centre) @ frame
        extent = float((along.max(axis=0) - along.min(axis=0)).max()) + float(voxel.max())
        spacing = extent / (fill_fraction * GRID)
        # the mask sampled linearly at the grid points and thresholded at 0.5: the boundary halfway between voxels
        where = (centre + (grid * spacing) @ frame.T) / voxel  # in the voxels of `mask`, whose corner is `grown`
        values_at = ndimage.map_coordinates(mask.astype(np.float32), where.T, order=1, mode="constant", cval=0.0)
        shapes.append(values_at.reshape(GRID, GRID, GRID) >= 0.5)
        spacings.append(spacing)
    if not shapes:
        return np.zeros((0, GRID, GRID, GRID), bool), np.zeros(0)
    return np.stack(shapes), np.asarray(spacings)


def spacing_model(shapes: np.ndarray, spacing_nm: np.ndarray) -> dict[str, float]:
    """Least-squares ``log spacing = intercept + slope · log voxel count`` over training shapes, and its residual sd."""
    log_count = np.log(np.maximum(shapes.reshape(len(shapes), -1).sum(axis=1), 1).astype(float))
    log_spacing = np.log(spacing_nm)
    slope = 0.0
    if len(shapes) >= 3 and log_count.std() > 1e-9:
        slope = float(np.polyfit(log_count, log_spacing, 1)[0])
    intercept = float((log_spacing - slope * log_count).mean())
    residual = log_spacing - intercept - slope * log_count
    return {"spacing_intercept": intercept, "spacing_slope": slope, "spacing_residual_sd": float(residual.std())}


def shape_quality(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per binary (n, 32, 32, 32) mask: components (6-connectivity), cavities, border contact, single closed object."""
    from scipy import ndimage

    components, cavities, border, volume = [], [], [], []
    for mask in masks:
        components.append(ndimage.label(mask)[1])
        filled = ndimage.binary_fill_holes(mask)
        cavities.append(ndimage.label(filled & ~mask)[1])
        border.append(bool(mask[[0, -1]].any() or mask[:, [0, -1]].any() or mask[:, :, [0, -1]].any()))
        volume.append(int(mask.sum()))
    components_a, cavities_a, border_a = np.array(components), np.array(cavities), np.array(border)
    return {"components": components_a, "cavities": cavities_a, "touches_border": border_a,
            "volume_voxels": np.array(volume), "single_closed": (components_a == 1) & (cavities_a == 0) & ~border_a}


def clean_shape(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (6-connectivity) of a binary mask with its cavities filled."""
    from scipy import ndimage

    parts, count = ndimage.label(mask)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(parts.ravel())[1:]
    return ndimage.binary_fill_holes(parts == 1 + int(np.argmax(sizes)))


# ------------------------------------------------------------------------------------------------ the method


class ShapeGAN(cs.Generator):
    """3D WGAN-GP on 32³ voxelised organelle shapes: train on labels, sample new shapes as labels and meshes."""

    name = "generate.gan"
    Params = GANParams
    inputs = {
        "training": cs.Port(cs.Labels, optional=True, help="labels holding the training objects (class 'class_name')"),
        "model": cs.Port(cs.Model, optional=True, help="a trained generate.gan model to sample from"),
    }
    outputs = {
        "labels": cs.Port(cs.Labels, help="one sampled shape on the 32³ grid, in physical units"),
        "model": cs.Model,
        "quality": cs.Port(cs.Table, help="per sample: components, cavities, border contact, single closed object"),
    }

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self.model: cs.Model | None = None

    def generate(self, training: cs.Labels | None = None, model: cs.Model | None = None) -> dict[str, cs.Artefact]:
        if training is not None and model is not None:
            raise cs.InputError(f"{self.name}: give 'training' labels to train a GAN or a trained 'model', not both")
        if model is not None:
            self.load(model)
        elif training is not None:
            self.fit(training)
        else:
            raise cs.InputError(f"{self.name}: give 'training' labels holding {self.params.class_name!r} objects, or a "
                                "trained 'model'")
        assert self.model is not None
        quality = self.quality(self.params.n_quality_samples, self.params.seed)
        return {"labels": self.sample(1, self.params.seed)[0], "model": self.model, "quality": quality}

    # -- training -------------------------------------------------------------------------------------------------

    def fit(self, training: cs.Labels | Sequence[cs.Labels]) -> cs.Model:
        """Train generator and critic on the objects of ``class_name``; returns (and keeps) the :class:`cellscape.Model`.

        ``model.arrays["history/wasserstein"]`` is the critic's estimate of the Wasserstein distance at every
        generator update, ``history/gradient_penalty`` the penalty and ``history/occupancy_gap`` the absolute
        difference between the mean occupancy of the generated and the training batch.
        """
        torch = _torch()
        p = self.params
        volumes = [training] if isinstance(training, cs.Labels) else list(training)
        parts = [voxelize_objects(v, p.class_name, p.fill_fraction, p.align, self.name) for v in volumes]
        shapes = np.concatenate([s for s, _ in parts])
        spacings = np.concatenate([s for _, s in parts])
        if len(shapes) < MIN_SHAPES:
            raise cs.InputError(f"{self.name}: {len(shapes)} {p.class_name!r} object(s) found, too few to train a GAN; "
                                f"give at least {MIN_SHAPES} (better a few dozen)")
        targets = shapes.astype(np.float32)
        if p.smooth_sigma_voxels > 0:
            from scipy import ndimage

            targets = np.stack([ndimage.gaussian_filter(t, p.smooth_sigma_voxels) for t in targets])
        with _seeded(torch, p.seed):
            generator, critic = build_generator(p.latent_dim, p.base_channels), build_critic(p.base_channels)
        # the template is the mean over the training shapes and their mirror images (batches are flipped at random)
        mean = targets.mean(axis=0)
        for axis in range(3):
            mean = 0.5 * (mean + np.flip(mean, axis))
        set_template(generator, mean)
        with _torch_threads(torch, p.threads):
            history = self._train(torch, generator, critic, torch.from_numpy(targets[:, None]))
        generator.eval()
        arrays = {f"generator/{k}": v.detach().numpy().copy() for k, v in generator.state_dict().items()}
        arrays.update({f"critic/{k}": v.detach().numpy().copy() for k, v in critic.state_dict().items()})
        arrays["training_spacing_nm"] = spacings
        arrays.update({f"history/{k}": np.asarray(v, np.float64) for k, v in history.items()})
        meta = {
            "format": FORMAT, "grid": GRID, "latent_dim": p.latent_dim, "base_channels": p.base_channels,
            "class_name": p.class_name, "n_training_shapes": len(shapes), "fill_fraction": p.fill_fraction,
            "align": p.align, "iterations": p.iterations, "critic_steps": p.critic_steps, "batch_size": p.batch_size,
            "learning_rate": p.learning_rate, "gradient_penalty": p.gradient_penalty, "seed": p.seed,
            "log_spacing_mean": float(np.log(spacings).mean()), "log_spacing_sd": float(np.log(spacings).std()),
            **spacing_model(shapes, spacings),
            "training_single_closed_share": float(shape_quality(shapes)["single_closed"].mean()),
            "torch_version": str(torch.__version__),
        }
        self.model = cs.Model(self.name, arrays, meta)
        return self.model

    def _train(self, torch: Any, generator: Any, critic: Any, real_all: Any) -> dict[str, list[float]]:
        """WGAN-GP updates of ``generator`` and ``critic`` on the (n, 1, 32, 32, 32) targets; the loss history."""
        p = self.params
        rng = torch.Generator().manual_seed(p.seed)
        g_opt = torch.optim.Adam(generator.parameters(), lr=p.learning_rate, betas=(0.5, 0.9))
        c_opt = torch.optim.Adam(critic.parameters(), lr=p.learning_rate, betas=(0.5, 0.9))
        batch, half = p.batch_size, max(1, p.batch_size // 2)
        history = {"wasserstein": [], "gradient_penalty": [], "occupancy_gap": []}

        def real_batch() -> Any:
            picked = real_all[torch.randint(len(real_all), (batch,), generator=rng)]
            flips = torch.rand(3, generator=rng) < 0.5
            axes = [2 + i for i in range(3) if flips[i]]
            return picked.flip(axes) if axes else picked

        generator.train()
        critic.train()
        for _ in self.progress(range(p.iterations), description="training the GAN"):
            for _ in range(p.critic_steps):
                real = real_batch()
                with torch.no_grad():
                    fake = torch.sigmoid(generator(torch.randn(batch, p.latent_dim, generator=rng)))
                scores = critic(torch.cat([real, fake]))
                wasserstein = scores[:batch].mean() - scores[batch:].mean()
                mix = torch.rand(half, 1, 1, 1, 1, generator=rng)
                between = (mix * real[:half] + (1 - mix) * fake[:half]).requires_grad_(True)
                gradient = torch.autograd.grad(critic(between).sum(), between, create_graph=True)[0]
                penalty = ((gradient.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
                c_opt.zero_grad()
                (p.gradient_penalty * penalty - wasserstein).backward()
                c_opt.step()
            fake = torch.sigmoid(generator(torch.randn(batch, p.latent_dim, generator=rng)))
            g_loss = -critic(fake).mean()
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
            history["wasserstein"].append(float(wasserstein.detach()))
            history["gradient_penalty"].append(float(penalty.detach()))
            history["occupancy_gap"].append(abs(float(fake.detach().mean()) - float(real.mean())))
        return history

    # -- sampling -------------------------------------------------------------------------------------------------

    def raw_samples(self, n: int, seed: int = 0) -> np.ndarray:
        """Occupancy of ``n`` generated shapes, (n, 32, 32, 32) float32 in [0, 1], reproducible by ``seed``."""
        torch = _torch()
        model = self._require_model()
        meta = model.meta
        generator = build_generator(int(meta["latent_dim"]), int(meta["base_channels"]))
        _load_state(torch, generator, model.arrays, "generator/", self.name)
        generator.eval()
        rng = torch.Generator().manual_seed(seed)
        out = []
        with torch.no_grad(), _torch_threads(torch, self.params.threads):
            for start in range(0, n, 64):
                latent = torch.randn(min(64, n - start), int(meta["latent_dim"]), generator=rng)
                out.append(torch.sigmoid(generator(latent))[:, 0].numpy())
        return np.concatenate(out) if out else np.zeros((0, GRID, GRID, GRID), np.float32)

    def sample(self, n: int, seed: int = 0) -> list[cs.Labels]:
        """``n`` new shapes as Labels (label 1 = the class): thresholded, largest component, cavities filled.

        Each gets a grid spacing (nm per voxel) from its voxel count by the training regression (see the module
        docstring), so sizes are physical; the shape's grid centre is at 0 nm.
        """
        model = self._require_model()
        meta = model.meta
        masks = self.raw_samples(n, seed) >= 0.5
        spacing_rng = np.random.default_rng(seed)
        out = []
        for mask in masks:
            shape = clean_shape(mask)
            log_count = math.log(max(int(shape.sum()), 1))
            log_spacing = meta["spacing_intercept"] + meta["spacing_slope"] * log_count
            spacing = float(np.exp(log_spacing + spacing_rng.normal(0.0, meta["spacing_residual_sd"])))
            origin = -(GRID - 1) / 2.0 * spacing
            out.append(cs.Labels(shape.astype(np.uint8), {1: meta["class_name"]}, spacing, origin))
        return out

    def sample_meshes(self, n: int, seed: int = 0, sigma_voxels: float = 1.0) -> list[cs.SurfaceMesh]:
        """``n`` new shapes as closed surface meshes (nm), through ``mesh.marching_cubes``."""
        mesher = cs.method("mesh.marching_cubes", sigma_voxels=sigma_voxels)
        return [mesher(labels) for labels in self.sample(n, seed) if labels.data.any()]

    def quality(self, n: int, seed: int = 0) -> cs.Table:
        """Raw quality of ``n`` samples (before clean-up): one row per sample; see :func:`shape_quality`."""
        scores = shape_quality(self.raw_samples(n, seed) >= 0.5)
        return cs.Table({"sample": np.arange(n), **scores}, {"volume_voxels": "voxel"},
                        title=f"{self.name}: raw samples, single closed object share "
                              f"{float(scores['single_closed'].mean()):.3f}")

    # -- saving and loading ---------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the trained GAN: ``.pt`` as a PyTorch state-dict file (+ JSON-able meta), else a cellscape file."""
        model = self._require_model()
        path = Path(path)
        if path.suffix == ".pt":
            torch = _torch()
            torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in model.arrays.items()},
                        "meta": model.meta}, path)
            return path
        return cs.write(model, path)

    def load(self, source: str | Path | cs.Model) -> ShapeGAN:
        """Use a trained GAN: a :class:`cellscape.Model`, a cellscape file, or a ``.pt`` file written by :meth:`save`."""
        if isinstance(source, cs.Model):
            model = source
        elif Path(source).suffix == ".pt":
            torch = _torch()
            try:
                saved = torch.load(Path(source), map_location="cpu", weights_only=True)
                model = cs.Model(self.name, {k: v.numpy() for k, v in saved["state_dict"].items()}, saved["meta"])
            except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError) as exc:
                raise cs.InputError(f"{source}: not a generate.gan state-dict file ({exc})") from exc
        else:
            model = cs.read(source)
            if not isinstance(model, cs.Model):
                raise cs.InputError(f"{source}: holds a {type(model).__name__}, not a trained model")
        model.require(self.name)
        if model.meta.get("format") != FORMAT:
            raise cs.InputError(f"{self.name}: the model is not a {FORMAT} model")
        self.model = model
        return self

    def _require_model(self) -> cs.Model:
        if self.model is None:
            raise cs.InputError(f"{self.name}: no trained GAN; call fit() or load() first, or give 'training' labels")
        return self.model


def _load_state(torch: Any, net: Any, arrays: dict[str, np.ndarray], prefix: str, who: str) -> None:
    expected = net.state_dict()
    state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in expected if k in state and tuple(expected[k].shape) != tuple(np.shape(state[k])))
    if missing or wrong:
        raise cs.InputError(f"{who}: the model's weights do not fit the network (missing {missing[:3]}, wrong shape "
                            f"{wrong[:3]}); it was saved by another version: retrain it")
    net.load_state_dict({k: torch.from_numpy(np.array(state[k])) for k in expected})


def single_object_share(quality: cs.Table) -> float:
    """Share of the samples in a :meth:`ShapeGAN.quality` table that are single closed objects."""
    return float(np.mean(quality.columns["single_closed"])) if quality.n_rows else math.nan
