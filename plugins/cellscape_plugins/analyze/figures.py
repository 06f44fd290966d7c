"""Figures for run reports, one maker per artefact kind (matplotlib, off-screen; meshes drawn by VTK off-screen).

Each maker is called as ``maker(artefact, out_dir, title=..., inputs=...)``
where ``inputs`` are the other inputs of the step that made the artefact
(a label figure overlays the step's input volume), writes PNG files into
``out_dir`` and returns their paths.

Mesh renders come from VTK in a child process (``_vtk_render``); when no
off-screen OpenGL context can be made there, matplotlib's 3D axes draw them
instead. The renderer used is in the file name (``..._render_vtk.png`` or
``..._render_matplotlib.png``), in the caption inside the picture and in the
PNG's ``Description`` text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

import cellscape as cs

from .._tetmesh import exterior_faces
from .summary import mean_concentration_by_region, triangle_angles_deg


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_").lower() or "figure"


def _save(fig: Any, out_dir: Path, title: str, suffix: str, description: str | None = None) -> Path:
    path = Path(out_dir) / f"{_slug(title)}_{suffix}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Description": description} if description else None)
    _pyplot().close(fig)
    return path


def _orthogonal(data: np.ndarray, voxel_nm: tuple[float, float, float],
                origin_nm: tuple[float, float, float]) -> list[tuple[str, np.ndarray, list[float], str, str]]:
    """Central xy, xz and yz slices of a [z, y, x] array.

    Returns
    -------
    list of (panel title, 2D slice, imshow extent [left, right, bottom, top] in nm, x-axis label, y-axis label)
    """
    nz, ny, nx = data.shape
    (vz, vy, vx), (oz, oy, ox) = voxel_nm, origin_nm

    def span(origin: float, size: float, n: int) -> tuple[float, float]:
        return origin - size / 2, origin + (n - 0.5) * size  # voxel centres sit at origin + i * size

    (x0, x1), (y0, y1), (z0, z1) = span(ox, vx, nx), span(oy, vy, ny), span(oz, vz, nz)
    return [
        (f"xy, z = {oz + nz // 2 * vz:g} nm", data[nz // 2], [x0, x1, y1, y0], "x (nm)", "y (nm)"),
        (f"xz, y = {oy + ny // 2 * vy:g} nm", data[:, ny // 2], [x0, x1, z1, z0], "x (nm)", "z (nm)"),
        (f"yz, x = {ox + nx // 2 * vx:g} nm", data[:, :, nx // 2], [y0, y1, z1, z0], "y (nm)", "z (nm)"),
    ]


def _label_axes(ax: Any, name: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(name, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def volume_figures(volume: cs.Volume, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """Three orthogonal central slices in nm, grey levels (0.5–99.5 percentile) with a colour bar."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
    low, high = np.percentile(volume.data, [0.5, 99.5])
    for ax, (name, image, extent, xlabel, ylabel) in zip(
        axes, _orthogonal(volume.data, volume.voxel_size_nm, volume.origin_nm), strict=True
    ):
        shown = ax.imshow(image, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="nearest")
        _label_axes(ax, name, xlabel, ylabel)
    fig.colorbar(shown, ax=axes, shrink=0.8, label="voxel value")
    fig.suptitle(title)
    return [_save(fig, out_dir, title, "slices")]


