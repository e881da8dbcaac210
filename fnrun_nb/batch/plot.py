"""Plots of a batch record and of a comparison (matplotlib, the optional ``plot`` extra).

``batch.plot`` is a :class:`BatchPlot`; each method draws on ``ax`` when given (else a
new figure) and returns the Axes, so plots compose like pandas' ``df.plot``.
matplotlib is imported on first use; without it every method raises ``ImportError``
naming the extra.  Latency plots show ok calls (see ``analysis``); the timeline shows
every call that started, coloured by outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .analysis import format_percent, ok_rows, slot_keys, warmup

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .comparison import Comparison

__all__ = ["OUTCOME_COLOURS", "BatchPlot", "plot_comparison"]

# Failures in warm colours, the quiet outcomes in greys, so a timeline reads at a glance.
OUTCOME_COLOURS = {
    "ok": "#4c9a2a",
    "crashed": "#c62828",
    "timeout": "#ef6c00",
    "protocol_error": "#8e24aa",
    "unavailable": "#9e9e9e",
    "start_failed": "#6d4c41",
    "cancelled": "#bdbdbd",
    "worker_lost": "#f9a825",
}


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'fnrun-nb[plot]'") from exc
    return plt


def _axes(ax: Axes | None, **fig_kw: Any) -> Axes:
    if ax is not None:
        return ax
    _, new = _pyplot().subplots(**fig_kw)
    return new  # type: ignore[no-any-return]


def _ok_values(df: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in df.columns:
        raise KeyError(f"the batch record has no column {metric!r}")
    values: np.ndarray = ok_rows(df)[metric].to_numpy(dtype=float, na_value=np.nan)
    kept: np.ndarray = values[~np.isnan(values)]
    return kept


def _ecdf(ax: Axes, values: np.ndarray, label: str, logx: bool) -> None:
    x = np.sort(values)
    if logx:
        # A log axis cannot show 0 ms; those calls are below any visible point.
        x = x[x > 0]
    y = np.arange(1, x.size + 1) / max(values.size, 1)
    ax.step(x, y, where="post", label=label)


class BatchPlot:
    """Plot accessor of a batch record: ``batch.plot.hist()``, ``.ecdf()``,
    ``.timeline()``, ``.warmup()``."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def hist(
        self, metric: str = "latency_ms", *, bins: int = 50, ax: Axes | None = None
    ) -> Axes:
        """Histogram of ``metric`` over ok calls, with p50 and p99 marked."""
        values = _ok_values(self._df, metric)
        ax = _axes(ax)
        ax.hist(values, bins=bins, color="#5c85d6")
        if values.size:
            for q, style in ((50, "-"), (99, "--")):
                v = float(np.percentile(values, q))
                ax.axvline(v, color="k", linestyle=style, linewidth=1, label=f"p{q} {v:.3g} ms")
            ax.legend()
        ax.set_xlabel(f"{metric} (ok calls)")
        ax.set_ylabel("calls")
        return ax

    def ecdf(
        self,
        metric: str = "latency_ms",
        *,
        logx: bool = False,
        by: str | None = None,
        ax: Axes | None = None,
    ) -> Axes:
        """Empirical CDF of ``metric`` over ok calls, one line per ``by`` group if given.

        ``logx`` spreads a long tail out (calls at exactly 0 ms are then not drawn).
        """
        ax = _axes(ax)
        if by is None:
            _ecdf(ax, _ok_values(self._df, metric), metric, logx)
        else:
            if by not in self._df.columns:
                raise KeyError(f"the batch record has no column {by!r}")
            for key, group in ok_rows(self._df).groupby(by, observed=True, sort=True):
                _ecdf(ax, _ok_values(group, metric), f"{by}={key}", logx)
            ax.legend(title=by)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(f"{metric} (ok calls)")
        ax.set_ylabel("fraction of calls")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        return ax

    def timeline(self, *, ax: Axes | None = None) -> Axes:
        """Per-worker swimlanes: one bar per call from start to finish, by outcome.

        One lane per worker slot (``dask_worker`` and ``worker`` on Dask), seconds
        since the first call started on x.  Each outcome is one ``broken_barh``
        collection with one bar per call; cold calls (first on their process) are
        hatched, and a replacement (the slot's generation changing) is a black tick
        across the lane at the first call of the new process.
        Calls that never started (no worker was free, cancelled before running) have no
        bar.
        """
        df = self._df
        keys = slot_keys(df)
        rows = df.dropna(subset=[*keys, "started", "finished"])
        ax = _axes(ax, figsize=(10, 1.0 + 0.45 * max(1, rows.groupby(keys).ngroups)))
        if rows.empty:
            ax.set_xlabel("seconds since the first call started")
            ax.set_title("no call started")
            return ax
        t0 = rows["started"].min()
        start = (rows["started"] - t0).dt.total_seconds().to_numpy()
        width = (rows["finished"] - rows["started"]).dt.total_seconds().to_numpy()
        grouped = rows.groupby(keys, sort=True)
        lanes = grouped.ngroup().to_numpy()
        names = [":".join(str(k) for k in key) for key in grouped.size().index.to_frame().values]
        outcome = rows["outcome"].astype(str).to_numpy()
        height = 0.8
        # Thin white edges keep back-to-back calls apart; with thousands of bars they
        # would paint the lanes white, so only small batches get them.
        edge: dict[str, Any] = (
            {"edgecolor": "white", "linewidth": 0.5} if len(rows) <= 2000 else {}
        )
        for name, colour in OUTCOME_COLOURS.items():
            mask = outcome == name
            if not mask.any():
                continue
            # One collection per (outcome, lane) is what broken_barh takes; label only
            # the first so the legend has one entry per outcome.
            for i, lane in enumerate(np.unique(lanes[mask])):
                sel = mask & (lanes == lane)
                ax.broken_barh(
                    list(zip(start[sel], width[sel])),
                    (lane - height / 2, height),
                    facecolors=colour,
                    **edge,
                    label=name if i == 0 else None,
                    gid=f"calls:{name}",
                )
        # Cold calls (the first on their process) hatched over their outcome colour:
        # after a replacement that is where the new process's start-up time shows.
        cold = rows["cold"].to_numpy(dtype=bool, na_value=False)
        for lane in np.unique(lanes[cold]):
            sel = cold & (lanes == lane)
            ax.broken_barh(
                list(zip(start[sel], width[sel])), (lane - height / 2, height),
                facecolors="none", edgecolor=(0, 0, 0, 0.45), hatch="///", linewidth=0,
                label="cold" if lane == lanes[cold].min() else None, gid="cold",
            )
        # Replacements: where the generation of a lane changes between its calls.
        order = np.lexsort((start, lanes))
        gen = rows["generation"].to_numpy(dtype=float, na_value=np.nan)[order]
        lane_sorted = lanes[order]
        changed = (lane_sorted[1:] == lane_sorted[:-1]) & (gen[1:] != gen[:-1])
        if changed.any():
            idx = order[1:][changed]
            ax.vlines(
                start[idx], lanes[idx] - 0.5, lanes[idx] + 0.5, colors="black",
                linewidth=2, label="replacement", gid="replacements",
            )
        ax.set_yticks(range(len(names)), [f"worker {n}" for n in names])
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the first call started")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        return ax

    def warmup(self, metric: str = "service_ms", *, ax: Axes | None = None) -> Axes:
        """Median (and p90 band) of ``metric`` against ``call_on_worker``, the steady
        level, and where it settles (see ``batch.warmup()``)."""
        report = warmup(self._df, metric)
        curve = report.curve
        ax = _axes(ax)
        ax.fill_between(curve.index, curve["p50"], curve["p90"], alpha=0.25, label="p50-p90")
        ax.plot(curve.index, curve["p50"], marker="o", label="median")
        if report.steady_ms == report.steady_ms:
            ax.axhline(report.steady_ms, color="grey", linestyle="--", label="steady")
        if report.settles_after:
            ax.axvline(report.settles_after + 0.5, color="#c62828", linestyle=":",
                       label=f"settles after {report.settles_after}")
        ax.set_xlabel("call on worker (1 = first call of a process)")
        ax.set_ylabel(f"{metric} (ok calls)")
        ax.set_yscale("log")
        ax.legend()
        return ax


