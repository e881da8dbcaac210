"""What an experiment's calls say: one row per arm, a verdict against a baseline, effects.

An *experiment* (``fnrun_nb.experiment``) runs handler versions (*variants*) times
every combination of an env grid; each (variant, grid values) pair is an *arm*.  Its
record is one batch whose rows carry ``arm``, ``variant``, ``round`` and one column per
grid env name; the experiment's design (variants, grid, arms, baseline, metric,
threshold, seed, the order the arms ran in) is kept in the batch's ``config`` under
``"experiment"``, so a saved batch loads back into the same :class:`Experiment`.

The statistics, precisely:

- an arm's ``calls`` are its rows that ran (every outcome but ``cancelled``: calls an
  interrupt stopped before they ran, or killed, are not the handler's failures),
  ``failures`` those whose outcome is not ``ok``; ``median`` and ``p99`` are of
  ``metric`` over its ok calls (numpy's linear percentile);
- an arm *mostly fails* when more than half its calls failed: it is not ranked (last in
  the table, ``ratio`` NaN, a verdict saying how many calls failed);
- ``ratio`` is the arm's median over the baseline arm's median; its 95% interval
  (``ci_low``, ``ci_high``) is a percentile bootstrap with 10,000 replicates: each
  replicate resamples the arm's ok values and, independently, the baseline's, with
  replacement and at their own sizes, and takes the ratio of the two resample
  medians; the interval is the 2.5th and 97.5th percentiles of the replicates.  Rows
  are resampled as independent draws, pooled over rounds (the rounds' interleaving is
  what keeps drift out of them).  Each arm's median replicates are drawn once, in arm
  order, by :func:`~fnrun_nb.batch.comparison.bootstrap_percentile` (exact, two Beta
  draws per replicate) from ``numpy.random.default_rng(seed)``: the same record and
  seed give the same intervals;
- the verdict reads the interval against ``threshold`` exactly as ``compare`` does
  (:func:`~fnrun_nb.batch.comparison.verdict_phrase`): "1.82x slower (95% CI
  1.75-1.90)", "1.50x faster (...)", "no difference beyond 5%", "inconclusive at 5%";
- :meth:`Experiment.effects`: for each factor (each grid env name, and ``variant``) and
  each of its levels, the geometric mean, over the cells equal in the other factors,
  of the ratio of this level's median to the factor's first level's; its interval
  applies the same geometric mean to the arms' median replicates.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .analysis import format_percent
from .comparison import DEFAULT_RESAMPLES, bootstrap_percentile, verdict_phrase
from .schema import COLUMNS, OPTIONAL_COLUMNS, OUTCOMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .core import Batch

__all__ = ["CONFIG_KEY", "EXPERIMENT_COLUMNS", "ArmSpec", "Experiment", "RESERVED_NAMES"]

CONFIG_KEY = "experiment"
"""The key of the experiment's design in its batch's ``config``."""

EXPERIMENT_COLUMNS = ("arm", "variant", "round")
"""The columns an experiment adds to its batch, before one per grid env name."""

RESERVED_NAMES = frozenset(COLUMNS) | frozenset(OPTIONAL_COLUMNS) | frozenset(EXPERIMENT_COLUMNS)
"""Names a grid env cannot take: they are (or would clash with) batch columns."""

CONFIDENCE = 0.95


@dataclass(frozen=True)
class ArmSpec:
    """One arm: its name, its variant and its grid values (env name to value)."""

    name: str
    variant: str
    env: Mapping[str, str]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _digits(ratio: float) -> int:
    """Two decimals ("1.82x slower"), none from 10x on ("48x slower")."""
    return 2 if 0.1 < ratio < 10 else 0


def arm_name(variant: str, env: Mapping[str, str]) -> str:
    """``"v2 THREADS=4 CACHE=on"``: the variant's name, then its grid values in order."""
    return " ".join([variant, *(f"{k}={v}" for k, v in env.items())])


@dataclass(frozen=True)
class _ArmStats:
    calls: int
    failures: int
    outcomes: dict[str, int]
    values: np.ndarray  # the metric of its ok calls

    @property
    def ranked(self) -> bool:
        return self.calls > 0 and self.values.size > 0 and 2 * self.failures <= self.calls

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.values.size else math.nan

    @property
    def p99(self) -> float:
        return float(np.percentile(self.values, 99)) if self.values.size else math.nan

    def failed_text(self) -> str:
        if self.calls == 0:
            return "not run"
        kinds = ", ".join(f"{n} {o}" for o, n in self.outcomes.items() if o != "ok" and n)
        return f"not ranked: {self.failures} of {self.calls} calls failed ({kinds})"