def labels_figures(labels: cs.Labels, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """Orthogonal slices of the labels, overlaid on the step's input volume when it has one of the same shape."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    background = next((a for a in inputs.values() if isinstance(a, cs.Volume) and a.shape == labels.shape), None)
    values = np.array(labels.label_values(), dtype=np.int64)
    palette = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
    colours = [palette(i % palette.N) for i in range(max(len(values), 1))]
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), layout="constrained")
    slices = _orthogonal(labels.data, labels.voxel_size_nm, labels.origin_nm)
    backs = (_orthogonal(background.data, background.voxel_size_nm, background.origin_nm)
             if background is not None else [None] * 3)
    for ax, (name, image, extent, xlabel, ylabel), back in zip(axes, slices, backs, strict=True):
        if back is not None:
            ax.imshow(back[1], cmap="gray", extent=extent, interpolation="nearest")
        else:
            ax.imshow(np.ones_like(image, dtype=float), cmap="gray", extent=extent, vmin=0, vmax=1)  # a white page
        # colour by rank among the label values present, so sparse instance numbers stay cheap
        rank = np.searchsorted(values, image.astype(np.int64)) if len(values) else np.zeros(image.shape, int)
        overlay = np.ma.masked_where(image == 0, rank)
        ax.imshow(overlay, cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, alpha=0.9 if back is None else 0.55,
                  extent=extent, interpolation="nearest")
        _label_axes(ax, name, xlabel, ylabel)
    if 0 < len(values) <= 12:
        handles = [Patch(color=colours[i], label=labels.class_names.get(int(v), f"label {v}")) for i, v in enumerate(values)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6))
    else:
        fig.supxlabel(f"{len(values)} labels")
    fig.suptitle(title)
    return [_save(fig, out_dir, title, "overlay")]


def tilt_series_figures(tilts: cs.TiltSeries, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """Up to five projections: lowest tilt, halfway to 0°, nearest 0°, halfway to the highest, highest."""
    plt = _pyplot()
    angles = tilts.tilt_angles_deg
    low, high = float(angles.min()), float(angles.max())
    wanted = (low, low / 2, 0.0, high / 2, high)
    picks = sorted({int(np.argmin(np.abs(angles - target))) for target in wanted})
    fig, axes = plt.subplots(1, len(picks), figsize=(3.6 * len(picks), 4), squeeze=False, layout="constrained")
    ny, nx = tilts.projections.shape[1:]
    extent = [0, nx * tilts.pixel_size_nm, ny * tilts.pixel_size_nm, 0]
    for ax, index in zip(axes[0], picks, strict=True):
        ax.imshow(tilts.projections[index], cmap="gray", extent=extent, interpolation="nearest")
        _label_axes(ax, f"{angles[index]:+.1f}° (image {index})", "x (nm)", "y (nm)")
    fig.suptitle(f"{title} ({len(angles)} tilts, {low:+.0f}° to {high:+.0f}°)")
    return [_save(fig, out_dir, title, "tilts")]


def _category_colours(categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``categories`` and one RGB colour (floats in [0, 1]) per value, tab10/tab20 order."""
    plt = _pyplot()
    values = np.unique(categories)
    palette = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
    return values, np.array([palette(i % palette.N)[:3] for i in range(len(values))]).reshape(-1, 3)


def _render_triangles(ax: Any, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray,
                      max_triangles: int) -> None:
    """matplotlib's 3D axes (the fallback renderer): at most ``max_triangles`` triangles, shaded by their normal."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    if len(triangles) > max_triangles:
        keep = np.random.default_rng(0).choice(len(triangles), max_triangles, replace=False)
        triangles, colours = triangles[keep], colours[keep]
    corners = vertices[triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-30
    light = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
    shade = 0.35 + 0.65 * np.abs(normals @ light)
    ax.add_collection3d(Poly3DCollection(corners, facecolors=colours * shade[:, None], edgecolor="none", alpha=0.6))
    ax.set_box_aspect((1, 1, 1))
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    centre, half = (low + high) / 2, (high - low).max() / 2
    for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
        setter(c - half, c + half)
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    ax.set_zlabel("z (nm)")


def _front_octant(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """True for points in the octant around ``centre`` that faces the camera (cut away to show the inside)."""
    from ._vtk_render import VIEW_DIRECTION

    return ((points - centre) * np.sign(VIEW_DIRECTION) > 0).all(axis=1)


def _scale_length_nm(width_nm: float) -> float:
    """A round length (1, 2 or 5 × 10^k nm) near a quarter of ``width_nm``."""
    target = max(width_nm / 4, 1e-9)
    exponent = np.floor(np.log10(target))
    return float(max(m for m in (1.0, 2.0, 5.0) if m * 10**exponent <= target) * 10**exponent)


def _length_label(nm: float) -> str:
    return f"{nm / 1000:g} µm" if nm >= 1000 else f"{nm:g} nm"


def _legend(fig: Any, values: np.ndarray, colours: np.ndarray, names: dict[int, str], what: str,
            loc: str = "lower left") -> None:
    from matplotlib.patches import Patch

    if len(values) > 12:
        fig.text(0.02, 0.02, f"{len(values)} {what}s", fontsize=8)
        return
    handles = [Patch(color=colours[i], label=f"{what} {int(v)}: {names.get(int(v), '(unnamed)')}")
               for i, v in enumerate(values)]
    fig.legend(handles=handles, loc=loc, fontsize=8, frameon=False, ncol=1 if len(handles) <= 4 else 2)


def _compose_vtk(image: np.ndarray, camera: dict[str, Any], heading: str, values: np.ndarray, colours: np.ndarray,
                 names: dict[int, str], what: str, note: str) -> Any:
    """The VTK image with a title, legend, scale bar in nm/µm, axis directions and the renderer note."""
    plt = _pyplot()
    height, width = image.shape[:2]
    rows = 1 if len(values) > 12 else (len(values) if len(values) <= 4 else (len(values) + 1) // 2)
    below, above = 0.25 + 0.2 * rows, 0.45  # inches: legend and note below the image, heading above
    total = height / 100 + below + above
    fig = plt.figure(figsize=(width / 100, total))
    ax = fig.add_axes((0, below / total, 1, height / 100 / total))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    pixels_per_nm = height / (2 * camera["parallel_scale_nm"])
    bar = _scale_length_nm(width / pixels_per_nm)
    x1, y = width * 0.95, height * 0.95
    ax.plot([x1 - bar * pixels_per_nm, x1], [y, y], color="black", linewidth=4, solid_capstyle="butt")
    ax.text(x1 - bar * pixels_per_nm / 2, y - height * 0.015, _length_label(bar), ha="center", va="bottom", fontsize=10)
    origin, length = np.array([width * 0.09, height * 0.91]), width * 0.06
    right, up = np.array(camera["right"]), np.array(camera["up"])
    for axis, name in enumerate("xyz"):
        unit = np.eye(3)[axis]
        tip = origin + length * np.array([unit @ right, -(unit @ up)])
        ax.annotate("", xy=tuple(tip), xytext=tuple(origin),
                    arrowprops={"arrowstyle": "-|>", "color": "#333", "linewidth": 1.2})
        ax.text(*(origin + 1.35 * (tip - origin)), name, ha="center", va="center", fontsize=9, color="#333")
    fig.suptitle(heading, fontsize=10)
    _legend(fig, values, colours, names, what)
    fig.text(0.98, 0.02, note, ha="right", va="bottom", fontsize=7, color="#555", wrap=True)
    return fig


def _compose_matplotlib(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray, heading: str,
                        values: np.ndarray, palette: np.ndarray, names: dict[int, str], what: str, note: str) -> Any:
    plt = _pyplot()
    fig = plt.figure(figsize=(6.5, 7.2))
    ax = fig.add_subplot(projection="3d")
    _render_triangles(ax, vertices, triangles, colours, 20000)
    fig.suptitle(heading, fontsize=10)
    _legend(fig, values, palette, names, what, loc="upper left")
    fig.text(0.98, 0.01, note, ha="right", va="bottom", fontsize=7, color="#555", wrap=True)
    return fig


def mesh_renders(scenes: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """Render triangle scenes (VTK off-screen, else matplotlib) to one PNG each.

    Each scene: ``vertices`` (n, 3) in nm, ``triangles`` (m, 3), ``categories`` (m,) int (marker or region of each
    triangle), ``names`` {category: name}, ``what`` ("marker" or "region"), ``heading`` and ``suffix`` (file name
    part). Returns the paths, named ``{title}_{suffix}_vtk.png`` or ``{title}_{suffix}_matplotlib.png``.
    """
    from . import _vtk_render

    palettes = [_category_colours(s["categories"]) for s in scenes]
    colours = [palette[np.searchsorted(values, s["categories"])] if len(values) else np.zeros((0, 3))
               for s, (values, palette) in zip(scenes, palettes, strict=True)]
    try:
        images, renderer = _vtk_render.render_scenes(
            [{"vertices": s["vertices"], "triangles": s["triangles"], "colours": np.round(c * 255).astype(np.uint8)}
             for s, c in zip(scenes, colours, strict=True)])
    except _vtk_render.RenderUnavailable as exc:
        note = f"rendered by matplotlib (fallback: VTK off-screen rendering unavailable: {exc})"
        figures = [_compose_matplotlib(s["vertices"], s["triangles"], c, s["heading"], values, palette, s["names"],
                                       s["what"], note)
                   for s, c, (values, palette) in zip(scenes, colours, palettes, strict=True)]
        return [_save(fig, out_dir, title, f"{s['suffix']}_matplotlib", note)
                for fig, s in zip(figures, scenes, strict=True)]
    note = f"rendered by {renderer}"
    paths = []
    for s, (image, camera), (values, palette) in zip(scenes, images, palettes, strict=True):
        fig = _compose_vtk(image, camera, s["heading"], values, palette, s["names"], s["what"], note)
        paths.append(_save(fig, out_dir, title, f"{s['suffix']}_vtk", note))
    return paths


def angle_histogram(ax: Any, angles: np.ndarray) -> None:
    """Histogram of triangle angles with a kernel density, lines at 15° and 150° (as in the GAMer figure)."""
    from scipy.stats import gaussian_kde

    flat = angles.ravel()
    ax.hist(flat, bins=90, range=(0, 180), density=True, color="#8fb3d9", edgecolor="none")
    if np.ptp(flat) > 0:
        grid = np.linspace(0, 180, 361)
        sample = flat if flat.size <= 50000 else np.random.default_rng(0).choice(flat, 50000, replace=False)
        ax.plot(grid, gaussian_kde(sample)(grid), color="#1f4e79")
    for bound in (15, 150):
        ax.axvline(bound, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlabel("angle (deg)")
    ax.set_ylabel("density")
    ax.set_title(f"min {flat.min():.1f}°, max {flat.max():.1f}°, <15°: {100 * (flat < 15).mean():.2f}%")


def _nested_markers(vertices: np.ndarray, triangles: np.ndarray, markers: np.ndarray) -> bool:
    """Whether some marker's triangles lie inside another marker's bounding box (organelles in a cell)."""
    boxes = []
    for m in np.unique(markers):
        used = vertices[triangles[markers == m].ravel()]
        boxes.append((used.min(axis=0), used.max(axis=0)))
    return any(i != j and (lo_i > lo_j).all() and (hi_i < hi_j).all()
               for i, (lo_i, hi_i) in enumerate(boxes) for j, (lo_j, hi_j) in enumerate(boxes))


def surface_figures(surface: cs.SurfaceMesh, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """A shaded render coloured by marker (front octant cut away when surfaces are nested), and the triangle-angle
    histogram."""
    plt = _pyplot()
    vertices, triangles, markers = surface.vertices, surface.triangles, surface.markers
    heading = f"{title}\n{len(triangles)} triangles, {len(vertices)} vertices"
    if len(triangles) and _nested_markers(vertices, triangles, markers):
        centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
        kept = ~_front_octant(vertices[triangles].mean(axis=1), centre)
        triangles, markers = triangles[kept], markers[kept]
        heading += " (front octant cut away to show the nested surfaces)"
    paths = []
    if len(triangles):
        paths += mesh_renders([{"vertices": vertices, "triangles": triangles, "categories": markers,
                                "names": surface.marker_names, "what": "marker", "heading": heading,
                                "suffix": "render"}], out_dir, title)
    fig, ax = plt.subplots(figsize=(6, 4))
    angle_histogram(ax, triangle_angles_deg(surface.vertices, surface.triangles))
    fig.suptitle(f"{title}: triangle angles")
    return [*paths, _save(fig, out_dir, title, "angles")]


def tet_mesh_figures(mesh: cs.TetMesh, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """The boundary triangles coloured by marker, a cut-away (front octant of tetrahedra removed) coloured by region,
    and the histogram of dihedral angles."""
    plt = _pyplot()
    points, tets = mesh.points, mesh.tetrahedra
    regions = (np.asarray(mesh.region_markers, np.int64) if mesh.region_markers is not None
               else np.zeros(len(tets), np.int64))
    counts = f"{len(tets)} tetrahedra, {len(points)} nodes"
    scenes = []
    if len(mesh.boundary_triangles):
        scenes.append({"vertices": points, "triangles": mesh.boundary_triangles,
                       "categories": np.asarray(mesh.boundary_markers, np.int64), "names": mesh.boundary_names,
                       "what": "marker", "heading": f"{title}\n{counts}: boundary markers", "suffix": "boundary"})
    if len(tets):
        centre = (points.min(axis=0) + points.max(axis=0)) / 2
        kept = ~_front_octant(points[tets].mean(axis=1), centre)
        if not kept.any():
            kept[:] = True
        faces, owner = exterior_faces(tets[kept])
        cut = " (front octant cut away)" if not kept.all() else ""
        scenes.append({"vertices": points, "triangles": faces, "categories": regions[kept][owner],
                       "names": mesh.region_names, "what": "region",
                       "heading": f"{title}\n{counts}: regions{cut}", "suffix": "cutaway"})
    paths = mesh_renders(scenes, out_dir, title) if scenes else []
    p = mesh.points[mesh.tetrahedra]
    dihedral = []
    for i, j in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]:
        k, m = (v for v in range(4) if v not in (i, j))
        edge = p[:, j] - p[:, i]
        n1 = np.cross(edge, p[:, k] - p[:, i])
        n2 = np.cross(edge, p[:, m] - p[:, i])
        cos = np.einsum("ij,ij->i", n1, n2) / (np.linalg.norm(n1, axis=1) * np.linalg.norm(n2, axis=1) + 1e-300)
        dihedral.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    angles = np.concatenate(dihedral)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(angles, bins=90, range=(0, 180), color="#9fc5a8")
    ax.set_xlabel("dihedral angle (deg)")
    ax.set_ylabel("count")
    ax.set_title(f"{title}: min {angles.min():.1f}°, max {angles.max():.1f}°")
    paths.append(_save(fig, out_dir, title, "dihedral"))
    return paths


def fields_figures(fields: cs.Fields, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """Mean concentration per region over time, and the final field near the central plane."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = fields.mesh.region_names
    for (species, region), mean in mean_concentration_by_region(fields).items():
        ax.plot(fields.times_s, mean, marker="o", markersize=3,
                label=f"{species} in {names.get(region, f'region {region}')}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"mean concentration ({next(iter(fields.units.values()))})")
    ax.legend(fontsize=8)
    ax.set_title(title)
    paths = [_save(fig, out_dir, title, "curves")]
    species = next(iter(fields.values))
    points = fields.mesh.points
    z = points[:, 2]
    band = np.abs(z - np.median(z)) <= 0.05 * max(float(np.ptp(z)), 1e-12)
    picks = sorted({0, min(1, len(fields.times_s) - 1), len(fields.times_s) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(5 * len(picks), 4), squeeze=False)
    for ax, index in zip(axes[0], picks, strict=True):
        # each panel has its own colour scale: a released pulse soon falls far below its initial peak
        shown = ax.scatter(points[band, 0], points[band, 1], c=fields.values[species][index, band], s=6, cmap="viridis")
        ax.set_aspect("equal")
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)")
        ax.set_title(f"{species} at t = {fields.times_s[index]:g} s")
        fig.colorbar(shown, ax=ax, label=fields.units[species], shrink=0.8)
    fig.suptitle(f"{title}: nodes near the central z plane")
    paths.append(_save(fig, out_dir, title, "field"))
    return paths


def _has(table: cs.Table, *names: str) -> bool:
    return all(name in table.columns for name in names)


def sensitivity_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Sobol indices (analyze.uq ``sensitivity``): S1 and ST per parameter with 95 % bars, at each output's last time."""
    plt = _pyplot()
    outputs = list(dict.fromkeys(table.columns["output"].tolist()))
    parameters = list(dict.fromkeys(table.columns["parameter"].tolist()))
    fig, axes = plt.subplots(1, len(outputs), figsize=(max(4.5, 1.2 * len(parameters) + 2) * len(outputs), 4),
                             squeeze=False, layout="constrained")
    for ax, output in zip(axes[0], outputs, strict=True):
        rows = table.columns["output"] == output
        last = float(table.columns["time_s"][rows].max())
        chosen = rows & (table.columns["time_s"] == last)
        order = [int(np.nonzero(chosen & (table.columns["parameter"] == name))[0][0]) for name in parameters]
        x = np.arange(len(parameters))
        for shift, key, colour in ((-0.2, "S1", "#4c72b0"), (0.2, "ST", "#dd8452")):
            ax.bar(x + shift, table.columns[key][order], 0.4, yerr=np.nan_to_num(table.columns[key + "_conf"][order]),
                   color=colour, capsize=3, label={"S1": "first order S1", "ST": "total ST"}[key])
        ax.set_xticks(x, parameters)
        top = np.nan_to_num(table.columns["ST"][order] + table.columns["ST_conf"][order], nan=1.0)
        ax.set_ylim(min(0.0, float(np.nanmin(table.columns["S1"][order])) - 0.05), max(1.05, float(top.max()) + 0.05))
        ax.axhline(0, color="#555", linewidth=0.8)
        _label_axes(ax, f"{output} at t = {last:g} s", "parameter", "Sobol index")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, out_dir, title, "sobol")


def morris_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Morris screening (analyze.uq ``screening``): σ against μ* per parameter, at each output's last time."""
    plt = _pyplot()
    outputs = list(dict.fromkeys(table.columns["output"].tolist()))
    fig, axes = plt.subplots(1, len(outputs), figsize=(5 * len(outputs), 4.2), squeeze=False, layout="constrained")
    for ax, output in zip(axes[0], outputs, strict=True):
        rows = table.columns["output"] == output
        chosen = rows & (table.columns["time_s"] == table.columns["time_s"][rows].max())
        mu_star, sigma = table.columns["mu_star"][chosen], table.columns["sigma"][chosen]
        ax.scatter(mu_star, sigma, color="#4c72b0")
        for name, x, y in zip(table.columns["parameter"][chosen], mu_star, sigma, strict=True):
            ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=9)
        top = max(float(mu_star.max()), float(sigma.max()), 1e-12) * 1.15
        ax.plot([0, top], [0, top], color="#999", linestyle="--", linewidth=0.8)  # σ = μ*: strongly nonlinear
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        _label_axes(ax, f"{output} at t = {table.columns['time_s'][chosen].max():g} s", "μ* (mean |effect|)",
                    "σ (spread of effects)")
    fig.suptitle(title)
    return _save(fig, out_dir, title, "morris")