def plot_comparison(cmp: Comparison, *, logx: bool = True) -> Figure:
    """Two panels: ECDFs of A and B, and the bootstrap distribution of the ratio with
    its interval and the no-difference band."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, sample in zip(cmp.labels, cmp.samples):
        _ecdf(left, sample["value"].to_numpy(), label, logx)
    if logx:
        left.set_xscale("log")
    left.set_xlabel(f"{cmp.metric} (ok calls)")
    left.set_ylabel("fraction of calls")
    left.legend()
    left.grid(True, alpha=0.3)

    upper, lower = 1 + cmp.threshold, 1 / (1 + cmp.threshold)
    right.axvspan(lower, upper, color="#1565c0", alpha=0.12,
                  label=f"within {format_percent(cmp.threshold)}")
    right.hist(cmp.replicates, bins=60, color="#777777")
    for v in cmp.ci:
        right.axvline(v, color="#c62828", linestyle="--", linewidth=1)
    right.axvline(cmp.ratio, color="black", linewidth=1.5,
                  label=f"{cmp.labels[1]}/{cmp.labels[0]} median ratio")
    right.set_xlabel(f"bootstrap {cmp.labels[1]}/{cmp.labels[0]} ({format_percent(cmp.confidence)} CI dashed)")
    right.legend(fontsize="small")
    fig.suptitle(cmp.verdict)
    fig.tight_layout()
    figure: Figure = fig
    return figure
