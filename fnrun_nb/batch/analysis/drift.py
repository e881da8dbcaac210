"""Drift and leaks (``batch.drift()``): does a metric creep up the longer a process lives?

Per worker slot and process generation, the ok calls' ``metric`` is fitted against
``call_on_worker`` with the Theil-Sen estimator (the median of the slopes between
every pair of points) and its 95% confidence interval, by
:func:`scipy.stats.theilslopes` (scipy, the optional ``stats`` extra, imported on first
use).  Theil-Sen ignores outliers and a few slow calls, and largely ignores a one-off
step (a page mapped once, a cache filled once): most pairs of points lie on the same
side of a step.

Theil-Sen is quadratic in the number of points, so a process with more than
:data:`MAX_POINTS` ok calls is fitted on :data:`BINS` equal-count bins of its calls
(ordered by ``call_on_worker``), each bin represented by its median call number and its
median metric.  The slope stays in the metric's unit per call; the interval is then
that of the bin medians, which are less noisy than single calls.

The verdict of a process (one row of :attr:`DriftReport.df`), with the thresholds this
module states as constants:

- ``"too few calls"``: fewer than :data:`MIN_CALLS` ok calls with a value (30);
- a *memory* metric (``rss_mib``, ``peak_rss_mib``, any ``*_mib`` column) is a
  ``"leak"`` when the whole confidence interval is above zero, the projected growth
  over the fitted calls (slope times the calls between the first and the last) is at
  least :data:`LEAK_MIN_MIB` (1 MiB), and the growth is sustained: the Theil-Sen slope
  of each half of the calls is positive on its own.  A single step (one 4 KiB page, or
  a cache of any size filled once) is flat on at least one side of it, so it is not a
  leak.  ``"decline"`` is the mirror image (the memory given back, by at least as much);
- a *time* metric (``service_ms``, ``cpu_ms``, ``handler_ms`` and any other float
  column) shows ``"growth"`` when the whole interval is above zero, the slope is at
  least :data:`GROWTH_MIN_PER_1000` (1%) of the process's median per 1,000 calls, the
  projected change over the fitted calls is at least :data:`GROWTH_MIN_CHANGE` (5%) of
  the median (on a short process a tiny slope can be "significant" and still mean
  nothing) and, for a column in milliseconds, at least :data:`GROWTH_MIN_MS` (0.1 ms:
  below that a change is timer and scheduler noise, as for ``warmup``'s floor), and
  each half of the calls grows on its own (a burst of load on the machine, or a
  one-off step, is not a trend); ``"decline"`` is the mirror image;
- otherwise ``"no drift"``.

The overall verdict is the most serious among the processes (leak or growth, then
decline, then no drift; ``"too few calls"`` only when no process has enough); its
slope and interval come from one fit on the flagged processes' points together, each
process's points shifted by its own intercept, so different baselines do not count as
a trend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .frame import ok_rows, slot_keys

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "BINS",
    "GROWTH_MIN_CHANGE",
    "GROWTH_MIN_MS",
    "GROWTH_MIN_PER_1000",
    "LEAK_MIN_MIB",
    "MAX_POINTS",
    "MIN_CALLS",
    "SUMMARY_MIN_CALLS",
    "VERDICTS",
    "DriftReport",
    "drift",
    "drift_note",
]

MIN_CALLS = 30
"""Fewer ok calls than this on a process: ``"too few calls"`` (no trend is claimed)."""
MAX_POINTS = 500
"""A process with more ok calls than this is fitted on :data:`BINS` bins of them."""
BINS = 200
"""Equal-count bins a long process is fitted on (median call number, median metric)."""
LEAK_MIN_MIB = 1.0
"""Smallest projected growth of a memory metric over the fitted calls that is a leak."""
GROWTH_MIN_PER_1000 = 0.01
"""Smallest slope of a time metric that is growth: 1% of its median per 1,000 calls."""
GROWTH_MIN_CHANGE = 0.05
"""Smallest projected change of a time metric over the fitted calls, as a share of its
median, that is growth (or decline)."""
GROWTH_MIN_MS = 0.1
"""Smallest projected change of a time metric in milliseconds (``*_ms``) over the fitted
calls that is growth (or decline)."""
SUMMARY_MIN_CALLS = 100
"""``batch.summary()`` notes a leak or slowdown only from processes with at least this
many ok calls (a headline needs more evidence than a verdict of ``batch.drift()``)."""
CONFIDENCE = 0.95
"""Confidence level of the slopes' intervals."""
VERDICTS: tuple[str, ...] = ("leak", "growth", "decline", "no drift", "too few calls")
"""Every verdict, most serious first."""