def monte_carlo_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Monte Carlo statistics (analyze.uq ``table``): mean and the outermost quantiles over time, per output."""
    plt = _pyplot()
    quantiles = sorted((c for c in table.columns if c.startswith("q")), key=lambda c: float(c[1:]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for output in dict.fromkeys(table.columns["output"].tolist()):
        rows = table.columns["output"] == output
        t = table.columns["time_s"][rows]
        line = ax.plot(t, table.columns["mean"][rows], marker="o", markersize=3, label=f"{output} mean")[0]
        if len(quantiles) >= 2:
            ax.fill_between(t, table.columns[quantiles[0]][rows], table.columns[quantiles[-1]][rows], alpha=0.25,
                            color=line.get_color(), label=f"{quantiles[0][1:]}–{quantiles[-1][1:]} % quantiles")
    _label_axes(ax, title, "time (s)", "output")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, title, "montecarlo")


def fit_residuals_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Fit residuals (analyze.fit ``residuals``): observations and the fitted curve per output, and the residuals."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True, height_ratios=(2, 1), layout="constrained")
    for output in dict.fromkeys(table.columns["output"].tolist()):
        rows = table.columns["output"] == output
        t = table.columns["time_s"][rows]
        order = np.argsort(t, kind="stable")
        line = top.plot(t[order], table.columns["predicted"][rows][order], label=f"{output} fit")[0]
        top.plot(t, table.columns["observed"][rows], "o", markersize=4, color=line.get_color(), label=f"{output} observed")
        bottom.plot(t, table.columns["standardized"][rows], "o", markersize=4, color=line.get_color())
    bottom.axhline(0, color="#555", linewidth=0.8)
    for bound in (-2, 2):
        bottom.axhline(bound, color="#c0392b", linestyle="--", linewidth=0.8)
    _label_axes(top, title, "", "value")
    _label_axes(bottom, "standardized residuals (±2 dashed)", "time (s)", "residual / σ")
    top.legend(fontsize=7)
    return _save(fig, out_dir, title, "fit")


def estimates_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Fitted parameters (analyze.fit ``table``): each estimate with its interval, relative to the estimate."""
    plt = _pyplot()
    names = [str(n) for n in table.columns["parameter"]]
    estimate = table.columns["estimate"]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 4))
    x = np.arange(len(names))
    low = (estimate - table.columns["ci_low"]) / np.abs(estimate)
    high = (table.columns["ci_high"] - estimate) / np.abs(estimate)
    ax.errorbar(x, np.ones(len(names)), yerr=np.nan_to_num(np.vstack([low, high])), fmt="o", capsize=4, color="#4c72b0")
    ax.axhline(1.0, color="#999", linewidth=0.8)
    labels = [f"{n}\n{e:.4g} {u}".strip() for n, e, u in
              zip(names, estimate, table.columns.get("unit", np.full(len(names), "")), strict=True)]
    ax.set_xticks(x, labels)
    _label_axes(ax, title, "parameter (estimate)", "interval / estimate")
    return _save(fig, out_dir, title, "estimates")


