"""``Profile``: where the time of some calls went, as a table and a flame graph.

::

    SDK payloads (one per call, the ``profile`` column)  ─┐
    py-spy raw output (one per worker process)           ─┴▶ Profile(stacks) ─▶ top()
                                                                            ├▶ flamegraph()
                                                                            └▶ save(speedscope | collapsed)

A profile is a multiset of stacks: ``stacks`` maps a stack (a tuple of frames, root
first, each frame ``"function (file:first_line)"``) to the samples that saw it.
Both profilers give that shape, so everything here works the same for both.  The
frames of the SDK's serve loop are never in a stack (the SDK leaves them out, and
stacks read by py-spy lose them here), and idle time is not sampled at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._sampler import decode_payload, parse_frame

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FlameGraph", "Profile", "ProfilerUnavailable"]

Stack = tuple[str, ...]

# Frames of the SDK's own loop, should a profiler outside the process see them.
_SDK_FILES = (
    os.path.join("fnrun_nb", "handler.py"),
    os.path.join("fnrun_nb", "_sampler.py"),
)
_TOP_COLUMNS = ("function", "file", "line", "self_pct", "total_pct", "samples")


class ProfilerUnavailable(RuntimeError):
    """The profiler asked for cannot run here (not installed, not permitted, or it
    cannot read this kind of handler); the message says why and what works."""


def _shown(frame: str) -> str:
    """``frame`` as displays show it: a file under the working directory relative to
    it (``handlers/pricer.py``), any other as it is.  ``top()`` keeps full paths."""
    function, file, line = parse_frame(frame)
    here = os.getcwd() + os.sep
    if not file.startswith(here):
        return frame
    return f"{function} ({file[len(here):]}:{line})"


def _strip_sdk(stack: Stack) -> Stack:
    """``stack`` without the frames from the SDK's serve loop down (the loop calls the
    handler; what the handler calls is below it)."""
    for i in range(len(stack) - 1, -1, -1):
        if parse_frame(stack[i])[1].endswith(_SDK_FILES):
            return stack[i + 1 :]
    return stack


@dataclass(frozen=True, eq=False)
class Profile:
    """Sampled stacks of ``calls`` calls; see the module doc.

    ``stacks`` maps each stack (root first) to its samples; ``profiler`` is
    ``"sdk"`` (the handler SDK's in-process sampler) or ``"py-spy"``;
    ``interval_s`` the time between two samples.  ``no_profile`` counts the calls
    that were asked for a profile and answered without one (a handler that ignores
    ``FNRUN_NB_PROFILE``); ``failed`` the calls that did not answer at all (crashed,
    timed out), whose stacks are lost.  ``by_call`` maps each call's row label to its
    own Profile when the profiler attributes stacks to calls (the SDK's does), else
    it is ``None`` (py-spy samples whole processes).
    """

    stacks: Mapping[Stack, int]
    calls: int
    profiler: str = "sdk"
    interval_s: float | None = None
    no_profile: int = 0
    failed: int = 0
    by_call: Mapping[Any, Profile] | None = field(default=None, repr=False)

    # --- made from -------------------------------------------------------------------

    @classmethod
    def from_payloads(
        cls, payloads: Iterable[tuple[Any, str | None]], *, failed: int = 0
    ) -> Profile:
        """The profile of SDK payloads (``FNRUN_NB_PROFILE_DATA``), given as
        ``(row label, payload or None)`` pairs.  A payload that does not decode
        counts as no profile."""
        total: dict[Stack, int] = {}
        by_call: dict[Any, Profile] = {}
        interval: float | None = None
        missing = 0
        for label, payload in payloads:
            if not payload:
                missing += 1
                continue
            try:
                stacks, interval = decode_payload(payload)
            except ValueError:
                missing += 1
                continue
            own: dict[Stack, int] = {}
            for text, count in stacks.items():
                key = tuple(text.split(";"))
                own[key] = own.get(key, 0) + count
                total[key] = total.get(key, 0) + count
            by_call[label] = cls(own, 1, "sdk", interval)
        return cls(total, len(by_call), "sdk", interval, missing, failed, by_call)

    @classmethod
    def from_collapsed(
        cls, text: str, *, calls: int, profiler: str, interval_s: float | None = None
    ) -> Profile:
        """The profile of collapsed-stack text (``a;b;c 12`` per line), such as
        py-spy's raw output; the SDK's loop frames are dropped.  Raises
        ``ValueError`` naming a line that has no sample count."""
        stacks: dict[Stack, int] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                raise ValueError(f"collapsed stacks, line {number}: no sample count: {line[:80]!r}")
            key = _strip_sdk(tuple(stack.split(";")))
            if key:
                stacks[key] = stacks.get(key, 0) + int(count)
        return cls(stacks, calls, profiler, interval_s)

    # --- reading ---------------------------------------------------------------------

    @property
    def samples(self) -> int:
        """Samples in all stacks."""
        return sum(self.stacks.values())

    def top(self, n: int | None = 20) -> pd.DataFrame:
        """One row per function, ``n`` of them (all with ``None``), by ``self_pct``.

        Columns: ``function``, ``file``, ``line`` (the line the function is defined
        on), ``self_pct`` (percent of samples with the function running, not a callee),
        ``total_pct`` (percent of samples with the function anywhere on the stack, once
        per sample however deep it recurses), ``samples`` (those samples, a count).
        Ties are broken by ``total_pct``, then by name.
        """
        import pandas as pd

        total = self.samples
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        for stack, count in self.stacks.items():
            own[stack[-1]] = own.get(stack[-1], 0) + count
            for frame in set(stack):
                inclusive[frame] = inclusive.get(frame, 0) + count
        rows = []
        for frame, count in inclusive.items():  # full paths: this is data, not display
            function, file, line = parse_frame(frame)
            rows.append((function, file, line, 100.0 * own.get(frame, 0) / total,
                         100.0 * count / total, count))
        rows.sort(key=lambda r: (-r[3], -r[4], r[0], r[1], r[2]))
        df = pd.DataFrame(rows[:n] if n is not None else rows, columns=list(_TOP_COLUMNS))
        return df.astype({"line": "int64", "samples": "int64", "self_pct": "float64",
                          "total_pct": "float64"})

    def flamegraph(self, *, width: int = 1000, min_pct: float = 0.5) -> FlameGraph:
        """The flame graph of these stacks: a self-contained SVG shown inline in
        Jupyter (hover a box for its function, file and share), and an indented text
        tree everywhere else (``print(profile.flamegraph())``).  Boxes under
        ``min_pct`` percent of the samples are left out of both."""
        return FlameGraph(self, width, min_pct)

    # --- saving ----------------------------------------------------------------------

    def collapsed(self) -> str:
        """Brendan Gregg's collapsed stacks: ``root;...;leaf samples`` per line."""
        lines = [f"{';'.join(stack)} {count}" for stack, count in sorted(self.stacks.items())]
        return "\n".join(lines) + ("\n" if lines else "")

    def speedscope(self, name: str = "fnrun_nb profile") -> dict[str, Any]:
        """The profile as a speedscope document (a dict; ``save`` writes it as JSON)."""
        index: dict[str, int] = {}
        frames: list[dict[str, Any]] = []
        samples: list[list[int]] = []
        weights: list[int] = []
        for stack, count in sorted(self.stacks.items()):
            ids = []
            for frame in stack:
                i = index.get(frame)
                if i is None:
                    function, file, line = parse_frame(frame)
                    i = index[frame] = len(frames)
                    entry: dict[str, Any] = {"name": function}
                    if file:
                        entry["file"] = file
                        entry["line"] = line
                    frames.append(entry)
                ids.append(i)
            samples.append(ids)
            weights.append(count)
        return {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": frames},
            "profiles": [{
                "type": "sampled",
                "name": f"{name}: {self.calls} calls ({self.profiler})",
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }],
            "name": name,
            "activeProfileIndex": 0,
            "exporter": "fnrun_nb",
        }

    def save(self, path: str | os.PathLike[str], format: str = "speedscope") -> Path:
        """Write the profile to ``path``: ``format="speedscope"`` (JSON that
        https://www.speedscope.app opens) or ``"collapsed"`` (for flamegraph.pl,
        inferno, speedscope too).  Returns the path; ``ValueError`` for another format."""
        out = Path(path)
        if format == "speedscope":
            out.write_text(json.dumps(self.speedscope(out.stem)), encoding="utf-8")
        elif format == "collapsed":
            out.write_text(self.collapsed(), encoding="utf-8")
        else:
            raise ValueError(f"format must be 'speedscope' or 'collapsed', not {format!r}")
        return out

    # --- display ---------------------------------------------------------------------

    def _headline(self) -> str:
        rate = f", every {self.interval_s * 1e3:.3g} ms" if self.interval_s else ""
        extra = ""
        if self.no_profile:
            extra += f", {self.no_profile} calls returned no profile"
        if self.failed:
            extra += f", {self.failed} failed calls"
        head = f"Profile of {self.calls} calls ({self.profiler})"
        return f"{head}: {self.samples} samples{rate}{extra}"

    def __repr__(self) -> str:
        return f"<{self._headline()}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        if cycle:
            p.text(repr(self))
            return
        lines = [self._headline()]
        if self.samples:
            table = self._top_shown()
            lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        p.text("\n".join(lines))

    def _top_shown(self) -> pd.DataFrame:
        """``top(10)`` with the files as displays show them (see ``_shown``)."""
        top = self.top(10)
        here = os.getcwd() + os.sep
        top["file"] = [f[len(here):] if f.startswith(here) else f for f in top["file"]]
        return top

    def _repr_html_(self) -> str:
        body = ""
        if self.samples:
            body = self.flamegraph().svg(title=False) + self._top_shown().to_html(
                index=False, float_format=lambda v: f"{v:.1f}"
            )
        return f"<div><b>{escape(self._headline())}</b>{body}</div>"


# --- the flame graph --------------------------------------------------------------------


class _Node:
    __slots__ = ("name", "count", "children")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.children: dict[str, _Node] = {}


def _tree(stacks: Mapping[Stack, int]) -> _Node:
    root = _Node("all")
    for stack, count in sorted(stacks.items()):
        root.count += count
        node = root
        for frame in stack:
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = _Node(frame)
            child.count += count
            node = child
    return root


def _colour(name: str) -> str:
    # Warm colours, fixed per function (the same function has one colour everywhere).
    h = hashlib.md5(name.encode("utf-8")).digest()
    return f"rgb({205 + h[0] % 50},{80 + h[1] % 130},{h[2] % 60})"


class FlameGraph:
    """A flame graph of a :class:`Profile`: SVG in Jupyter (``_repr_html_``, or
    ``.svg()``), an indented text tree in a terminal (``str()``)."""

    ROW = 17

    def __init__(self, profile: Profile, width: int, min_pct: float) -> None:
        self.profile = profile
        self.width = width
        self.min_pct = min_pct
        self._root = _tree(profile.stacks)

    def text(self) -> str:
        """The call tree, one line per box: total percent, self percent, function and
        location, indented by depth, children by share."""
        root = self._root
        lines = [self.profile._headline()]
        if not root.count:
            return lines[0] + "\n(no samples)"
        cut = root.count * self.min_pct / 100

        def walk(node: _Node, depth: int) -> None:
            for child in sorted(node.children.values(), key=lambda c: (-c.count, c.name)):
                if child.count < cut:
                    continue
                own = child.count - sum(c.count for c in child.children.values())
                lines.append(
                    f"{100 * child.count / root.count:6.1f}% {100 * own / root.count:6.1f}%  "
                    f"{'  ' * depth}{_shown(child.name)}"
                )
                walk(child, depth + 1)

        lines.append(" total   self   function (file:line)")
        walk(root, 0)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def svg(self, *, title: bool = True) -> str:
        """The flame graph as one self-contained SVG document (no script, no fetch):
        root at the bottom, a box's width its share of samples, hover for details;
        ``title`` puts the profile's headline above it."""
        root = self._root
        total = max(root.count, 1)
        boxes: list[tuple[int, float, float, _Node]] = []
        cut = total * self.min_pct / 100

        def place(node: _Node, depth: int, x: float) -> None:
            boxes.append((depth, x, node.count / total * self.width, node))
            for child in sorted(node.children.values(), key=lambda c: c.name):
                if child.count >= cut:
                    place(child, depth + 1, x)
                x += child.count / total * self.width

        place(root, 0, 0.0)
        depth_max = max(d for d, *_ in boxes)
        height = (depth_max + 1) * self.ROW + (24 if title else 4)
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
            f'viewBox="0 0 {self.width} {height}" font-family="monospace" font-size="11">',
        ]
        if title:
            parts.append(
                f'<text x="4" y="14" font-size="12">{escape(self.profile._headline())}</text>'
            )
        for depth, x, w, node in boxes:
            y = height - (depth + 1) * self.ROW
            function, file, line = parse_frame(_shown(node.name))
            pct = 100 * node.count / total
            where = f" ({file}:{line})" if file else ""
            tip = f"{function}{where}: {pct:.1f}% ({node.count} samples)"
            fill = "rgb(200,200,200)" if node is root else _colour(function + file)
            label = function if node is not root else "all calls"
            chars = int((w - 6) / 6.6)
            if len(label) <= chars:
                shown = label
            else:
                shown = label[: chars - 2] + ".." if chars > 3 else ""
            parts.append(
                f'<g><title>{escape(tip)}</title><rect x="{x:.2f}" y="{y}" '
                f'width="{max(w - 0.5, 0.1):.2f}" height="{self.ROW - 1}" rx="2" fill="{fill}"/>'
                + (f'<text x="{x + 3:.2f}" y="{y + 12}">{escape(shown)}</text>' if shown else "")
                + "</g>"
            )
        parts.append("</svg>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return f"<div>{self.svg()}</div>"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the SVG to ``path`` (opens in any browser); returns the path."""
        out = Path(path)
        out.write_text(self.svg(), encoding="utf-8")
        return out
