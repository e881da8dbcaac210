"""What a conformance check found: one ``CheckResult`` per check, and the
``CheckReport`` that holds them (a linter's text, an HTML table, a DataFrame, JSON).

Pure values: nothing here starts a process.  pandas is imported only by
:attr:`CheckReport.df`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "STATUSES", "CheckReport", "CheckResult"]

STATUSES = ("pass", "warn", "fail", "skip")
"""Every status a check can have, best first (``skip`` says why it did not run)."""

COLUMNS = ("check", "status", "finding", "hint", "seconds")
"""The columns of :attr:`CheckReport.df`, one row per check, in this order."""

# The HTML colours of the statuses, the ones ipywidgets' bar styles use.
_COLOURS = {"pass": "#5cb85c", "warn": "#f0ad4e", "fail": "#d9534f", "skip": "#999999"}


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict.

    ``check`` is its name (``"basic_call"``...), ``status`` one of :data:`STATUSES`,
    ``finding`` one line with the measured fact, ``hint`` how to fix it (empty for a
    pass), ``seconds`` how long the check took.
    """

    check: str
    status: str
    finding: str
    hint: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def as_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict, keyed by :data:`COLUMNS`."""
        return {
            "check": self.check,
            "status": self.status,
            "finding": self.finding,
            "hint": self.hint,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class CheckReport:
    """Every check's verdict on one handler, in the order they ran.

    ``ok`` is True when no check failed (warnings and skips allowed).  ``df`` is one
    row per check (:data:`COLUMNS`); ``report["stdin_eof"]`` is one check's
    :class:`CheckResult` (``KeyError`` for a name not in the report); iterating
    yields the results.  ``repr`` reads like a linter's output; in a notebook the
    report is an HTML table.
    """

    handler: str
    results: tuple[CheckResult, ...]
    quick: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        """The checks whose status is ``fail``."""
        return [r for r in self.results if r.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        """The checks whose status is ``warn``."""
        return [r for r in self.results if r.status == "warn"]

    @property
    def df(self) -> pd.DataFrame:
        """One row per check: ``check``, ``status``, ``finding``, ``hint``, ``seconds``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "check": pd.Series([r.check for r in self.results], dtype=object),
                "status": pd.Series([r.status for r in self.results], dtype=object),
                "finding": pd.Series([r.finding for r in self.results], dtype=object),
                "hint": pd.Series([r.hint for r in self.results], dtype=object),
                "seconds": pd.Series([r.seconds for r in self.results], dtype="float64"),
            },
            columns=list(COLUMNS),
        )

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.check == name:
                return r
        raise KeyError(f"no check named {name!r} in this report")

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def counts(self) -> dict[str, int]:
        """How many checks have each status, in :data:`STATUSES` order."""
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def headline(self) -> str:
        """``"fnrun check ./h.py: 1 failed, 2 warnings, 8 passed (4.21 s, full)"``."""
        c = self.counts()
        parts = [f"{c['fail']} failed", f"{c['warn']} warning{'s' if c['warn'] != 1 else ''}",
                 f"{c['pass']} passed"]
        if c["skip"]:
            parts.append(f"{c['skip']} skipped")
        mode = "quick" if self.quick else "full"
        verdict = "OK" if self.ok else "FAILED"
        took = f"{self.seconds:.2f} s, {mode}"
        return f"fnrun check {self.handler}: {verdict}, {', '.join(parts)} ({took})"

    def to_text(self) -> str:
        """The report as a linter prints it: a headline, then one line per check
        (status, name, finding) with its fix indented under each that is not a pass."""
        width = max((len(r.check) for r in self.results), default=0)
        lines = [self.headline()]
        for r in self.results:
            lines.append(f"  {r.status.upper():<4}  {r.check:<{width}}  {r.finding}")
            if r.hint and r.status != "pass":
                lines.append(f"        {'':<{width}}  fix: {r.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """``{"ok": bool, "checks": [one object per row of df]}``: the JSON report."""
        return {"ok": self.ok, "checks": [r.as_dict() for r in self.results]}

    def to_json(self, **dumps: Any) -> str:
        """:meth:`to_dict` as JSON text (``dumps`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, **dumps)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.to_text())

    def _repr_html_(self) -> str:
        rows = []
        for r in self.results:
            colour = _COLOURS[r.status]
            hint = r.hint if r.status != "pass" else ""
            rows.append(
                "<tr>"
                f"<td style='text-align:left'><code>{html.escape(r.check)}</code></td>"
                f"<td style='text-align:left;color:{colour};font-weight:bold'>{r.status}</td>"
                f"<td style='text-align:left'>{html.escape(r.finding)}</td>"
                f"<td style='text-align:left'>{html.escape(hint)}</td>"
                f"<td style='text-align:right'>{r.seconds:.3f} s</td>"
                "</tr>"
            )
        return (
            f"<div><p><b>{html.escape(self.headline())}</b></p>"
            "<table><thead><tr><th style='text-align:left'>check</th>"
            "<th style='text-align:left'>status</th><th style='text-align:left'>finding</th>"
            "<th style='text-align:left'>fix</th><th style='text-align:right'>seconds</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
        )