def morphometry_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Per-object sizes (analyze.morphometry ``table``): volume per object, and sphericity against volume."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    names = [str(n) for n in table.columns["object"]]
    shown = min(len(names), 40)
    left.bar(np.arange(shown), table.columns["volume"][:shown], color="#4c72b0")
    left.set_xticks(np.arange(shown), names[:shown], rotation=60, ha="right", fontsize=7)
    _label_axes(left, f"volume of {len(names)} object(s)" + (f" (first {shown})" if shown < len(names) else ""),
                "", f"volume ({table.units.get('volume', '')})")
    right.scatter(table.columns["volume"], table.columns["sphericity"], color="#dd8452", s=18)
    _label_axes(right, "shape", f"volume ({table.units.get('volume', '')})", "sphericity")
    fig.suptitle(title)
    return _save(fig, out_dir, title, "morphometry")


def components_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """Explained variance per component (analyze.reduce ``table``), with the cumulative share."""
    plt = _pyplot()
    shown = min(table.n_rows, 20)
    fig, ax = plt.subplots(figsize=(6, 4))
    k = table.columns["component"][:shown]
    ax.bar(k, table.columns["explained_variance_ratio"][:shown], color="#4c72b0", label="per component")
    ax.plot(k, table.columns["cumulative"][:shown], "o-", color="#dd8452", label="cumulative")
    ax.set_ylim(0, 1.05)
    _label_axes(ax, title, "component", "share of variance")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, title, "components")


