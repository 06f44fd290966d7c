"""The U-Net itself (PyTorch): 2D or 3D, small by default so it trains on a CPU in minutes.

Ronneberger et al. (2015) / Çiçek et al. (2016) layout: ``depth`` levels of two
3x3(x3) convolutions with batch normalisation and ReLU, max-pooling down,
transposed convolutions up, skip connections by concatenation, a 1x1(x1)
convolution to class scores. Channels double per level from
``base_channels``. Inputs must have sides divisible by ``2**(depth-1)``
(the tiler pads to that).
"""

from __future__ import annotations

from typing import Any


def build(dim: int, n_classes: int, base_channels: int = 8, depth: int = 3, in_channels: int = 1) -> Any:
    """A U-Net module for ``dim``-D images with ``n_classes`` output channels."""
    import torch
    from torch import nn

    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    # batch norm: at inference it uses the running statistics, so a voxel's result does not depend on the tile
    # it is predicted in (instance norm would normalise each tile by its own content and leave seams)
    norm = nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d
    pool = nn.MaxPool2d if dim == 2 else nn.MaxPool3d
    up = nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose3d

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(conv(c_in, c_out, 3, padding=1), norm(c_out), nn.ReLU(inplace=True),
                             conv(c_out, c_out, 3, padding=1), norm(c_out), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [base_channels * 2**level for level in range(depth)]
            self.down = nn.ModuleList()
            previous = in_channels
            for width in widths:
                self.down.append(block(previous, width))
                previous = width
            self.pool = pool(2)
            self.up = nn.ModuleList()
            self.merge = nn.ModuleList()
            for width in reversed(widths[:-1]):
                self.up.append(up(previous, width, 2, stride=2))
                self.merge.append(block(2 * width, width))
                previous = width
            self.head = conv(previous, n_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for level, layer in enumerate(self.down):
                x = layer(x)
                if level < len(self.down) - 1:
                    skips.append(x)
                    x = self.pool(x)
            for upsample, merge in zip(self.up, self.merge, strict=True):
                x = merge(torch.cat([upsample(x), skips.pop()], dim=1))
            return self.head(x)

    return UNet()