_MEMORY = frozenset({"rss_mib", "peak_rss_mib"})
# The summary's screen: at most this many processes, each on at most this many bins.
_SCREEN = 64


def _stats() -> Any:
    try:
        from scipy import stats
    except ImportError as exc:
        raise ImportError("drift detection needs scipy: pip install 'fnrun-nb[stats]'") from exc
    return stats


def _is_memory(metric: str) -> bool:
    return metric in _MEMORY or metric.endswith("_mib")


def _unit(metric: str) -> str:
    if _is_memory(metric):
        return "MiB"
    if metric.endswith("_ms"):
        return "ms"
    return ""


def _points(
    x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The points a process is fitted on: its calls, or ``bins`` equal-count bins of
    them when it has more than ``limit``."""
    if x.size <= limit:
        return x, y, False
    # Bin k holds the calls at sorted positions i with i * bins // n == k (sizes differ
    # by at most one, none empty since n > bins); each bin's medians, vectorised.
    n = x.size
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    label = np.arange(n) * bins // n
    counts = np.bincount(label, minlength=bins)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    lo, hi = starts + (counts - 1) // 2, starts + counts // 2
    ys = ys[np.lexsort((ys, label))]  # sorted within each bin
    return (xs[lo] + xs[hi]) / 2, (ys[lo] + ys[hi]) / 2, True


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """``(slope, intercept, ci_low, ci_high)``; NaN when x does not vary."""
    if x.size < 2 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    slope, intercept, lo, hi = _stats().theilslopes(y, x, alpha=CONFIDENCE)[:4]
    return float(slope), float(intercept), float(lo), float(hi)


def _half_slopes(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil-Sen slopes of the first and the second half of the points (by call)."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    mid = xs.size // 2
    return _theil_sen(xs[:mid], ys[:mid])[0], _theil_sen(xs[mid:], ys[mid:])[0]


def _judge(
    metric: str, slope: float, lo: float, hi: float, span: float, median: float,
    halves: tuple[float, float],
) -> str:
    if not all(math.isfinite(v) for v in (slope, lo, hi)):
        return "no drift"
    change = slope * span
    up = all(h > 0 for h in halves)
    down = all(h < 0 for h in halves)
    if _is_memory(metric):
        if lo > 0 and change >= LEAK_MIN_MIB and up:
            return "leak"
        if hi < 0 and -change >= LEAK_MIN_MIB and down:
            return "decline"
        return "no drift"
    floor = GROWTH_MIN_MS if metric.endswith("_ms") else 0.0
    if median == 0:
        rel = share = math.copysign(math.inf, slope)
    else:
        rel = slope * 1000 / abs(median)
        share = change / abs(median)
    if (
        lo > 0 and rel >= GROWTH_MIN_PER_1000 and share >= GROWTH_MIN_CHANGE
        and change >= floor and up
    ):
        return "growth"
    if (
        hi < 0 and -rel >= GROWTH_MIN_PER_1000 and -share >= GROWTH_MIN_CHANGE
        and -change >= floor and down
    ):
        return "decline"
    return "no drift"


def _num(v: float) -> str:
    """A slope or bound with three significant digits, without exponent noise."""
    if not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    a = abs(v)
    digits = min(9, max(0, 2 - int(math.floor(math.log10(a)))))
    text = f"{v:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _interval(lo: float, hi: float) -> str:
    return f"{_num(lo)} to {_num(hi)}" if lo < 0 or hi < 0 else f"{_num(lo)}-{_num(hi)}"


@dataclass(frozen=True, eq=False)
class DriftReport:
    """How ``metric`` moves with ``call_on_worker``, per process, and what it means.

    ``df`` has one row per worker slot and process generation (``dask_worker`` too on
    a Dask batch): ``calls`` (ok calls with a value), ``first_call`` / ``last_call``
    (the call numbers fitted), ``median``, ``slope`` (the metric's unit per call),
    ``intercept``, ``ci_low`` / ``ci_high`` (95%), ``change`` (slope times the calls
    between the first and the last), ``pct_per_1000`` (slope per 1,000 calls in percent
    of the median), ``binned`` (fitted on bins), ``verdict`` (one of :data:`VERDICTS`)
    and ``sentence``.  The report's own ``verdict`` and ``sentence`` are the overall
    ones, and its ``slope`` / ``ci`` come from the flagged processes fitted together
    (NaN when none is).  ``str()`` is the overall sentence, then one line per process.
    See :mod:`fnrun_nb.batch.analysis.drift` for the thresholds.
    """

    metric: str
    unit: str
    memory: bool
    df: pd.DataFrame
    verdict: str
    sentence: str
    slope: float
    ci: tuple[float, float]
    points: pd.DataFrame = field(repr=False)
    """The ok rows fitted: the slot keys, ``generation``, ``call_on_worker`` and the metric."""

    @property
    def flagged(self) -> pd.DataFrame:
        """The rows of ``df`` whose verdict is a drift (leak, growth or decline)."""
        return self.df[self.df["verdict"].isin(("leak", "growth", "decline"))]

    def __str__(self) -> str:
        lines = [self.sentence]
        for _, r in self.df.iterrows():
            lines.append(f"  {r['sentence']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<DriftReport {self.metric}: {self.sentence}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour = {"leak": "#c62828", "growth": "#ef6c00", "decline": "#1565c0"}.get(
            self.verdict, "#2e7d32" if self.verdict == "no drift" else "#666"
        )
        keys = [k for k in ("dask_worker", "worker", "generation") if k in self.df.columns]
        cols = [*keys, "calls", "slope", "ci_low", "ci_high", "verdict"]
        head = "".join(f"<th>{escape(c)}</th>" for c in cols)
        shown = self.df.head(20)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(_cell(r[c]))}</td>" for c in cols) + "</tr>"
            for _, r in shown.iterrows()
        )
        more = (
            f'<div style="color:#666">first 20 of {len(self.df)} processes</div>'
            if len(self.df) > 20 else ""
        )
        unit = f"{self.unit} per call" if self.unit else "per call"
        return (
            '<div class="fnrun-drift">'
            f'<div style="font-weight:bold;color:{colour}">{escape(self.sentence)}</div>'
            f'<div style="color:#666">{escape(self.metric)} against call_on_worker, '
            f"Theil-Sen slope ({escape(unit)}) with its {CONFIDENCE:.0%} CI, ok calls</div>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}</div>"
        )

    def plot(self, *, ax: Axes | None = None) -> Axes:
        """The metric against ``call_on_worker``, one line per worker (generation), with
        each process's fitted trend dashed in the same colour (matplotlib, the ``plot``
        extra).  Draws on ``ax`` when given; returns the Axes."""
        from ..plot import _axes

        ax = _axes(ax)
        pts = self.points
        keys = [k for k in ("dask_worker", "worker", "generation") if k in self.df.columns]
        groups = dict(iter(pts.groupby(keys, observed=True, sort=True))) if len(pts) else {}
        for _, r in self.df.iterrows():
            key = tuple(r[k] for k in keys)
            g = groups.get(key)
            if g is None:
                continue
            g = g.sort_values("call_on_worker", kind="stable")
            x = g["call_on_worker"].to_numpy(dtype=float)
            (line,) = ax.plot(
                x, g[self.metric].to_numpy(dtype=float), linewidth=0.8, alpha=0.7,
                label=_label(r, keys),
            )
            if math.isfinite(r["slope"]):
                xs = np.array([r["first_call"], r["last_call"]], dtype=float)
                ax.plot(
                    xs, r["intercept"] + r["slope"] * xs, linestyle="--", linewidth=1.5,
                    color=line.get_color(),
                )
        ax.set_xlabel("call on worker (calls served by the process)")
        ax.set_ylabel(f"{self.metric}" + (f" ({self.unit})" if self.unit else ""))
        ax.set_title(self.sentence, fontsize="medium")
        if len(self.df) <= 12 and len(pts):
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
        return ax


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return _num(v)
    return str(v)


def _label(row: pd.Series, keys: list[str]) -> str:
    worker = f"worker {row['worker']}"
    if "dask_worker" in keys:
        worker += f" on {row['dask_worker']}"
    return f"{worker} gen {row['generation']}"


def _where(slots: list[tuple[Any, ...]], total: int, dask: bool) -> str:
    """``"all 4 workers"``, ``"both workers"``, ``"worker 2"``, ``"workers 1 and 3"``
    (of ``total`` slots)."""
    def name(s: tuple[Any, ...]) -> str:
        return f"{s[1]} on {s[0]}" if dask else f"{s[0]}"

    if len(slots) == total and total > 1:
        return "both workers" if total == 2 else f"all {total} workers"
    if len(slots) == 1:
        return f"worker {name(slots[0])}"
    names = [name(s) for s in slots]
    return f"workers {', '.join(names[:-1])} and {names[-1]}"


def _rate_text(
    metric: str, unit: str, memory: bool, slope: float, lo: float, hi: float, median: float,
) -> tuple[str, str]:
    """The rate and its interval: ``("rss_mib grows 0.25 MiB per call", "95% CI
    0.24-0.26")`` or ``("service_ms grows 3.1% per 1,000 calls", "95% CI 2.5-3.7%,
    0.0031 ms per call")``."""
    word = "grows" if slope > 0 else "declines"
    per = f" {unit} per call" if unit else " per call"
    conf = f"{CONFIDENCE:.0%} CI"
    if memory or not (median and math.isfinite(median)):
        return f"{metric} {word} {_num(abs(slope))}{per}", f"{conf} {_interval(lo, hi)}"
    scale = 1000 * 100 / abs(median)
    return (
        f"{metric} {word} {_num(abs(slope) * scale)}% per 1,000 calls",
        f"{conf} {_interval(lo * scale, hi * scale)}%, {_num(slope)}{per}",
    )


_NOUN = {"leak": "a leak", "growth": "a slowdown", "decline": "a decline"}


def drift(df: pd.DataFrame, metric: str = "service_ms") -> DriftReport:
    """The :class:`DriftReport` of ``metric`` against ``call_on_worker`` (ok calls).

    ``metric`` is any float (or other numeric) column of the record: ``service_ms``
    (always there), ``rss_mib`` / ``peak_rss_mib`` / ``cpu_ms`` (with
    ``resources=True``), ``handler_ms`` (with ``handler_timing=True``).  Raises
    ``ValueError`` naming the float columns the record has when ``metric`` is not a
    numeric column, and ``ImportError`` naming the ``stats`` extra when scipy is missing.
    """
    floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c].dtype)]
    numeric = metric in df.columns and pd.api.types.is_numeric_dtype(df[metric].dtype) and (
        not pd.api.types.is_bool_dtype(df[metric].dtype)
    )
    if not numeric:
        hint = {
            "rss_mib": " (rss_mib needs resources=True)",
            "peak_rss_mib": " (peak_rss_mib needs resources=True)",
            "cpu_ms": " (cpu_ms needs resources=True)",
            "handler_ms": " (handler_ms needs handler_timing=True)",
            "transport_ms": " (transport_ms needs handler_timing=True)",
        }.get(metric, "")
        raise ValueError(
            f"no float column {metric!r} in the batch record{hint}; "
            f"its float columns: {', '.join(floats)}"
        )
    keys = slot_keys(df)
    by = [*keys, "generation"]
    rows = ok_rows(df).dropna(subset=[*by, "call_on_worker", metric])
    points = pd.DataFrame(
        {
            **{k: rows[k].to_numpy() for k in keys},
            "generation": rows["generation"].to_numpy(dtype="int64"),
            "call_on_worker": rows["call_on_worker"].to_numpy(dtype="int64"),
            metric: rows[metric].to_numpy(dtype=float),
        }
    )
    points["worker"] = points["worker"].astype("int64")
    memory = _is_memory(metric)
    unit = _unit(metric)
    records: list[dict[str, Any]] = []
    fitted: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, float]] = {}
    for key, g in points.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        x = g["call_on_worker"].to_numpy(dtype=float)
        y = g[metric].to_numpy(dtype=float)
        median = float(np.median(y))
        rec: dict[str, Any] = dict(zip(by, key))
        rec.update(
            calls=int(x.size), first_call=int(x.min()), last_call=int(x.max()), median=median,
            slope=math.nan, intercept=math.nan, ci_low=math.nan, ci_high=math.nan,
            change=math.nan, pct_per_1000=math.nan, binned=False,
        )
        if x.size < MIN_CALLS:
            rec["verdict"] = "too few calls"
        else:
            px, py, binned = _points(x, y)
            slope, intercept, lo, hi = _theil_sen(px, py)
            span = float(x.max() - x.min())
            halves = _half_slopes(px, py)
            rec.update(
                slope=slope, intercept=intercept, ci_low=lo, ci_high=hi, binned=binned,
                change=slope * span,
                pct_per_1000=slope * 1000 * 100 / abs(median) if median else math.nan,
            )
            rec["verdict"] = _judge(metric, slope, lo, hi, span, median, halves)
            fitted[key] = (x, y, intercept)
        rec["sentence"] = _row_sentence(rec, metric, unit, memory, keys)
        records.append(rec)
    cols = [
        *by, "calls", "first_call", "last_call", "median", "slope", "intercept", "ci_low",
        "ci_high", "change", "pct_per_1000", "binned", "verdict", "sentence",
    ]
    table = pd.DataFrame.from_records(records, columns=cols)
    table["worker"] = table["worker"].astype("int64")
    table["generation"] = table["generation"].astype("int64")
    for c in ("calls", "first_call", "last_call"):
        table[c] = table[c].astype("int64")
    table["binned"] = table["binned"].astype(bool)
    verdict, sentence, slope, ci = _overall(table, fitted, metric, unit, memory, keys)
    return DriftReport(
        metric=metric, unit=unit, memory=memory, df=table, verdict=verdict,
        sentence=sentence, slope=slope, ci=ci, points=points,
    )