def embedding_figure(table: cs.Table, out_dir: Path, title: str) -> Path:
    """The 2D embedding (analyze.reduce ``scores``), coloured by cluster, or by time for field snapshots."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    x, y, cluster = table.columns["embed_x"], table.columns["embed_y"], table.columns["cluster"]
    if (cluster >= 0).any():
        shown = ax.scatter(x, y, c=cluster, cmap="tab10", vmin=-0.5, vmax=9.5, s=18)
        ax.legend(*shown.legend_elements(), title="cluster", fontsize=8)
    elif "time_s" in table.columns:
        shown = ax.scatter(x, y, c=table.columns["time_s"], cmap="viridis", s=18)
        fig.colorbar(shown, ax=ax, label="time (s)")
    else:
        ax.scatter(x, y, s=18, color="#4c72b0")
    _label_axes(ax, title, "embedding 1", "embedding 2")
    return _save(fig, out_dir, title, "embedding")


def analysis_figures(table: cs.Table, out_dir: Path, title: str) -> list[Path] | None:
    """The figure of an analysis table recognised by its columns, or None for other tables."""
    if table.n_rows == 0:
        return None
    if _has(table, "parameter", "S1", "ST", "S1_conf", "ST_conf", "output", "time_s"):
        return [sensitivity_figure(table, out_dir, title)]
    if _has(table, "parameter", "mu_star", "sigma", "output", "time_s"):
        return [morris_figure(table, out_dir, title)]
    if _has(table, "output", "time_s", "mean") and any(c.startswith("q") for c in table.columns):
        return [monte_carlo_figure(table, out_dir, title)]
    if _has(table, "output", "time_s", "observed", "predicted", "standardized"):
        return [fit_residuals_figure(table, out_dir, title)]
    if _has(table, "parameter", "estimate", "ci_low", "ci_high"):
        return [estimates_figure(table, out_dir, title)]
    if _has(table, "object", "volume", "sphericity"):
        return [morphometry_figure(table, out_dir, title)]
    if _has(table, "component", "explained_variance_ratio", "cumulative"):
        return [components_figure(table, out_dir, title)]
    if _has(table, "embed_x", "embed_y", "cluster"):
        return [embedding_figure(table, out_dir, title)]
    return None


def table_figures(table: cs.Table, out_dir: Path, *, title: str, inputs: dict[str, Any]) -> list[Path]:
    """Analysis tables (Sobol bars, Morris plane, Monte Carlo bands, fit curves and residuals, estimates with intervals,
    per-object sizes, scree plot, embedding) by
    their columns; otherwise a time course plot for tables with a ``time_s`` column (others: HTML only)."""
    analysis = analysis_figures(table, Path(out_dir), title)
    if analysis is not None:
        return analysis
    if "time_s" not in table.columns or table.n_rows == 0:
        return []
    numeric = [n for n, c in table.columns.items() if n != "time_s" and c.dtype.kind in "fiu"]
    if not numeric:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in numeric:
        ax.plot(table.columns["time_s"], table.columns[name], label=f"{name} ({table.units.get(name, '')})")
    ax.set_xlabel("time (s)")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return [_save(fig, out_dir, title, "timecourse")]


FIGURE_MAKERS = [
    (cs.Volume, volume_figures),
    (cs.Labels, labels_figures),
    (cs.TiltSeries, tilt_series_figures),
    (cs.SurfaceMesh, surface_figures),
    (cs.TetMesh, tet_mesh_figures),
    (cs.Fields, fields_figures),
    (cs.Table, table_figures),
]
