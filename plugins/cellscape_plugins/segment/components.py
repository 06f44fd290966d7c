"""``segment.components``: connected components, filtered by size and numbered largest first.

Give exactly one input:

``volume``
    a Volume; the foreground is every voxel whose value is above ``threshold``
    (default 0, so any non-zero mask or probability map works as it is).
``labels``
    a Labels image (e.g. the output of ``segment.threshold``); a component is a
    connected set of voxels with the *same* non-zero label, so touching objects
    of different classes stay apart.

Connectivity counts the orthogonal steps between neighbours, as in
scikit-image: 1 = faces (6 neighbours), 2 = faces and edges (18), 3 = also
corners (26). Components smaller than the ``min_*`` or larger than the
``max_*`` sizes are dropped (both the voxel and the nm³ limits apply), and the
rest are numbered 1..N from the largest to the smallest (ties in scan order).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs


def components_by_size(image: np.ndarray, connectivity: int, min_voxels: float = 0,
                       max_voxels: float = np.inf) -> np.ndarray:
    """Connected components of equal non-zero value, filtered by size, numbered largest first.

    Parameters
    ----------
    image : ndarray of bool or int, shape (z, y, x)
        Foreground (bool) or labels; 0 is background.
    connectivity : int, 1..image.ndim
        Orthogonal steps allowed between neighbours (1 = faces only).
    min_voxels, max_voxels : float
        Keep components with ``min_voxels <= size <= max_voxels`` (voxel counts).

    Returns
    -------
    ndarray of int64, same shape
        0 = background, 1 = the largest kept component, 2 the next, ...
    """
    from skimage import measure

    components = measure.label(image, background=0, connectivity=connectivity)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    keep = (sizes >= max(min_voxels, 1)) & (sizes <= max_voxels)
    order = np.argsort(-sizes, kind="stable")  # largest first; equal sizes keep their scan order
    order = order[keep[order]]
    renumber = np.zeros(len(sizes), np.int64)
    renumber[order] = np.arange(1, len(order) + 1)
    return renumber[components]


@attrs.frozen
class ComponentsParams:
    threshold: float = cs.param(0.0, help="input 'volume': foreground is every voxel above this value (volume units)")
    connectivity: int = cs.param(1, choices=(1, 2, 3),
                                 help="neighbours: 1 = 6 (faces), 2 = 18 (and edges), 3 = 26 (and corners)")
    min_size_voxels: int = cs.param(0, ge=0, unit="voxel", help="drop components with fewer voxels")
    max_size_voxels: int | None = cs.param(None, ge=1, unit="voxel", help="drop components with more voxels (None: no limit)")
    min_volume_nm3: float = cs.param(0.0, ge=0, unit="nm^3", help="drop components with a smaller volume")
    max_volume_nm3: float | None = cs.param(None, gt=0, unit="nm^3", help="drop components with a larger volume (None: no limit)")


class Components(cs.Segmenter):
    """Connected components of a foreground or a label image, size-filtered and numbered largest first."""

    name = "segment.components"
    Params = ComponentsParams
    inputs = {
        "volume": cs.Port(cs.Volume, optional=True, help="foreground = value above `threshold` (give this or labels)"),
        "labels": cs.Port(cs.Labels, optional=True,
                          help="components of each label value separately (give this or volume)"),
    }

    def run(self, **inputs: Any) -> dict[str, cs.Artefact]:
        # both ports are optional (exactly one is needed), so the base class's inputs.pop("volume") would not do
        return self._check_outputs(self.segment(inputs.get("volume"), labels=inputs.get("labels")))

    def segment(self, volume: cs.Volume | None = None, labels: cs.Labels | None = None) -> cs.Labels:  # type: ignore[override]
        """Split the foreground into numbered instances.

        Parameters
        ----------
        volume : cs.Volume, optional
            Foreground = values above ``threshold``.
        labels : cs.Labels, optional
            Components of each non-zero label value.

        Returns
        -------
        cs.Labels
            uint16 (uint32 beyond 65535 components), instances 1..N largest first, 0 = background,
            no class names, on the input's grid.
        """
        p = self.params
        if (volume is None) == (labels is None):
            raise cs.InputError(f"{self.name} needs exactly one input, 'volume' or 'labels'; got "
                                f"{'both' if volume is not None else 'neither'}")
        if p.max_size_voxels is not None and p.max_size_voxels < p.min_size_voxels:
            raise cs.InputError(f"{self.name}: max_size_voxels ({p.max_size_voxels}) is below min_size_voxels "
                                f"({p.min_size_voxels}); nothing could be kept")
        if p.max_volume_nm3 is not None and p.max_volume_nm3 < p.min_volume_nm3:
            raise cs.InputError(f"{self.name}: max_volume_nm3 ({p.max_volume_nm3:g}) is below min_volume_nm3 "
                                f"({p.min_volume_nm3:g}); nothing could be kept")
        source: cs.Volume | cs.Labels = volume if volume is not None else labels  # type: ignore[assignment]
        image = volume.data > p.threshold if volume is not None else labels.data  # type: ignore[union-attr]
        voxel_nm3 = float(np.prod(source.voxel_size_nm))
        # the 1e-9 slack keeps a component of exactly the limiting volume despite rounding of the division
        min_voxels = max(float(p.min_size_voxels), p.min_volume_nm3 / voxel_nm3 * (1 - 1e-9))
        max_voxels = min(np.inf if p.max_size_voxels is None else float(p.max_size_voxels),
                         np.inf if p.max_volume_nm3 is None else p.max_volume_nm3 / voxel_nm3 * (1 + 1e-9))
        instances = components_by_size(image, p.connectivity, min_voxels, max_voxels)
        dtype = np.uint16 if instances.max() < 65536 else np.uint32
        return cs.Labels(instances.astype(dtype), {}, source.voxel_size_nm, source.origin_nm)
