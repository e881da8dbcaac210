"""``%fnrun profile BATCH_NAME [--slowest N]`` and what ``%%fnrun ... --profile`` shows.

::

    %fnrun profile b --slowest 20  ──parse_profile_line──▶ (name, n)
                                   ──profile_batch(namespace)──▶ b.profile_rows(b.slowest(n))
                                                                 ──▶ Profile (displayed)

The line magic re-runs the ``n`` slowest ok rows of the batch named ``BATCH_NAME``
in the user's namespace (on the pool that ran it while it is open, else on a new one
started from the batch's record) with profiling on,
and returns their :class:`~fnrun_nb.batch.profile.Profile`: a notebook shows its
flame graph and top functions.  Usage mistakes raise IPython's ``UsageError``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from .batch import Batch, Profile

__all__ = ["PROFILE_USAGE", "parse_profile_line", "profile_batch", "show_cell_profile"]

PROFILE_USAGE = "%fnrun profile BATCH_NAME [--slowest N]"
DEFAULT_SLOWEST = 20


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{PROFILE_USAGE}: {message}")


def parse_profile_line(words: Sequence[str]) -> tuple[str, int]:
    """``(batch name, n)`` of the words after ``profile``.  Raises ``UsageError``."""
    parser = _Parser(prog="%fnrun profile", add_help=False)
    parser.add_argument("batch")
    parser.add_argument("--slowest", type=int, default=DEFAULT_SLOWEST)
    ns = parser.parse_args(list(words))
    if ns.slowest < 1:
        raise UsageError(f"{PROFILE_USAGE}: --slowest must be at least 1, got {ns.slowest}")
    if not ns.batch.isidentifier():
        raise UsageError(f"{PROFILE_USAGE}: BATCH_NAME must be a variable name, got {ns.batch!r}")
    return ns.batch, ns.slowest


def profile_batch(namespace: Mapping[str, Any], words: Sequence[str]) -> Profile:
    """The profile of the slowest rows of the batch a ``%fnrun profile`` line names."""
    from .batch import Batch

    name, n = parse_profile_line(words)
    if name not in namespace:
        raise UsageError(f"%fnrun profile: no variable {name!r} (store a batch with -o {name})")
    batch = namespace[name]
    if not isinstance(batch, Batch):
        raise UsageError(
            f"%fnrun profile: {name} is a {type(batch).__name__}, not a Batch "
            "(the value of a batch cell, or pool.map(...))"
        )
    rows = batch.slowest(n)
    if rows.empty:
        raise UsageError(f"%fnrun profile: {name} has no ok rows to profile")
    try:
        return batch.profile_rows(rows)
    except ValueError as exc:
        raise UsageError(f"%fnrun profile: {exc}") from exc


def show_cell_profile(batch: Batch) -> None:
    """Display the profile of a ``--profile`` cell's batch under the cell (IPython's
    ``display``, a flame graph in a notebook), before the batch itself is shown."""
    from IPython.display import display

    profile = batch.profile
    if profile is not None:
        display(profile)  # type: ignore[no-untyped-call]
