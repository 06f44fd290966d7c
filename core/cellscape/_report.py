"""The run report: one self-contained HTML page per run directory.

The page shows the spec, the provenance of every step (method, version,
parameters, seeds, timings, cached or computed), tables, and figures. The
core draws nothing itself: figures come from the figure makers plugins
register for each artefact kind (``registry.add_figure``). Figures are
cached by the content hash of what they show, so rebuilding the report of an
unchanged run only rewrites the HTML.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from ._data import Artefact, Table
from ._errors import InputError
from ._payload import atomic_write
from ._registry import Registry, get_registry
from ._store import Store

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#666} table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} code,pre{background:#f7f7f7;font-size:.85rem} pre{padding:.6rem;overflow:auto}
.cached{color:#2a7} .computed{color:#27a} figure{display:inline-block;margin:.5rem;vertical-align:top}
figure img{max-width:520px;border:1px solid #eee} img.broken{outline:3px solid #c00} figcaption{font-size:.8rem;color:#555}
.error{color:#b00}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table_html(table: Table, max_rows: int = 200) -> str:
    names = list(table.columns)
    head = "".join(f"<th>{_esc(n)}{' [' + _esc(table.units[n]) + ']' if table.units.get(n) else ''}</th>" for n in names)
    rows = []
    for row in table.rows()[:max_rows]:
        cells = []
        for name in names:
            value = row[name]
            cells.append(f"<td>{value:.6g}</td>" if isinstance(value, float) else f"<td>{_esc(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='meta'>{table.n_rows - max_rows} more rows not shown</p>" if table.n_rows > max_rows else ""
    title = f"<p><b>{_esc(table.title)}</b></p>" if table.title else ""
    return f"{title}<table><tr>{head}</tr>{''.join(rows)}</table>{more}"


def _module_fingerprint(maker: Any) -> str:
    """Hash of the sources of the package that defines a figure maker: editing the drawing code, or a helper
    module beside it (a renderer, a colour map), redraws the figures."""
    module = sys.modules.get(maker.__module__)
    source = getattr(module, "__file__", None)
    if not source or not Path(source).exists():
        return "unknown"
    digest = hashlib.sha256()
    for path in sorted(Path(source).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _figures(artefact: Artefact, digest: str, title: str, inputs: dict[str, Artefact], input_hashes: list[str],
             registry: Registry, figure_root: Path) -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    errors: list[str] = []
    for maker in registry.figure_makers(artefact):
        ident = (f"{maker.__module__}.{maker.__qualname__}|{_module_fingerprint(maker)}|{digest}|"
                 f"{'|'.join(sorted(input_hashes))}|{title}")
        folder = figure_root / hashlib.sha256(ident.encode()).hexdigest()[:20]
        if not (folder / ".complete").exists():
            figure_root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".fig-", dir=figure_root) as tmp:
                try:
                    made = maker(artefact, Path(tmp), title=title, inputs=inputs)
                except Exception as exc:  # a figure that fails must not hide the others
                    detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
                    errors.append(f"{maker.__module__}.{maker.__qualname__} failed: {detail}")
                    continue
                (Path(tmp) / ".complete").write_text("\n".join(Path(p).name for p in made))
                if folder.exists():
                    shutil.rmtree(folder)
                Path(tmp).rename(folder)
                Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
        names = [n for n in (folder / ".complete").read_text().splitlines() if n]
        paths.extend(folder / n for n in names)
    return paths, errors


def _sweep_html(sweep: dict[str, Any]) -> str:
    """The sweep's table (from sweep.csv) and figure, embedded."""
    parts = [f"<h2>Sweep</h2><p class='meta'>{_esc(sweep['mode'])} over {_esc(', '.join(sweep['keys']))}: "
             f"{len(sweep['members'])} members (the steps below are member 0's)</p>"]
    for name in sweep.get("files", []):
        path = Path(name)
        if path.suffix == ".csv" and path.exists():
            from .io import read

            parts.append(_table_html(read(path)))
        elif path.suffix == ".png" and path.exists():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<figure><img alt='sweep' src='data:image/png;base64,{data}'><figcaption>{_esc(path.name)}"
                         "</figcaption></figure>")
    return "".join(parts)


