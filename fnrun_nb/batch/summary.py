"""``Summary``: the numbers a person reads first about a batch, as a value object.

Counts cover every row; latency percentiles cover ok rows only (the time a crashed
call took says how long it took to fail, not how fast the handler is).  Percentiles
come from :func:`fnrun_nb.batch.analysis.quantiles`, the batch package's one
percentile helper, so a summary agrees with ``batch.percentiles()``.  A memory leak
or a slowdown the longer a process lives is noted in one line (``Summary.drift``, from
:func:`fnrun_nb.batch.analysis.drift.drift_note`: a numpy screen first, scipy only
when it finds something, never an error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from .analysis import DEFAULT_Q, quantiles
from .analysis.drift import drift_note
from .record import OUTCOMES

__all__ = ["LATENCY_LABELS", "Summary", "summarize"]

LATENCY_LABELS: tuple[str, ...] = ("p50", "p90", "p99", "p99.9", "max")
"""The columns of ``Summary.latency``; ``p50`` .. ``p99.9`` are percentiles."""

# Summary row name -> record column.
_METRICS = {"total": "latency_ms", "wait": "wait_ms", "service": "service_ms"}


@dataclass(frozen=True)
class Summary:
    """Counts, latency, throughput and utilisation of one batch.

    ``outcomes`` holds every outcome (zeros included) in :data:`OUTCOMES` order and
    ``statuses`` the handler statuses, ``None`` counting rows with no result; both
    cover all rows.  ``latency`` maps ``"total"``, ``"wait"`` and ``"service"`` to
    ``{"p50", "p90", "p99", "p99.9", "max"}`` in milliseconds over the ``ok_calls`` ok
    rows (NaN when there are none).  ``throughput`` is calls that ran per second of
    ``wall_s``; ``utilisation`` the share of worker time spent serving calls (sum of
    service time over ``wall_s * workers``; NaN when either is unknown).
    ``handler_split`` is ``None`` unless the record has ``handler_ms`` (a batch with
    ``handler_timing``); then it maps ``"handler"`` and ``"transport"`` to their
    medians (ms) over the ok rows whose handler reported its time, and ``"calls"``
    to how many those are (NaN medians when none did).  ``resources`` is ``None``
    unless the record has ``cpu_ms`` (a batch with ``resources``); then it maps
    ``"cpu_ms"`` to the median CPU time per ok call, ``"rss_mib"`` to the median RSS
    after an ok call and ``"peak_rss_mib"`` to the highest peak of any process (NaN
    when no call was measured).
    """

    calls: int
    ok_calls: int
    outcomes: dict[str, int]
    statuses: dict[int | None, int]
    latency: dict[str, dict[str, float]]
    throughput: float
    wall_s: float
    utilisation: float
    workers: int | None = None
    command: str | None = None
    interrupted: bool = False
    handler_split: dict[str, float] | None = None
    resources: dict[str, float] | None = None
    drift: str | None = None
    """One line when the batch shows a memory leak or a slowdown the longer a process
    lives (see ``batch.drift()``; needs scipy), else ``None``."""

    @property
    def failed(self) -> int:
        """Rows whose outcome is not ``ok``."""
        return self.calls - self.ok_calls

    def to_frame(self) -> pd.DataFrame:
        """The latency table (rows total/wait/service, columns p50..max, ms)."""
        return pd.DataFrame.from_dict(self.latency, orient="index", columns=list(LATENCY_LABELS))

    # --- text -------------------------------------------------------------------------

    def _headline(self) -> str:
        on = f" of {self.command}" if self.command else ""
        workers = (
            f", {self.workers} worker{'s' if self.workers != 1 else ''}" if self.workers else ""
        )
        state = " (interrupted)" if self.interrupted else ""
        return (
            f"{self.calls} calls{on}{state}: {_secs(self.wall_s)} wall{workers}, "
            f"{self.throughput:,.0f} calls/s, utilisation {_pct(self.utilisation)}"
        )

    def _counts_lines(self) -> list[str]:
        outcomes = " · ".join(f"{k} {v}" for k, v in self.outcomes.items() if v)
        statuses = " · ".join(
            f"{'none' if k is None else k} ×{v}" for k, v in self.statuses.items()
        )
        lines = [f"outcome  {outcomes or '-'}", f"status   {statuses or '-'}"]
        split = self.handler_split
        if split is not None:
            lines.append(
                f"service  handler {_ms(split['handler'])} ms + transport "
                f"{_ms(split['transport'])} ms (medians over {int(split['calls'])} timed ok calls)"
            )
        used = self.resources
        if used is not None:
            lines.append(
                f"process  cpu {_ms(used['cpu_ms'])} ms/call · rss {_mib(used['rss_mib'])} MiB"
                f" (medians over ok calls) · peak {_mib(used['peak_rss_mib'])} MiB"
            )
        return lines

    def __str__(self) -> str:
        lines = [self._headline(), *self._counts_lines()]
        lines.append(f"latency (ms) over {self.ok_calls} ok calls:")
        width = 9
        lines.append("         " + "".join(label.rjust(width) for label in LATENCY_LABELS))
        for name, row in self.latency.items():
            lines.append(
                f"  {name:<7}" + "".join(_ms(row[label]).rjust(width) for label in LATENCY_LABELS)
            )
        if self.drift:
            lines.append(f"drift    {self.drift}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        total = self.latency.get("total", {})
        return (
            f"<Summary {self.calls} calls, {self.ok_calls} ok, "
            f"p50 {_ms(total.get('p50', math.nan))} ms, p99 {_ms(total.get('p99', math.nan))} ms, "
            f"{self.throughput:,.0f} calls/s>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(label)}</th>" for label in LATENCY_LABELS)
        body = "".join(
            f"<tr><th style='text-align:left'>{escape(name)}</th>"
            + "".join(f"<td>{_ms(row[label])}</td>" for label in LATENCY_LABELS)
            + "</tr>"
            for name, row in self.latency.items()
        )
        counts = "".join(f"<div>{escape(line)}</div>" for line in self._counts_lines())
        drift = (
            f"<div style='color:#c62828'>drift: {escape(self.drift)}</div>" if self.drift else ""
        )
        return (
            '<div class="fnrun-summary">'
            f"<div><b>{escape(self._headline())}</b></div>{counts}"
            f"<table><caption style='text-align:left'>latency (ms) over {self.ok_calls} ok calls"
            f"</caption><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"{drift}</div>"
        )


def summarize(
    df: pd.DataFrame,
    *,
    wall_s: float | None = None,
    workers: int | None = None,
    command: str | None = None,
    interrupted: bool = False,
) -> Summary:
    """The :class:`Summary` of a batch record.

    ``wall_s`` defaults to first start to last finish in the record; ``workers``
    (for utilisation) is unknown when not given.
    """
    outcome = df["outcome"]
    counts = outcome.value_counts(sort=False)
    outcomes = {name: int(counts.get(name, 0)) for name in OUTCOMES}
    status = df["status"]
    statuses: dict[int | None, int] = {
        int(k): int(v) for k, v in status.value_counts(sort=True, dropna=True).items()
    }
    missing = int(status.isna().sum())
    if missing:
        statuses[None] = missing
    ok = (outcome == "ok").to_numpy()
    latency = {}
    for name, column in _METRICS.items():
        values = df[column].to_numpy(dtype=float, na_value=np.nan)[ok]
        row = quantiles(values, DEFAULT_Q)
        row["max"] = float(np.nanmax(values)) if np.any(~np.isnan(values)) else math.nan
        latency[name] = row
    finished = df["finished"]
    ran = int(finished.notna().sum())
    if wall_s is None:
        started = df["started"].dropna()
        wall_s = (
            max(0.0, (finished.max() - started.min()).total_seconds())
            if ran and not started.empty
            else 0.0
        )
    handler_split = _handler_split(df, ok) if "handler_ms" in df.columns else None
    resources = _resources(df, ok) if "cpu_ms" in df.columns else None
    service_s = float(np.nansum(df["service_ms"].to_numpy(dtype=float, na_value=np.nan))) / 1e3
    utilisation = service_s / (wall_s * workers) if workers and wall_s > 0 else math.nan
    return Summary(
        calls=len(df),
        ok_calls=int(ok.sum()),
        outcomes=outcomes,
        statuses=statuses,
        latency=latency,
        throughput=ran / wall_s if wall_s > 0 else math.nan,
        wall_s=float(wall_s),
        utilisation=utilisation,
        workers=workers,
        command=command,
        interrupted=interrupted,
        handler_split=handler_split,
        resources=resources,
        drift=drift_note(df),
    )


def _handler_split(df: pd.DataFrame, ok: np.ndarray) -> dict[str, float]:
    """Medians of ``handler_ms`` and ``transport_ms`` over ok rows that have them."""
    handler = df["handler_ms"].to_numpy(dtype=float, na_value=np.nan)[ok]
    transport = df["service_ms"].to_numpy(dtype=float, na_value=np.nan)[ok] - handler
    known = ~np.isnan(handler)
    if not known.any():
        return {"handler": math.nan, "transport": math.nan, "calls": 0.0}
    return {
        "handler": float(np.median(handler[known])),
        "transport": float(np.median(transport[known])),
        "calls": float(known.sum()),
    }


def _resources(df: pd.DataFrame, ok: np.ndarray) -> dict[str, float]:
    """Medians of ``cpu_ms`` and ``rss_mib`` over ok rows, and the highest peak."""

    def column(name: str) -> np.ndarray:
        values: np.ndarray = df[name].to_numpy(dtype=float, na_value=np.nan)[ok]
        kept: np.ndarray = values[~np.isnan(values)]
        return kept

    cpu, rss, peak = column("cpu_ms"), column("rss_mib"), column("peak_rss_mib")
    return {
        "cpu_ms": float(np.median(cpu)) if cpu.size else math.nan,
        "rss_mib": float(np.median(rss)) if rss.size else math.nan,
        "peak_rss_mib": float(peak.max()) if peak.size else math.nan,
    }


def _mib(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:,.1f}"


def _ms(v: float) -> str:
    if v is None or math.isnan(v):
        return "-"
    if v < 10:
        return f"{v:.3f}"
    if v < 1000:
        return f"{v:.1f}"
    return f"{v:,.0f}"


def _secs(s: float) -> str:
    return f"{s:.3g} s" if s < 100 else f"{s:,.0f} s"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"
