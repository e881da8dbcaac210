"""What a benchmark section returns, and how the suite renders it.

Every section module exposes ``run(quick: bool) -> dict`` returning a *section*::

    {"title": "Per-call latency ...",
     "rows":    [row(...), ...],      # one measured case each
     "targets": [target(...), ...],   # the issue's targets, judged PASS/MISS here
     "notes":   ["...", ...]}         # what the reader must know to trust the numbers

Build the pieces with :func:`row`, :func:`target` and :func:`section` so that the
terminal table, the markdown table and the JSON all read the same fields.  A row's
``ratio`` is a paired ratio (see ``_method.paired``) with its spread; a target's
``reached`` is a median with its spread and ``status`` is ``PASS`` when the median
meets the minimum; the tables add whether the aim was met (``status_label``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ._method import Stats, machine_facts

__all__ = [
    "judge", "render_markdown", "render_text", "row", "section", "status_label", "target",
    "targets_markdown", "write_results",
]


def row(
    case: str,
    stats: Stats,
    unit: str,
    *,
    mode: str = "",
    ratio: Stats | None = None,
    ratio_to: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One measured case: its median and IQR in ``unit``, optionally its ratio to another
    case (``ratio_to`` names it)."""
    out: dict[str, Any] = {"case": case, "mode": mode, "unit": unit, **stats.as_dict()}
    out["ratio"] = None if ratio is None else {"to": ratio_to or "", **ratio.as_dict()}
    out["note"] = note
    return out


