"""The idle queue: which slot a caller tries next, and the interrupt-safe take.

::

    publish, release, give back ──put(slot)──▶ SimpleQueue ──▶ fast take   for slot in idle.take: break
                                                          │                for worker in slot.claim: break
                                                          └──▶ acquire()   wait ≤ max_wait, 50 ms polls,
                                                                           scan the slots themselves

The queue only says which slots to try: a slot whose worker is gone (or was claimed
through another entry) is skipped.  ``CLOSED`` is put on close and wakes every waiter.

The interrupt-safe take.  A ``KeyboardInterrupt`` can be raised wherever the
interpreter checks for signals, including the moment a C call returns, before its
result is stored.  So nothing here returns a slot or a worker: ``worker = f()`` could
lose one.  The fast take is a ``for`` loop over a C iterator (no signal check between
``FOR_ITER`` and the store of its value); the slow take appends into the caller's
lists (``box`` for the slot, ``held`` for its worker) inside one C call each, so
wherever an interrupt lands the caller's handler knows what it holds and gives it
back (``give_back``, idempotent).
"""

from __future__ import annotations

import functools
import queue
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ._slots import Slot
from ._starts import StartRule
from ._worker import Worker
from .errors import CallNotStarted, PoolClosed

__all__ = ["CLOSED", "Gate", "IdleQueue"]

_perf_counter = time.perf_counter
_Empty = queue.Empty
_NEVER = object()  # a sentinel no queue ever returns: ``iter(get, _NEVER)`` never ends
_POLL = 0.05  # seconds between a waiter's looks at the slots and the start rule

CLOSED = Slot(-1)
"""Put in the idle queue on close: wakes every waiter.  A slot that never has a
worker, so a claim from it fails like a claim from any slot whose worker is gone."""


class Gate(Protocol):
    """What ``InvokerPool.call`` reads to know whether it may still start a call: once
    ``stop`` is true, a call that has not started raises ``CallNotStarted``."""

    stop: bool


class IdleQueue:
    """The slots with a worker to try, for one pool.  Any thread may use it; no lock."""

    __slots__ = ("take", "put", "_get", "_slots", "_starts", "_is_closed")

    def __init__(
        self, slots: Sequence[Slot], starts: StartRule, is_closed: Callable[[], bool]
    ) -> None:
        q: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self.take = iter(q.get_nowait, _NEVER)
        """The fast take: ``for slot in idle.take: break`` (``queue.Empty`` when no
        slot waits)."""
        self.put: Callable[[Slot], None] = q.put
        """Tell a waiter ``slot`` may have an idle worker (the queue's C ``put``)."""
        self._get = q.get
        self._slots = slots
        self._starts = starts
        self._is_closed = is_closed

    def close(self) -> None:
        """Wake every waiter with ``PoolClosed``."""
        self.put(CLOSED)

    def give_back(self, slot: Slot, held: list[Worker]) -> None:
        """Return the worker in ``held`` (claimed, its call not started or done) to
        ``slot`` and tell a waiter.  Idempotent: the worker moves inside one C call."""
        slot.give_back(held)
        self.put(slot)

    def acquire(
        self, t_request: float, max_wait: float, box: list[Slot], held: list[Worker],
        gate: Gate | None,
    ) -> None:
        """Wait (at most ``max_wait`` from ``t_request``) until ``box`` holds a slot and
        ``held`` the worker claimed from it.  ``box`` may arrive holding the slot the
        fast take got.

        Raises ``PoolClosed``, ``AvailabilityTimeout``, ``HandlerStartError`` (the
        handler cannot start, or no replacement came within ``max_wait``) or
        ``CallNotStarted`` (``gate.stop``); ``box`` and ``held`` then say what the
        caller holds.
        """
        get = self._get
        while True:
            if box:
                entry = box[0]
                if entry is CLOSED:
                    self.put(CLOSED)  # wakes the next waiter too
                    raise PoolClosed("the pool is closed")
                if claim_into(entry, held):
                    return
                box.clear()  # its worker is gone, or was claimed through another entry
            if gate is not None and gate.stop:
                raise CallNotStarted("not started: the caller stopped")
            remaining = max_wait - (_perf_counter() - t_request)
            try:
                # Polls every 50 ms so that a handler that cannot start at all fails
                # fast instead of waiting out max_wait.
                wait = min(max(remaining, 0.0), _POLL)
                next(map(box.append, iter(functools.partial(get, True, wait), _NEVER)))
                continue
            except _Empty:
                pass
            # Outside the handler: these errors are not "during handling of Empty".
            if self._is_closed():
                raise PoolClosed("the pool is closed")
            # A worker may be idle with no entry in the queue (a give-back that a
            # Ctrl-C cut short): look at the slots themselves.
            for s in self._slots:
                box.append(s)
                if claim_into(s, held):
                    return
                box.clear()
            if remaining <= 0:
                raise self._starts.unavailable()
            if self._starts.cannot_start():
                raise self._starts.error()


def claim_into(slot: Slot, held: list[Worker]) -> bool:
    """Claim ``slot``'s idle worker into ``held`` inside one C call; False when it has
    none (its worker is busy, gone, or claimed by someone else)."""
    try:
        next(map(held.append, slot.claim))
    except KeyError:
        return False
    return True
