"""The ``cellscape`` command line: a thin layer over the Python API.

    cellscape run SPEC [--run-dir DIR] [--force STEP ...] [--quiet] [--no-report]
    cellscape validate SPEC          every problem at once, with file:line [key]
    cellscape plan SPEC              which steps are cached, which would run, and why
    cellscape graph SPEC             the step graph as Mermaid text
    cellscape plugins [show NAME]    registered methods, their parameters, broken plugins
    cellscape report RUN_DIR         (re)build the HTML report of a run
    cellscape score LABELS REFERENCE segmentation metrics (analyze.segmentation_metrics) as a table

Exit codes: 0 success, 1 a step, file or plugin failed, 2 an invalid spec or
command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._errors import CellscapeError, SpecError

EXIT_FAILED = 1
EXIT_INVALID = 2


def _registry(args: argparse.Namespace):
    from ._registry import get_registry

    return get_registry(disabled=args.disable)


def _cmd_validate(args: argparse.Namespace) -> int:
    from ._spec import load_spec

    spec = load_spec(args.spec, _registry(args))
    print(f"{args.spec}: valid, {len(spec.steps)} steps: {' → '.join(s.id for s in spec.steps)}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from ._runner import Runner
    from ._spec import load_spec

    spec = load_spec(args.spec, _registry(args))
    runner = Runner(spec, args.run_dir)
    if spec.sweep is not None:
        member_plans = runner.plan_members(force=args.force or [])
        for member, plans in member_plans:
            n_cached = sum(p.status == "cached" for p in plans)
            state = "✓ cached  " if n_cached == len(plans) else "▶ will run"
            print(f"{state}  member {member.index:03d}  {member.label():<40} {n_cached} of {len(plans)} steps cached")
        complete = sum(all(p.status == "cached" for p in plans) for _, plans in member_plans)
        print(f"{complete} of {len(member_plans)} sweep members fully cached; run directory {runner.run_dir}")
        return 0
    plans = runner.plan(force=args.force or [])
    width = max(len(p.step) for p in plans)
    for plan in plans:
        mark = "✓ cached  " if plan.status == "cached" else "▶ will run"
        print(f"{mark}  {plan.step:<{width}}  {plan.method:<28} {plan.reason}")
    n_cached = sum(p.status == "cached" for p in plans)
    print(f"{n_cached} of {len(plans)} steps cached; run directory {runner.run_dir}")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from ._spec import load_spec

    print(load_spec(args.spec, _registry(args)).mermaid())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ._executor import ExecutorConfig
    from ._mpi import world_rank, world_size
    from ._runner import Runner
    from ._spec import load_spec

    spec = load_spec(args.spec, _registry(args))
    config = ExecutorConfig.from_mapping(spec.executor, workers=args.workers, scheduler=args.scheduler)
    runner = Runner(spec, args.run_dir, executor=config)
    ranks = world_size()
    quiet = args.quiet or world_rank() != 0  # under mpiexec, rank 0 speaks for all
    if not quiet:
        members = f", {len(spec.sweep.members)} sweep members" if spec.sweep is not None else ""
        where = f"Dask ({config.scheduler or f'{config.workers} local workers'})" if config.type == "dask" else (
            f"{config.workers} threads" if config.workers > 1 else "this process")
        where = f"{ranks} MPI ranks" if ranks > 1 else where
        print(f"cellscape: running {spec.path.name} ({len(spec.steps)} steps{members}) in {runner.run_dir} on {where}",
              file=sys.stderr)
    start = time.perf_counter()
    result = runner.run(force=args.force or [], quiet=quiet, report=not args.no_report)
    if not quiet:
        print(f"done in {time.perf_counter() - start:.1f} s: {len(result.computed)} computed, "
              f"{len(result.cached)} cached")
        for path in result.saved:
            print(f"  output      {path}")
        print(f"  provenance  {result.run_dir / 'provenance.json'}")
        if result.report is not None:
            print(f"  report      {result.report}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ._report import build_report

    print(build_report(Path(args.run_dir), registry=_registry(args)))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    import cellscape as cs

    _registry(args)  # applies --disable before the method is looked up
    labels, reference = cs.read(args.labels, "labels"), cs.read(args.reference, "labels")
    metrics = cs.method("analyze.segmentation_metrics", instances=args.instances, tolerance_voxels=args.tolerance_voxels)
    table = metrics(labels, reference)
    header = [f"{name} [{table.units[name]}]" if table.units.get(name) else name for name in table.columns]
    cells = [[("-" if v != v else f"{v:.4g}") if isinstance(v, float) else str(v) for v in row.values()]
             for row in table.rows()]  # "-" for NaN: a score that does not apply to that row
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))))
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from ._api import methods

    registry = _registry(args)
    if args.action == "show":
        if not args.name:
            raise CellscapeError("usage: cellscape plugins show METHOD")
        entry = registry.get(args.name)
        info = next(m for m in methods() if m.name == entry.name)
        if args.json:
            print(json.dumps({"name": info.name, "stage": info.stage, "summary": info.summary,
                              "distribution": info.distribution, "version": info.version,
                              "inputs": info.inputs, "outputs": info.outputs, "chunk_port": entry.cls.chunk_port,
                              "params": [p.to_json() for p in info.params]}, indent=1, default=str))
            return 0
        print(f"{info.name}  ({info.distribution} {info.version}, plugin '{info.plugin}')")
        print(f"  {info.summary}")
        print(f"  inputs:  {', '.join(f'{k}: {v}' for k, v in info.inputs.items()) or 'none'}")
        print(f"  outputs: {', '.join(f'{k}: {v}' for k, v in info.outputs.items())}")
        chunked = entry.cls.chunk_port
        safe = f"yes, input '{chunked}' (chunks: in the spec)" if chunked else "no (needs the whole volume)"
        print(f"  chunk-safe: {safe}")
        print("  parameters:")
        for p in info.params:
            default = "required" if p.required else f"default {p.default!r}"
            unit = f" [{p.unit}]" if p.unit else ""
            extra = [x for x in (p.bounds_text(), f"one of {list(p.choices)}" if p.choices else "") if x]
            print(f"    {p.name}: {p.type}{unit} = {default}{' (' + '; '.join(extra) + ')' if extra else ''}")
            print(f"        {p.help}")
        return 0
    infos = methods()
    if args.json:
        print(json.dumps({
            "methods": [{"name": m.name, "stage": m.stage, "distribution": m.distribution, "version": m.version,
                         "summary": m.summary} for m in infos],
            "failures": [{"plugin": f.plugin, "distribution": f.distribution, "error": f.error} for f in registry.failures],
            "conflicts": {n: [e.distribution for e in es] for n, es in registry.conflicts.items()},
            "disabled": registry.disabled,
        }, indent=1))
        return EXIT_FAILED if registry.failures or registry.conflicts else 0
    width = max((len(m.name) for m in infos), default=10)
    print(f"{'method':<{width}}  {'stage':<11}  {'distribution':<22}  summary")
    for m in infos:
        print(f"{m.name:<{width}}  {m.stage:<11}  {m.distribution + ' ' + m.version:<22}  {m.summary}")
    for failure in registry.failures:
        print(f"BROKEN   {failure}", file=sys.stderr)
    for name in registry.conflicts:
        print(f"CONFLICT {registry.unknown_message(name)}", file=sys.stderr)
    for name in registry.disabled:
        print(f"disabled plugin '{name}'", file=sys.stderr)
    return EXIT_FAILED if registry.failures or registry.conflicts else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="cellscape", description="From 3D EM data to simulations in real cell shapes.")
    parser.add_argument("--version", action="version", version=f"cellscape {__version__}")
    parser.add_argument("--disable", action="append", metavar="PLUGIN",
                        help="do not load this plugin (repeatable; also CELLSCAPE_DISABLE_PLUGINS=a,b)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline spec")
    run.add_argument("spec")
    run.add_argument("--run-dir", help="where the store, outputs and report go (default ./cellscape-runs/NAME)")
    run.add_argument("--force", action="append", metavar="STEP", help="recompute this step even if cached ('all' for every step)")
    run.add_argument("--quiet", action="store_true", help="no progress output (for scripts)")
    run.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    run.add_argument("--workers", type=int, metavar="N",
                     help="run independent steps and sweep members on N local threads (with --scheduler or "
                          "executor type dask: N worker processes of a Dask LocalCluster)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on the Dask scheduler at ADDRESS (tcp://host:8786); the run directory must be on a "
                          "file system every worker sees")
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check a spec and report every problem at once")
    validate.add_argument("spec")
    validate.set_defaults(func=_cmd_validate)

    plan = sub.add_parser("plan", help="show which steps are cached and which would run")
    plan.add_argument("spec")
    plan.add_argument("--run-dir")
    plan.add_argument("--force", action="append", metavar="STEP")
    plan.set_defaults(func=_cmd_plan)

    graph = sub.add_parser("graph", help="print the step graph as Mermaid text")
    graph.add_argument("spec")
    graph.set_defaults(func=_cmd_graph)

    plugins = sub.add_parser("plugins", help="list registered methods (or `plugins show METHOD`)")
    plugins.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    plugins.add_argument("name", nargs="?")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=_cmd_plugins)

    report = sub.add_parser("report", help="(re)build the HTML report of a run directory")
    report.add_argument("run_dir")
    report.set_defaults(func=_cmd_report)

    score = sub.add_parser("score", help="score a segmentation against a reference (Dice, IoU, boundary F1, Rand, VI)")
    score.add_argument("labels", help="the segmentation (any label file cellscape reads)")
    score.add_argument("reference", help="the ground truth, on the same voxel grid")
    score.add_argument("--instances", action="store_true", help="instance labels: add adapted Rand error and VI")
    score.add_argument("--tolerance-voxels", type=float, default=2.0, help="boundary F1 distance tolerance (default 2)")
    score.set_defaults(func=_cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CellscapeError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; completed steps are cached, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
