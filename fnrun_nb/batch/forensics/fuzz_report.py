"""What ``fuzz`` returns: :class:`FuzzReport`, one :class:`FuzzFailure` per distinct
failure, each readable as text, HTML and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core import Batch

__all__ = ["FuzzFailure", "FuzzReport"]


@dataclass(frozen=True)
class FuzzFailure:
    """One distinct way the handler failed under fuzzing.

    ``input`` is the minimal input Hypothesis shrank it to (the bytes sent) and
    ``env`` its per-call env; ``first_input`` the first input that failed this way;
    ``count`` the calls that failed this way while generating (shrinking's aside).
    ``outcome`` and ``exit_code`` (``-N`` for signal N) are the call's; for an ``ok``
    call that ``check`` rejected, ``check_error`` says how (``"ValueError: ..."`` or
    ``"check returned False"``).  ``flaky`` is True when Hypothesis could not make it
    fail again (then ``input`` is the smallest input seen failing this way).
    ``command``, ``cwd``, ``process_env`` and ``timeout`` say how the handler ran, for
    :func:`~fnrun_nb.reproducer`.
    """

    signature: str
    input: bytes
    env: dict[str, str]
    first_input: bytes
    count: int
    outcome: str
    exit_code: int | None
    flaky: bool
    check_error: str | None
    error: str | None
    command: list[str]
    handler: str
    cwd: str | None
    process_env: dict[str, str] | None
    timeout: float
    protocol: str = "fnrun"
    """The handler's protocol (``Pool``'s ``protocol``), which a reproducer uses."""

    def __repr__(self) -> str:
        flaky = ", flaky" if self.flaky else ""
        env = f", env={self.env!r}" if self.env else ""
        return (
            f"FuzzFailure({self.signature}: input={self.input!r}{env}, "
            f"count={self.count}{flaky})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: bytes as latin-1 text and as hex."""
        return {
            "signature": self.signature,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "check_error": self.check_error,
            "input_hex": self.input.hex(),
            "input": self.input.decode("latin-1"),
            "env": self.env,
            "first_input_hex": self.first_input.hex(),
            "count": self.count,
            "flaky": self.flaky,
        }


@dataclass(frozen=True)
class FuzzReport:
    """What ``fuzz`` found: ``failures`` (one :class:`FuzzFailure` per distinct
    failure, most frequent first), ``batch`` (every call, with a ``phase`` column:
    ``generate``, ``shrink`` or ``final``), ``calls``, ``seed``.  ``ok`` is True when
    nothing failed; ``interrupted`` when Ctrl-C stopped it (then it is the ``partial``
    of the :class:`~fnrun_nb.errors.Interrupted` that ``fuzz`` raised: what was found
    so far, the pool intact)."""

    failures: list[FuzzFailure]
    batch: Batch
    handler: str
    seed: int | None
    max_examples: int
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def calls(self) -> int:
        return len(self.batch)

    def _headline(self) -> str:
        cut = " (interrupted)" if self.interrupted else ""
        found = (
            "no failure" if self.ok
            else f"{len(self.failures)} distinct failure{'s' * (len(self.failures) != 1)}"
        )
        return f"fuzz {self.handler!r}: {self.calls} calls, {found}{cut}"

    def __repr__(self) -> str:
        lines = [self._headline()]
        for f in self.failures:
            flaky = "  [flaky]" if f.flaky else ""
            env = f" env={f.env!r}" if f.env else ""
            lines.append(
                f"  {f.signature}: minimal input {f.input!r}{env} "
                f"({f.count} failing call{'s' * (f.count != 1)} while generating){flaky}"
            )
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{escape(f.signature)}</td><td><code>{escape(repr(f.input))}</code></td>"
            f"<td>{escape(repr(f.env)) if f.env else ''}</td><td>{f.count}</td>"
            f"<td>{'flaky' if f.flaky else ''}</td></tr>"
            for f in self.failures
        )
        table = (
            "<table><thead><tr><th>failure</th><th>minimal input</th><th>env</th>"
            f"<th>count</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
            if self.failures else ""
        )
        return f"<div><b>{escape(self._headline())}</b></div>{table}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``fnrun-nb fuzz --json`` prints)."""
        return {
            "handler": self.handler,
            "ok": self.ok,
            "calls": self.calls,
            "seed": self.seed,
            "max_examples": self.max_examples,
            "interrupted": self.interrupted,
            "failures": [f.as_dict() for f in self.failures],
        }