def target(
    name: str, reached: Stats, op: str, minimum: float | None, aim: float | None = None
) -> dict[str, Any]:
    """A target: ``reached.median op minimum`` (``op`` is ``"<="`` or ``">="``).

    ``minimum=None`` makes an aim-only target: reported as ``aim met`` or ``aim
    missed``, never as a MISS of a required minimum."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', got {op!r}")
    out: dict[str, Any] = {
        "name": name, "op": op, "target": minimum, "aim": aim, **reached.as_dict(),
    }
    return judge(out)


def judge(t: dict[str, Any]) -> dict[str, Any]:
    """Fill ``status`` (PASS/MISS) and ``aim_met`` of a target dict from its numbers."""
    value, limit, aim, op = t.get("median"), t.get("target"), t.get("aim"), t.get("op")

    def meets(bound: float | None) -> bool | None:
        if not isinstance(value, (int, float)) or not isinstance(bound, (int, float)):
            return None
        if isinstance(value, float) and math.isnan(value):
            return False
        return value <= bound if op == "<=" else value >= bound if op == ">=" else None

    t["aim_met"] = meets(aim)
    if limit is None:
        t["status"] = "?" if t["aim_met"] is None else "aim met" if t["aim_met"] else "aim missed"
        return t
    ok = meets(limit)
    t["status"] = "PASS" if ok else "MISS" if ok is False else "?"
    return t


def section(
    title: str,
    rows: Iterable[dict[str, Any]],
    targets: Iterable[dict[str, Any]] = (),
    notes: Iterable[str] = (),
) -> dict[str, Any]:
    return {"title": title, "rows": list(rows), "targets": list(targets), "notes": list(notes)}


# --- rendering --------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A number with about three significant digits, without exponents for common sizes."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a >= 0.01 or a == 0:
        return f"{value:.3f}"
    return f"{value:.3g}"


def _spread(d: Mapping[str, Any]) -> str:
    """``q1..q3``; for one sample, no range at all: a single measurement has no spread
    to show, and ``258..258`` would pretend it had one."""
    if d.get("q1") is None or d.get("q3") is None:
        return ""
    if d.get("n") == 1:
        return SINGLE
    return f"{fmt(d['q1'])}..{fmt(d['q3'])}"


def _row_cells(r: Mapping[str, Any]) -> list[str]:
    ratio = r.get("ratio") or {}
    ratio_txt = ""
    if ratio:
        ratio_txt = f"{fmt(ratio.get('median'))}x {ratio.get('to', '')}".rstrip()
    return [
        str(r.get("case", "")),
        str(r.get("mode", "")),
        f"{fmt(r.get('median'))} {r.get('unit', '')}".rstrip(),
        _spread(r),
        ratio_txt,
        _spread(ratio) if ratio else "",
        str(r.get("note", "")),
    ]


SINGLE = "one sample"
"""The IQR cell of a statistic taken from a single measurement."""

_ROW_HEAD = ["case", "mode", "median", "IQR", "ratio", "ratio IQR", "note"]
_TARGET_HEAD = ["target", "minimum", "aim", "reached", "IQR", "status"]


def status_label(t: Mapping[str, Any]) -> str:
    """A target's status as the tables show it: a minimum that holds says whether its
    aim was met too, so a missed aim is never hidden behind a plain ``PASS``
    (``PASS (aim <= 2.00 missed)``).  The JSON keeps ``status`` and ``aim_met`` apart."""
    status = str(t.get("status", "?"))
    aim, aim_met = t.get("aim"), t.get("aim_met")
    if status != "PASS" or aim is None or aim_met is None:
        return status
    if aim_met:
        return "PASS (aim met)"
    return f"PASS (aim {t.get('op', '')} {fmt(aim)} missed)"


def _target_cells(t: Mapping[str, Any]) -> list[str]:
    op = t.get("op", "")
    aim = t.get("aim")
    return [
        str(t.get("name", "")),
        "" if t.get("target") is None else f"{op} {fmt(t.get('target'))}",
        "" if aim is None else f"{op} {fmt(aim)}",
        fmt(t.get("median")),
        _spread(t),
        status_label(t),
    ]


def _text_table(head: list[str], body: list[list[str]]) -> list[str]:
    keep = [i for i in range(len(head)) if any(cells[i] for cells in body)]
    head = [head[i] for i in keep]
    body = [[cells[i] for i in keep] for cells in body]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return [line(head), line(["-" * w for w in widths]), *(line(c) for c in body)]


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    keep = [i for i in range(len(head)) if any(cells[i] for cells in body)]
    out = ["| " + " | ".join(head[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    out += ["| " + " | ".join(cells[i].replace("|", "\\|") for i in keep) + " |" for cells in body]
    return out


def _facts_lines(facts: Mapping[str, Any]) -> list[str]:
    pkgs = facts.get("packages") or {}
    installed = ", ".join(f"{k} {v}" for k, v in pkgs.items() if v)
    return [
        f"CPU: {facts.get('cpu_model')} ({facts.get('cpus')} CPUs, usable "
        f"{facts.get('cpus_usable')}), load average at start {facts.get('load_average')}",
        f"{facts.get('os')}, {facts.get('python')}, commit {facts.get('commit')}, "
        f"{facts.get('date')}",
        f"packages: {installed}",
    ]


def render_text(results: Mapping[str, Any]) -> str:
    """The whole suite as a plain-text report for the terminal."""
    out = [f"fnrun_nb benchmarks ({results.get('mode')} run, {fmt(results.get('seconds'))} s)"]
    out += _facts_lines(results.get("machine", {}))
    for name, sec in results.get("sections", {}).items():
        out += ["", f"== {name}: {sec.get('title', '')}"]
        if sec.get("status") != "ok":
            out.append(f"   {str(sec.get('status', '')).upper()}: {sec.get('error', '')}")
            continue
        if sec.get("rows"):
            out += ["   " + x for x in _text_table(_ROW_HEAD, [_row_cells(r) for r in sec["rows"]])]
        if sec.get("targets"):
            out.append("")
            out += [
                "   " + x
                for x in _text_table(_TARGET_HEAD, [_target_cells(t) for t in sec["targets"]])
            ]
        out += [f"   note: {n}" for n in sec.get("notes", [])]
    out += ["", "targets:"] + [f"  {line}" for line in _target_summary(results)]
    return "\n".join(out)


def _target_summary(results: Mapping[str, Any]) -> list[str]:
    lines: list[tuple[str, str]] = []
    for name, sec in results.get("sections", {}).items():
        if sec.get("status") != "ok":
            lines.append((f"{name}: {sec.get('status')}", ""))
            continue
        for t in sec.get("targets", []):
            bounds = []
            if t.get("target") is not None:
                bounds.append(f"minimum {t.get('op')} {fmt(t.get('target'))}")
            if t.get("aim") is not None:
                bounds.append(f"aim {t.get('op')} {fmt(t.get('aim'))}")
            spread = _spread(t)
            spread = spread if spread == SINGLE else f"IQR {spread}"
            lines.append((
                status_label(t),
                f"{name}: {t.get('name')} {fmt(t.get('median'))} ({spread}; {', '.join(bounds)})",
            ))
    width = max((len(status) for status, _ in lines if _), default=0)
    return [f"{status.ljust(width)}  {text}".rstrip() for status, text in lines]


def targets_markdown(results: Mapping[str, Any]) -> list[str]:
    """One table of every section's targets (the README shows it), with a line for each
    section that did not run."""
    body = []
    for name, sec in results.get("sections", {}).items():
        if sec.get("status") != "ok":
            body.append([name, str(sec.get("error", "")), "", "", "", "", str(sec.get("status")).upper()])
            continue
        body += [[name, *_target_cells(t)] for t in sec.get("targets", [])]
    return _md_table(["section", *_TARGET_HEAD], body)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The whole suite as markdown (the README's performance section shows this)."""
    out = [f"## fnrun_nb benchmarks ({results.get('mode')} run)", ""]
    out += [f"- {line}" for line in _facts_lines(results.get("machine", {}))]
    out.append(f"- wall time of the suite: {fmt(results.get('seconds'))} s")
    out += ["", "### Targets", ""] + targets_markdown(results)
    for name, sec in results.get("sections", {}).items():
        out += ["", f"### {name}: {sec.get('title', '')}", ""]
        if sec.get("status") != "ok":
            out.append(f"**{str(sec.get('status', '')).upper()}**: {sec.get('error', '')}")
            continue
        if sec.get("rows"):
            out += _md_table(_ROW_HEAD, [_row_cells(r) for r in sec["rows"]])
        if sec.get("targets"):
            out.append("")
            out += _md_table(_TARGET_HEAD, [_target_cells(t) for t in sec["targets"]])
        if sec.get("notes"):
            out.append("")
            out += [f"- {n}" for n in sec["notes"]]
    return "\n".join(out) + "\n"


