"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME] [--out DIR]``.

``python -m benchmarks --render results/latest.json`` measures nothing: it prints the
table of an earlier run and rewrites the markdown beside its JSON (after a change of
how results are shown).

Prints one table (every section's cases with medians, IQRs and ratios, then every
target with PASS/MISS) and writes the same results as JSON and markdown:
``benchmarks/results/latest.{json,md}`` for a full run (committed),
``quick.*`` for ``--quick`` and ``partial.*`` for ``--only`` (not committed).

Exit status: 0 when every section that exists ran (targets missed or not), 1 when a
section raised, 2 for usage errors; with ``--strict`` also 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ._method import machine_facts, set_affinity_tree
from ._report import judge, render_markdown, render_text, write_results

SECTIONS = (
    "latency",
    "throughput",
    "payload",
    "recording",
    "coldstart",
    "monitor_overhead",
    "dask_scaling",
    "hotpath",
    "resources",
    "fidelity",
    "profiling",
    "kinds",
)
RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_SECONDS = 600
"""``make bench`` must finish within 10 minutes; a full run says when it did not."""


def _normalize(result: Any) -> dict[str, Any]:
    """Check a section's returned dict and re-judge its targets here, so that every
    PASS/MISS in the table is decided by the same rule."""
    if not isinstance(result, dict):
        raise TypeError(f"run() returned {type(result).__name__}, expected a dict")
    rows = result.get("rows", [])
    targets = result.get("targets", [])
    if not isinstance(rows, list) or not isinstance(targets, list):
        raise TypeError("a section's 'rows' and 'targets' must be lists")
    out = dict(result)
    out["rows"] = rows
    out["targets"] = [judge(dict(t)) for t in targets]
    out.setdefault("notes", [])
    out.setdefault("title", "")
    out["status"] = "ok"
    return out


def run_section(name: str, quick: bool) -> dict[str, Any]:
    """Import ``benchmarks.<name>`` and run it; never raises for a failing section."""
    module_name = f"{__package__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return {"status": "missing", "error": f"benchmarks/{name}.py is not written yet"}
        traceback.print_exc()
        return {"status": "error", "error": f"cannot import: {type(exc).__name__}: {exc}"}
    except Exception as exc:  # a syntax error in one section must not stop the others
        traceback.print_exc()
        return {"status": "error", "error": f"cannot import: {type(exc).__name__}: {exc}"}
    run = getattr(module, "run", None)
    if not callable(run):
        return {"status": "missing", "error": f"benchmarks/{name}.py has no run(quick)"}
    t0 = time.perf_counter()
    try:
        out = _normalize(run(quick))
    except Exception as exc:
        traceback.print_exc()
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render_saved(path: Path) -> int:
    """Print the results in ``path`` (a suite's JSON) and rewrite the ``.md`` beside it
    from them, targets re-judged by today's rule; the JSON itself is left as measured."""
    import json

    results = json.loads(path.read_text())
    for sec in results.get("sections", {}).values():
        sec["targets"] = [judge(dict(t)) for t in sec.get("targets", [])]
    md = path.with_suffix(".md")
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(render_markdown(results))
    tmp.replace(md)
    print(render_text(results))
    print(f"\nwrote {md} from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure fnrun_nb against the minimal host and its peers, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="a few rounds per case (smoke test)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--render", type=Path, metavar="JSON",
        help="measure nothing: print an earlier run's table and rewrite its markdown",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        return render_saved(args.render)

    names = [n for n in SECTIONS if not args.only or n in args.only]
    stem = "partial" if args.only else "quick" if args.quick else "latest"
    mask = os.sched_getaffinity(0)
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine_facts(),
        "sections": {},
    }
    t0 = time.perf_counter()
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        sec = run_section(name, args.quick)
        set_affinity_tree(mask)  # a section that failed while pinned must not pin the next
        results["sections"][name] = sec
        print(f"[bench] {name}: {sec['status']} ({sec.get('seconds', 0)} s)", file=sys.stderr)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(render_text(results))
    if not args.quick and not args.only and results["seconds"] > BUDGET_SECONDS:
        slowest = max(results["sections"].items(), key=lambda kv: kv[1].get("seconds", 0))
        print(
            f"\nWARNING: the suite took {results['seconds']:.0f} s, over its"
            f" {BUDGET_SECONDS} s budget (slowest section: {slowest[0]},"
            f" {slowest[1].get('seconds', 0)} s)"
        )
    json_path, md_path = write_results(results, args.out, stem)
    print(f"\nwrote {json_path} and {md_path}")

    sections = results["sections"].values()
    if any(s["status"] == "error" for s in sections):
        return 1
    if args.strict and any(
        t["status"] != "PASS" for s in sections if s["status"] == "ok" for t in s["targets"]
    ):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