# The page checks itself once loaded: how many figures the browser decoded, and any script or resource error.
# The footer tells the reader ("figures: 12 of 12 shown"); the body's data-* attributes tell a headless test.
_STATUS_SCRIPT = """
var cellscapeErrors = [];
window.addEventListener("error", function (e) {
  cellscapeErrors.push(e.message || ("could not load " + (e.target && (e.target.alt || e.target.tagName))));
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var shown = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  images.forEach(function (i) { if (shown.indexOf(i) < 0) { i.className += " broken"; } });
  document.body.setAttribute("data-figures", images.length);
  document.body.setAttribute("data-figures-shown", shown.length);
  document.body.setAttribute("data-errors", cellscapeErrors.join(" | "));
  document.getElementById("figure-status").textContent =
      "figures: " + shown.length + " of " + images.length + " shown" +
      (cellscapeErrors.length ? "; errors: " + cellscapeErrors.join("; ") : "");
});
"""


def build_report(run_dir: str | Path, registry: Registry | None = None) -> Path:
    """Write ``run_dir/report/index.html`` (images embedded, PNGs also under report/figures/)."""
    run_dir = Path(run_dir)
    provenance_path = run_dir / "provenance.json"
    if not provenance_path.exists():
        raise InputError(f"{run_dir}: no provenance.json here; is it a cellscape run directory?")
    provenance = json.loads(provenance_path.read_text())
    registry = registry or get_registry()
    store = Store(run_dir / "store")
    report_dir = run_dir / "report"
    figure_root = report_dir / "figures"
    cache: dict[str, Artefact] = {}

    def load(digest: str) -> Artefact:
        if digest not in cache:
            cache[digest] = store.get(digest, verify=False)
        return cache[digest]

    spec = provenance["spec"]
    parts = [
        f"<h1>cellscape run: {_esc(spec['name'])}</h1>",
        f"<p class='meta'>spec {_esc(spec['path'])} (sha256 {spec['sha256'][:12]}) · cellscape "
        f"{_esc(provenance['cellscape'])} · host {_esc(provenance['host']['hostname'])} · "
        f"wall time {provenance.get('wall_time_s', '?')} s</p>",
        "<h2>Steps</h2><table><tr><th>step</th><th>method</th><th>version</th><th>status</th><th>time [s]</th>"
        "<th>parameters</th></tr>",
    ]
    # a sweep shows member 0's steps in full and every member in the sweep section
    steps = [step for step in provenance["steps"] if step.get("member", 0) == 0]
    if "sweep" in provenance:
        parts.insert(-1, _sweep_html(provenance["sweep"]))
    for step in steps:
        parts.append(
            f"<tr><td>{_esc(step['id'])}</td><td>{_esc(step['method'])}</td><td>{_esc(step['version'])}</td>"
            f"<td class='{step['status']}'>{step['status']}</td><td>{step.get('time_s') or 0:.2f}</td>"
            f"<td><code>{_esc(json.dumps(step['params'], sort_keys=True))}</code></td></tr>"
        )
    parts.append("</table>")
    for step in steps:
        parts.append(f"<h2 id='{_esc(step['id'])}'>{_esc(step['id'])} <small class='meta'>{_esc(step['method'])}</small></h2>")
        inputs = {n: load(i["hash"]) for n, i in step["inputs"].items() if not i["hash"].startswith("file:")}
        sources = ", ".join(f"{_esc(n)} ← {_esc(i['from'])}" for n, i in step["inputs"].items()) or "none"
        parts.append(f"<p class='meta'>inputs: {sources}</p>")
        for name, out in step["outputs"].items():
            artefact = load(out["hash"])
            parts.append(f"<h3>{_esc(name)} <small class='meta'>{_esc(type(artefact).__name__)} "
                         f"{out['hash'][:12]}</small></h3>")
            if isinstance(artefact, Table):
                parts.append(_table_html(artefact))
            title = f"{step['id']} · {name}"
            pngs, errors = _figures(artefact, out["hash"], title, inputs,
                                    [i["hash"] for i in step["inputs"].values()], registry, figure_root)
            for png in pngs:
                data = base64.b64encode(png.read_bytes()).decode()
                caption = f"{png.parent.name}/{png.name}"
                parts.append(f"<figure><img alt='{_esc(png.stem)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{_esc(caption)}</figcaption></figure>")
            parts.extend(f"<p class='error'>{_esc(e)}</p>" for e in errors)
    parts.append(f"<h2>Spec</h2><pre>{_esc(spec['text'])}</pre>")
    parts.append(f"<h2>Host</h2><pre>{_esc(json.dumps(provenance['host'], indent=1))}</pre>")
    parts.append("<p id='figure-status' class='meta'>figures: loading</p>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cellscape · {_esc(spec['name'])}"
            f"</title><style>{_STYLE}</style><script>{_STATUS_SCRIPT}</script></head><body>{''.join(parts)}</body></html>")
    index = report_dir / "index.html"
    atomic_write(index, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return index