def write_results(results: Mapping[str, Any], directory: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``directory`` (created if needed),
    each through a temporary file so a reader never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / f"{stem}.json", directory / f"{stem}.md")
    texts = (json.dumps(results, indent=1, default=str) + "\n", render_markdown(results))
    for path, text in zip(paths, texts):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def print_standalone(name: str, make_section: Callable[[], dict[str, Any]], *, quick: bool) -> int:
    """Run one section outside the suite runner (``python -m benchmarks.NAME``) and
    print its table; the suite's ``--only NAME`` does the same and writes results."""
    t0 = time.perf_counter()
    sec = make_section()
    sec["status"] = "ok"
    results = {
        "mode": "quick" if quick else "full",
        "machine": machine_facts(),
        "seconds": time.perf_counter() - t0,
        "sections": {name: sec},
    }
    print(render_text(results))
    return 0


def section_main(
    name: str, doc: str | None, run: Callable[..., dict[str, Any]], argv: list[str] | None
) -> int:
    """``main`` of a section whose ``run(quick, rounds=N)`` takes only those options:
    ``python -m benchmarks.NAME [--quick] [--rounds N]`` prints its table."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default: the section's)")
    args = parser.parse_args(argv)
    return print_standalone(name, lambda: run(args.quick, rounds=args.rounds), quick=args.quick)