def _row_sentence(
    rec: dict[str, Any], metric: str, unit: str, memory: bool, keys: list[str]
) -> str:
    who = f"worker {rec['worker']}"
    if "dask_worker" in keys:
        who += f" on {rec['dask_worker']}"
    who += f" (generation {rec['generation']}, {rec['calls']} calls)"
    verdict = rec["verdict"]
    if verdict == "too few calls":
        return f"{who}: too few calls (fewer than {MIN_CALLS})"
    if not math.isfinite(rec["slope"]):
        return f"{who}: no drift (no trend can be fitted)"
    rate, detail = _rate_text(
        metric, unit, memory, rec["slope"], rec["ci_low"], rec["ci_high"], rec["median"]
    )
    if verdict == "no drift":
        return f"{who}: no drift ({rate}, {detail})"
    return f"{who}: {rate} ({detail}): {_NOUN[verdict]}"


def _overall(
    table: pd.DataFrame,
    fitted: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, float]],
    metric: str, unit: str, memory: bool, keys: list[str],
) -> tuple[str, str, float, tuple[float, float]]:
    nan_ci = (math.nan, math.nan)
    by = [*keys, "generation"]
    slots_all = {tuple(r[k] for k in keys) for _, r in table.iterrows()}
    judged = table[table["verdict"] != "too few calls"]
    if table.empty:
        return "too few calls", f"too few calls: no ok call has a {metric} value", math.nan, nan_ci
    if judged.empty:
        most = int(table["calls"].max())
        return (
            "too few calls",
            f"too few calls to judge drift in {metric}: at most {most} ok calls on one "
            f"process (needs {MIN_CALLS})",
            math.nan, nan_ci,
        )
    for verdict in ("leak", "growth", "decline"):
        hit = judged[judged["verdict"] == verdict]
        if hit.empty:
            continue
        xs, ys = [], []
        for _, r in hit.iterrows():
            x, y, intercept = fitted[tuple(r[k] for k in by)]
            xs.append(x)
            ys.append(y - intercept)
        px, py, _ = _points(np.concatenate(xs), np.concatenate(ys))
        slope, _, lo, hi = _theil_sen(px, py)
        median = float(np.median(hit["median"]))
        slots = sorted({tuple(r[k] for k in keys) for _, r in hit.iterrows()})
        where = _where(slots, len(slots_all), "dask_worker" in keys)
        rate, detail = _rate_text(metric, unit, memory, slope, lo, hi, median)
        sentence = f"{rate} on {where} ({detail}): {_NOUN[verdict]}"
        return verdict, sentence, slope, (lo, hi)
    n = int(judged["calls"].sum())
    workers = len({tuple(r[k] for k in keys) for _, r in judged.iterrows()})
    s = "" if workers == 1 else "s"
    return (
        "no drift",
        f"no drift: {metric} is flat over {n:,} ok calls on {workers} worker{s}",
        math.nan, nan_ci,
    )