class Experiment:
    """The record of an experiment and its analysis (see the module docstring).

    ``batch`` is one :class:`~fnrun_nb.batch.Batch` of every measured call (warm-up
    calls are not in it), in the order they ran, with the columns ``arm``,
    ``variant``, ``round`` and one per grid env name besides the usual ones.  ``arms``
    lists the arms in design order (the variants' order times the grid's order),
    ``order`` the arm names of each round in the order they ran, ``baseline`` the arm
    ratios are taken against.  ``interrupted`` is True when Ctrl-C stopped the run: the
    batch then holds the rounds that ran, the interrupted arm's calls included.

    In a notebook the object displays :meth:`table`.  Build one with
    ``fnrun_nb.experiment(...)``, or :meth:`from_batch` on its (saved and loaded) batch.
    """

    def __init__(
        self,
        batch: Batch,
        *,
        variants: Mapping[str, str],
        grid: Mapping[str, Sequence[str]],
        arms: Sequence[ArmSpec],
        baseline: str,
        metric: str,
        threshold: float,
        rounds: int,
        seed: int,
        order: Sequence[Sequence[str]],
    ) -> None:
        self.batch = batch
        self.variants = dict(variants)
        self.grid = {k: tuple(v) for k, v in grid.items()}
        self.arms = tuple(arms)
        self.metric = metric
        self.threshold = threshold
        self.rounds = rounds
        self.seed = seed
        self.order = [list(o) for o in order]
        self.confidence = CONFIDENCE
        self.resamples = DEFAULT_RESAMPLES
        self.baseline = self._arm(baseline)

    # --- the design, kept in the batch ---------------------------------------------

    def design(self) -> dict[str, Any]:
        """The design as plain JSON-able data (what the batch's config keeps)."""
        return {
            "variants": dict(self.variants),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "arms": [{"arm": a.name, "variant": a.variant, "env": dict(a.env)} for a in self.arms],
            "baseline": self.baseline,
            "metric": self.metric,
            "threshold": self.threshold,
            "rounds": self.rounds,
            "seed": self.seed,
            "order": [list(o) for o in self.order],
        }

    @classmethod
    def from_batch(cls, batch: Batch) -> Experiment:
        """The experiment whose record ``batch`` is (for instance after ``Batch.load``).

        Raises ``ValueError`` when the batch's config holds no experiment design.
        """
        d = batch.config.get(CONFIG_KEY)
        if not isinstance(d, Mapping):
            raise ValueError("this batch is not an experiment's record (no design in its config)")
        return cls(
            batch,
            variants=d["variants"],
            grid=d["grid"],
            arms=[ArmSpec(a["arm"], a["variant"], dict(a["env"])) for a in d["arms"]],
            baseline=d["baseline"],
            metric=d["metric"],
            threshold=float(d["threshold"]),
            rounds=int(d["rounds"]),
            seed=int(d["seed"]),
            order=d["order"],
        )

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C stopped the run (the batch holds what ran)."""
        return self.batch.interrupted

    def _arm(self, name: str) -> str:
        """``name`` when it names an arm, else ``ValueError`` listing the arms."""
        names = [a.name for a in self.arms]
        if name not in names:
            raise ValueError(f"no arm named {name!r}; the arms are {', '.join(map(repr, names))}")
        return name

    # --- per-arm statistics (cached: the record of a finished experiment is fixed) --

    @cached_property
    def _stats(self) -> dict[str, _ArmStats]:
        df = self.batch.df
        if self.metric not in df.columns:
            raise KeyError(f"the batch record has no column {self.metric!r}")
        out: dict[str, _ArmStats] = {}
        groups = dict(tuple(df.groupby("arm", sort=False, observed=True)))
        for arm in self.arms:
            rows = groups.get(arm.name, df.iloc[:0])
            ran = rows[rows["outcome"] != "cancelled"]
            counts = ran["outcome"].astype(str).value_counts()
            outcomes = {o: int(counts.get(o, 0)) for o in OUTCOMES}  # in OUTCOMES order
            ok = ran[ran["outcome"] == "ok"][self.metric]
            values = ok.to_numpy(dtype=float, na_value=np.nan)
            out[arm.name] = _ArmStats(
                calls=len(ran),
                failures=len(ran) - outcomes["ok"],
                outcomes=outcomes,
                values=values[~np.isnan(values)],
            )
        return out

    @cached_property
    def _replicates(self) -> dict[str, np.ndarray]:
        """Bootstrap replicates of each ranked arm's median, drawn in arm order."""
        rng = np.random.default_rng(self.seed)
        return {
            arm.name: bootstrap_percentile(stats.values, 50, self.resamples, rng)
            for arm in self.arms
            if (stats := self._stats[arm.name]).ranked
        }

    def _interval(self, log_reps: np.ndarray) -> tuple[float, float]:
        tail = (1 - self.confidence) / 2 * 100
        lo, hi = np.exp(np.percentile(log_reps, [tail, 100 - tail]))
        return float(lo), float(hi)

    # --- the views ---------------------------------------------------------------------

    def table(self, baseline: str | None = None) -> pd.DataFrame:
        """One row per arm, best first: ``arm``, ``variant``, one column per grid env
        name, ``calls``, ``failures``, ``median``, ``p99`` (of the metric, ok calls),
        ``ratio`` (median over the baseline's), ``ci_low``, ``ci_high`` (its bootstrap
        95% interval), ``verdict`` and ``direction`` (the verdict's category:
        ``baseline``, ``slower``, ``faster``, ``same``, ``inconclusive``,
        ``not ranked``, ``no ratio``).

        Ranked arms come first by median (ties in design order), then the arms that
        mostly failed or never ran.  ``baseline`` (an arm's name) overrides the
        experiment's.  Raises ``ValueError`` for an unknown arm and ``KeyError`` when
        the record lacks the metric.
        """
        base = self.baseline if baseline is None else self._arm(baseline)
        stats, reps = self._stats, self._replicates
        b = stats[base]
        rows: list[tuple[tuple[int, float], dict[str, Any]]] = []
        for arm in self.arms:
            s = stats[arm.name]
            ratio = lo = hi = math.nan
            if not s.ranked:
                direction, verdict = "not ranked", s.failed_text()
                if arm.name == base:
                    verdict = f"baseline, {verdict}"
            elif arm.name == base:
                ratio, direction, verdict = 1.0, "baseline", "baseline"
            elif not b.ranked or not b.median > 0:
                why = "was not run" if b.calls == 0 else (
                    f"failed {b.failures} of {b.calls} calls")
                direction, verdict = "no ratio", f"no ratio: the baseline {why}"
            else:
                ratio = s.median / b.median
                with np.errstate(divide="ignore", invalid="ignore"):
                    lo, hi = self._interval(np.log(reps[arm.name] / reps[base]))
                direction, verdict = verdict_phrase(
                    ratio, (lo, hi), self.threshold, self.confidence, digits=_digits(ratio)
                )
            rows.append((
                (0, s.median) if s.ranked else (1, 0.0),
                {
                    "arm": arm.name,
                    "variant": arm.variant,
                    **dict(arm.env),
                    "calls": s.calls,
                    "failures": s.failures,
                    "median": s.median,
                    "p99": s.p99,
                    "ratio": ratio,
                    "ci_low": lo,
                    "ci_high": hi,
                    "verdict": verdict,
                    "direction": direction,
                },
            ))
        rows.sort(key=lambda r: r[0])  # stable: ties keep design order
        table = pd.DataFrame([row for _, row in rows])
        for name in ("calls", "failures"):
            table[name] = table[name].astype("int64")
        return table

    def best(self) -> str:
        """The name of the ranked arm with the lowest median.  Raises ``ValueError``
        when no arm is ranked (every arm mostly failed or never ran)."""
        ranked = [a.name for a in self.arms if self._stats[a.name].ranked]
        if not ranked:
            raise ValueError("no arm is ranked: every arm mostly failed or never ran")
        return min(ranked, key=lambda n: self._stats[n].median)

    def effects(self) -> pd.DataFrame:
        """Main effects: one row per level of each factor (each grid env name, then
        ``variant``) that has two levels or more.

        Columns ``factor``, ``level``, ``ratio`` (over the cells equal in the other
        factors, the geometric mean of this level's median against the factor's first
        level's), ``ci_low``, ``ci_high`` (its bootstrap 95% interval), ``cells`` (how
        many cells it averages: cells with an unranked arm are left out) and
        ``verdict`` / ``direction`` (as in :meth:`table`; the first level is
        ``baseline``).
        """
        factors: list[tuple[str, tuple[str, ...]]] = [*self.grid.items()]
        factors.append(("variant", tuple(self.variants)))
        stats, reps = self._stats, self._replicates

        def level(arm: ArmSpec, factor: str) -> str:
            return arm.variant if factor == "variant" else arm.env[factor]

        rows: list[dict[str, Any]] = []
        for factor, levels in factors:
            if len(levels) < 2:
                continue
            others = [f for f, _ in factors if f != factor]
            cell = {
                (level(a, factor), tuple(level(a, f) for f in others)): a.name for a in self.arms
            }
            keys = list(dict.fromkeys(k for _, k in cell))  # design order
            ref = levels[0]
            rows.append(
                {"factor": factor, "level": ref, "ratio": 1.0, "ci_low": math.nan,
                 "ci_high": math.nan, "cells": len(keys), "verdict": "baseline",
                 "direction": "baseline"}
            )
            for lv in levels[1:]:
                pairs = [
                    (cell[(lv, k)], cell[(ref, k)])
                    for k in keys
                    if (lv, k) in cell and (ref, k) in cell
                    and stats[cell[(lv, k)]].ranked and stats[cell[(ref, k)]].ranked
                    and stats[cell[(ref, k)]].median > 0
                ]
                ratio = lo = hi = math.nan
                if not pairs:
                    direction, verdict = "no ratio", "no ratio: no cell with both arms ranked"
                else:
                    ratio = math.exp(
                        sum(math.log(stats[a].median / stats[r].median) for a, r in pairs)
                        / len(pairs)
                    )
                    with np.errstate(divide="ignore", invalid="ignore"):
                        logs = np.mean([np.log(reps[a] / reps[r]) for a, r in pairs], axis=0)
                    lo, hi = self._interval(logs)
                    direction, verdict = verdict_phrase(
                        ratio, (lo, hi), self.threshold, self.confidence, digits=_digits(ratio)
                    )
                rows.append(
                    {"factor": factor, "level": lv, "ratio": ratio, "ci_low": lo,
                     "ci_high": hi, "cells": len(pairs), "verdict": verdict,
                     "direction": direction}
                )
        columns = ["factor", "level", "ratio", "ci_low", "ci_high", "cells", "verdict", "direction"]
        return pd.DataFrame(rows, columns=columns).astype({"cells": "int64"})

    def plot(self, *, logx: bool = True) -> Figure:
        """One distribution per arm (a box of the metric over its ok calls, best arm on
        top, the baseline's median dashed), titled with the best arm (matplotlib)."""
        from .plot import _pyplot

        table = self.table()
        shown = [a for a in table["arm"] if self._stats[a].values.size]
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(shown), 2) + 1.5))
        if shown:
            # matplotlib 3.10 names the orientation; 3.11 deprecates the older vert=.
            horizontal: dict[str, Any] = (
                {"orientation": "horizontal"}
                if "orientation" in inspect.signature(ax.boxplot).parameters
                else {"vert": False}
            )
            ax.boxplot(
                [self._stats[a].values for a in reversed(shown)],
                showfliers=False, widths=0.6, **horizontal,
            )
            ax.set_yticks(range(1, len(shown) + 1), list(reversed(shown)))
        base = self._stats[self.baseline]
        if base.values.size:
            ax.axvline(base.median, color="#1565c0", linestyle="--", linewidth=1,
                       label=f"baseline median ({self.baseline})")
            ax.legend(fontsize="small", loc="lower right")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(f"{self.metric} (ok calls)")
        ax.grid(True, axis="x", alpha=0.3)
        ranked = [a for a in self.arms if self._stats[a.name].ranked]
        ax.set_title(f"best: {self.best()}" if ranked else "no arm ranked")
        fig.tight_layout()
        figure: Figure = fig
        return figure

    # --- reprs ---------------------------------------------------------------------------

    def _headline(self) -> str:
        n_inputs = self.batch.df["input_index"].nunique() if len(self.batch) else 0
        parts = [
            f"Experiment: {_count(len(self.arms), 'arm')}, {_count(self.rounds, 'round')} "
            f"over {_count(n_inputs, 'input')}",
            f"{self.metric} of ok calls, threshold {format_percent(self.threshold)}",
            f"baseline {self.baseline!r}",
        ]
        if self.interrupted:
            parts.append("INTERRUPTED (partial)")
        return "; ".join(parts)

    def _display_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """The table as text cells: numbers at fixed widths (a column does not shift
        with the values), the interval beside the verdict."""
        rows = []
        for r in self.table().itertuples(index=False):
            verdict = str(r.verdict)
            if r.direction in ("same", "inconclusive"):
                verdict += f": {r.ratio:.3f} ({format_percent(self.confidence)} CI " \
                    f"{r.ci_low:.3f}-{r.ci_high:.3f})"
            rows.append((
                str(r.arm), f"{r.calls:>5}", f"{r.failures:>8}",
                "n/a" if r.median != r.median else f"{r.median:9.3f} ms",
                "n/a" if r.p99 != r.p99 else f"{r.p99:9.3f} ms",
                verdict,
            ))
        return rows

    def __repr__(self) -> str:
        rows = self._display_rows()
        width = max([3, *(len(r[0]) for r in rows)])
        head = ("arm".ljust(width), "calls", "failures", "median".rjust(12),
                "p99".rjust(12), "verdict")
        lines = [self._headline(), "  " + "  ".join(head)]
        for row in rows:
            cells = (row[0].ljust(width), *row[1:3], row[3].rjust(12), row[4].rjust(12), row[5])
            lines.append("  " + "  ".join(cells))
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        head = "".join(
            f"<th>{h}</th>" for h in ("arm", "calls", "failures", "median", "p99", "verdict")
        )
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c.strip())}</td>" for c in row) + "</tr>"
            for row in self._display_rows()
        )
        return (
            '<div class="fnrun-experiment">'
            f'<div style="font-weight:bold">{escape(self._headline())}</div>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
