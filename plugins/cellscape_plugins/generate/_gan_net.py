"""The networks of ``generate.gan`` (PyTorch): a small 3D generator and critic for 32³ occupancy grids.

Generator: a latent vector (``latent_dim`` normal numbers) → a linear layer to
``4 x base_channels`` channels on a 4³ grid → two transposed 3D convolutions
(kernel 4, stride 2) with batch normalisation and ReLU to 16³ → a 3³
convolution to one channel → trilinear upsampling to 32³, added to a fixed
template (the logit of the training shapes' mean occupancy) to give the
occupancy logits. The learned part is smooth at 32³ (a trilinear
interpolation of a 16³ field), so a thresholded sample has no isolated
specks unless the network insists on them; upsampling one channel instead of
eight, after the convolution, also makes the generator four times cheaper on
a CPU. Starting from the mean shape, a short CPU training already draws
single blobs.

Critic: three 3D convolutions (kernel 4, stride 2, leaky ReLU, no batch
normalisation, as the gradient penalty of WGAN-GP assumes a per-sample
critic) from 32³ to 4³, then a linear layer to one unbounded score.

Both are plain ``torch.nn.Module`` objects; their state dicts are what a
:class:`cellscape.Model` stores.
"""

from __future__ import annotations

from typing import Any

#: Edge of the occupancy grids, in voxels.
GRID = 32


def build_generator(latent_dim: int = 64, base_channels: int = 8) -> Any:
    """The generator: ``(batch, latent_dim)`` float32 → ``(batch, 1, 32, 32, 32)`` occupancy logits.

    The logits are the network's output plus a fixed *template*: the logit of
    the training shapes' mean occupancy (a buffer, zero until
    :func:`set_template`; saved in the state dict). The last layer starts at
    zero, so an untrained generator already draws the mean shape — one
    closed blob — and training learns how shapes differ from it.
    """
    import torch
    from torch import nn

    c = base_channels

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(latent_dim, 4 * c * 4**3),
                nn.Unflatten(1, (4 * c, 4, 4, 4)),
                nn.BatchNorm3d(4 * c),
                nn.ReLU(),
                nn.ConvTranspose3d(4 * c, 2 * c, 4, stride=2, padding=1),  # 8³
                nn.BatchNorm3d(2 * c),
                nn.ReLU(),
                nn.ConvTranspose3d(2 * c, c, 4, stride=2, padding=1),  # 16³
                nn.BatchNorm3d(c),
                nn.ReLU(),
                nn.Conv3d(c, 1, 3, padding=1),
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),  # 32³
            )
            nn.init.zeros_(self.body[-2].weight)
            nn.init.zeros_(self.body[-2].bias)
            self.register_buffer("template", torch.zeros(1, 1, GRID, GRID, GRID))

        def forward(self, latent: torch.Tensor) -> torch.Tensor:
            return self.body(latent) + self.template

    return Generator()


def set_template(generator: Any, mean_occupancy: Any, clip: float = 6.0) -> None:
    """Set the generator's template to ``logit(mean_occupancy)``, clipped to ±``clip`` (a (32, 32, 32) array)."""
    import torch

    p = torch.as_tensor(mean_occupancy, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
    generator.template.copy_(torch.log(p / (1 - p)).clamp(-clip, clip).reshape(1, 1, GRID, GRID, GRID))


def build_critic(base_channels: int = 8) -> Any:
    """The critic: ``(batch, 1, 32, 32, 32)`` occupancy in [0, 1] → ``(batch, 1)`` scores."""
    from torch import nn

    c = base_channels
    return nn.Sequential(
        nn.Conv3d(1, c, 4, stride=2, padding=1),  # 16³
        nn.LeakyReLU(0.2),
        nn.Conv3d(c, 2 * c, 4, stride=2, padding=1),  # 8³
        nn.LeakyReLU(0.2),
        nn.Conv3d(2 * c, 4 * c, 4, stride=2, padding=1),  # 4³
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * c * 4**3, 1),
    )