def _screen_slope(x: np.ndarray, y: np.ndarray) -> float:
    """The Theil-Sen point estimate in numpy alone (no interval): the median slope of
    every pair of points with different calls."""
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        return math.nan
    return float(np.median((y[j] - y[i])[keep] / dx[keep]))


def drift_note(df: pd.DataFrame) -> str | None:
    """One line for ``batch.summary()`` when the batch shows a leak (``rss_mib``, when
    present) or a slowdown (``service_ms``), else ``None``.

    Only processes with at least :data:`SUMMARY_MIN_CALLS` ok calls count, and the
    line is written only when at least half of them leak or slow down: one process in
    many crossing the line is more likely the machine than the handler
    (``batch.drift()`` shows every process, from :data:`MIN_CALLS` calls).

    Cheap, and never raises: ``None`` when no process has enough calls, when scipy is
    not installed, or when anything goes wrong.  A numpy screen (the Theil-Sen slope
    of at most 64 processes, each on at most 64 bins) runs first; scipy is imported and
    :func:`drift` run only when the screen's slopes pass the thresholds on at least
    half of those processes, so a batch without drift never pays for the intervals.
    """
    try:
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            return None
        by = [*slot_keys(df), "generation"]
        for metric in ("rss_mib", "service_ms"):
            if metric not in df.columns:
                continue
            rows = ok_rows(df).dropna(subset=[*by, "call_on_worker", metric])
            if rows.empty:
                continue
            groups = [
                idx for idx in rows.groupby(by, observed=True, sort=False).indices.values()
                if idx.size >= SUMMARY_MIN_CALLS
            ]
            if not groups or not _screen(metric, rows, groups):
                continue
            report = drift(df, metric)
            counted = report.df[report.df["calls"] >= SUMMARY_MIN_CALLS]
            hits = int(counted["verdict"].isin(("leak", "growth")).sum())
            if report.verdict in ("leak", "growth") and hits and 2 * hits >= len(counted):
                return f"{report.sentence} (batch.drift({metric!r}))"
    except Exception:  # a summary must never fail for a note
        return None
    return None


def _screen(metric: str, rows: pd.DataFrame, groups: list[np.ndarray]) -> bool:
    """Whether the numpy screen finds the slope of at least half of (at most
    ``_SCREEN``, evenly spread) processes past the thresholds of a leak or growth."""
    step = max(1, len(groups) // _SCREEN)
    x_all = rows["call_on_worker"].to_numpy(dtype=float)
    y_all = rows[metric].to_numpy(dtype=float)
    floor = GROWTH_MIN_MS if metric.endswith("_ms") else 0.0
    eligible = suspects = 0
    for idx in groups[::step][:_SCREEN]:
        eligible += 1
        x, y = x_all[idx], y_all[idx]
        slope = _screen_slope(*_points(x, y, _SCREEN, _SCREEN)[:2])
        if not math.isfinite(slope):
            continue
        change = slope * float(np.ptp(x))
        if _is_memory(metric):
            suspects += change >= LEAK_MIN_MIB
            continue
        median = float(np.median(y))
        suspects += bool(
            median > 0
            and slope * 1000 / median >= GROWTH_MIN_PER_1000
            and change / median >= GROWTH_MIN_CHANGE
            and change >= floor
        )
    return 2 * suspects >= eligible
