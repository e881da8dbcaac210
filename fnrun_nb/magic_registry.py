"""The magics' pools: which live pool a cell runs on, when it is restarted, and ``%fnrun``'s
view of them.

::

    %%fnrun HANDLER ...         ──PoolRegistry.pool_for──▶ PoolEntry  (one local Pool per
                                                           resolved command + directory)
    %%fnrun HANDLER --dask A    ──PoolRegistry.dask_pool_for──▶ DaskEntry  (one DaskPool per
                                                           address, handler, directory and
                                                           the settings the cell gave)
    %fnrun pools|stop|restart   ──find / forget / restart / table──▶ the same entries

A local pool is restarted when a cell asks for different ``-w/-t/--wait`` settings, when
the handler file changed on disk (size/mtime, confirmed by hash), or on ``--restart``;
:meth:`PoolRegistry.pool_for` says why, and the magics print it.  Settings a cell leaves
out keep the pool's current ones (a new pool takes the defaults), so a cell without
``-w`` never undoes another cell's ``-w 8``.  The registry belongs to one
``FnrunMagics`` instance, never to module globals; ``close_all`` ends every pool in it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from IPython.core.error import UsageError

from .errors import FnrunError, HandlerStartError
from .front import Pool, Runner
from .invoker import resolve_command
from .magic_args import CellOptions, setting_option
from .magic_views import CallFailed, PoolRow, PoolTable
from .settings import DEFAULTS, PoolSettings

if TYPE_CHECKING:
    from .batch import Batch

__all__ = ["DaskEntry", "Entry", "PoolEntry", "PoolRegistry"]

_HASH_LIMIT = 64 * 1024 * 1024  # larger files (a big binary) are compared by size+mtime only


@dataclass(frozen=True)
class _Fingerprint:
    """What a watched file looked like when its pool started."""

    path: str
    mtime_ns: int
    size: int
    digest: str | None


def _fingerprint(path: str) -> _Fingerprint | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    digest = None
    if st.st_size <= _HASH_LIMIT:
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            digest = None
    return _Fingerprint(path, st.st_mtime_ns, st.st_size, digest)


def _watched_files(argv: list[str], cwd: str) -> list[str]:
    """The files whose change means "the handler changed": the script arguments that are
    files (``node handler.js``, ``python h.py``), else the program itself."""
    scripts = [
        p for p in (os.path.join(cwd, a) for a in argv[1:] if not a.startswith("-"))
        if os.path.isfile(p)
    ]
    return [os.path.abspath(p) for p in scripts] if scripts else [argv[0]]


@dataclass
class PoolEntry:
    """One local pool of the registry, with what is needed to decide a restart."""

    handler: str
    """The HANDLER as first typed: the pool's name in notes and in ``%fnrun pools``."""
    argv: list[str]
    cwd: str
    pool: Pool
    files: list[_Fingerprint] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        """Its key in the registry: the resolved command and the directory."""
        return (tuple(self.argv), self.cwd)

    def changed_file(self) -> str | None:
        """The first watched file whose content changed since the pool started.

        A file whose mtime changed but whose hash did not (``touch``) is re-stamped,
        not a change."""
        for i, fp in enumerate(self.files):
            try:
                st = os.stat(fp.path)
            except OSError:
                return fp.path  # removed or renamed: the next start will say why
            if st.st_mtime_ns == fp.mtime_ns and st.st_size == fp.size:
                continue
            now = _fingerprint(fp.path)
            if now is None or now.digest is None or now.digest != fp.digest or now.size != fp.size:
                return fp.path
            self.files[i] = now
        return None


@dataclass
class DaskEntry:
    """A ``--dask`` pool of the registry, with the calls the magics ran on it (a
    DaskPool counts nothing itself: its calls are rows of the batches it returns)."""

    handler: str
    address: str
    cwd: str
    command: str | list[str]
    given: dict[str, Any]
    """The settings the cell gave (by ``PoolSettings`` name); the others are defaults."""
    pool: Runner  # a DaskPool; typed by its protocol so that distributed loads only for --dask
    started: float = field(default_factory=time.monotonic)
    calls: int = 0
    failures: int = 0

    @property
    def key(self) -> tuple[Any, ...]:
        """Its key in the registry: a cell with the same address, handler, directory
        and settings reuses it."""
        return _dask_key(self.address, self.handler, self.cwd, self.given)

    def count(self, batch: Batch | None) -> None:
        """Add a batch's calls: every row but the ``cancelled`` ones, which never ran."""
        if batch is None:
            return
        outcome = batch.df["outcome"]
        ran = outcome != "cancelled"
        self.calls += int(ran.sum())
        self.failures += int((ran & (outcome != "ok")).sum())


def _dask_key(address: str, handler: str, cwd: str, given: dict[str, Any]) -> tuple[Any, ...]:
    return (address, handler, cwd, tuple(sorted(given.items())))


Entry = PoolEntry | DaskEntry


class PoolRegistry:
    """The live pools of one ``FnrunMagics``: local pools, then ``--dask`` pools."""

    def __init__(self) -> None:
        self.local: dict[tuple[tuple[str, ...], str], PoolEntry] = {}
        self.dask: dict[tuple[Any, ...], DaskEntry] = {}

    # --- local pools ------------------------------------------------------------------

    def resolve(self, handler: str, cwd: str) -> list[str]:
        """The argv of ``handler`` run from ``cwd``; ``UsageError`` when it cannot run."""
        # A HANDLER that names an existing file is that file, even with spaces in its
        # path; anything else is a command line.
        command: str | list[str] = (
            [handler] if os.path.isfile(os.path.join(cwd, handler)) else handler
        )
        try:
            return resolve_command(command, cwd)
        except HandlerStartError as exc:
            # "./h.py: No such file or directory" names what failed; say HANDLER once.
            reason = exc.reason.removeprefix(f"{handler}: ")
            raise UsageError(f"cannot start handler {handler!r}: {reason}") from None
        except ValueError as exc:
            raise UsageError(f"HANDLER {handler!r}: {exc}") from None

    def pool_for(self, opts: CellOptions) -> tuple[PoolEntry, str | None]:
        """The live pool for ``opts.handler`` in the current directory, started or
        restarted as the options and the handler file require, and why it was restarted
        (``None``: it was not; ``""``: it had been closed, so it starts afresh quietly)."""
        handler = opts.handler
        cwd = os.getcwd()
        argv = self.resolve(handler, cwd)
        key = (tuple(argv), cwd)
        given = opts.pool_settings()
        entry = self.local.get(key)
        if entry is None:
            new = self._start(handler, argv, cwd, DEFAULTS.replace(**given))
            self.local[key] = new
            return new, None
        current = entry.pool.settings
        reason = None
        if entry.pool.closed:
            reason = ""  # closed behind our back (pool.close()): start afresh, quietly
        elif opts.restart:
            reason = "restarted as asked (--restart)"
        else:
            diffs = [
                f"{setting_option(name)} {_number(old)} -> {_number(new)}"
                for name, old, new in current.changes(current.replace(**given))
            ]
            changed = entry.changed_file()
            if changed is not None:
                reason = f"{os.path.basename(changed)} changed on disk"
            elif diffs:
                reason = "new settings: " + ", ".join(diffs)
        if reason is None:
            return entry, None
        self.forget(entry)
        new = self._start(entry.handler, argv, cwd, current.replace(**given))
        self.local[key] = new
        return new, reason

    def _start(self, handler: str, argv: list[str], cwd: str, settings: PoolSettings) -> PoolEntry:
        files = [fp for fp in map(_fingerprint, _watched_files(argv, cwd)) if fp is not None]
        try:
            # Named as typed: reprs and batches show HANDLER, not this machine's argv.
            pool = Pool(argv, cwd=cwd, name=handler, **settings.as_dict())
        except FnrunError as exc:
            raise CallFailed(exc, handler) from exc
        return PoolEntry(handler, argv, cwd, pool, files)

    # --- --dask pools -----------------------------------------------------------------

    def dask_pool_for(self, address: str, opts: CellOptions) -> DaskEntry:
        """The DaskPool for ``opts.handler`` on the cluster at ``address``: the one kept
        for the same address, handler, directory and given settings, else a new one
        (also on ``--restart``, or when it was closed)."""
        handler = opts.handler
        cwd = os.getcwd()
        path = os.path.join(cwd, handler)
        # The workers resolve the command themselves (their Python runs a .py file).
        command: str | list[str] = [path] if os.path.isfile(path) else handler
        given = opts.pool_settings()
        entry = self.dask.get(_dask_key(address, handler, cwd, given))
        if entry is None or entry.pool.closed or opts.restart:
            if entry is not None:
                self.forget(entry)
            entry = self._start_dask(handler, address, cwd, command, given)
        return entry

    def _start_dask(
        self, handler: str, address: str, cwd: str, command: str | list[str],
        given: dict[str, Any],
    ) -> DaskEntry:
        """A new DaskPool for ``handler`` on the cluster at ``address``, registered."""
        from .dask import DaskPool  # distributed loads only when a cell asks for it

        try:
            # Batches name the handler as typed, not its absolute path.
            dpool = DaskPool(address, command, name=handler, **DEFAULTS.replace(**given).as_dict())
        except FnrunError as exc:
            raise CallFailed(exc, handler) from exc
        except OSError as exc:  # no scheduler at that address
            raise UsageError(f"--dask {address}: {exc}") from None
        entry = DaskEntry(handler, address, cwd, command, dict(given), dpool)
        self.dask[entry.key] = entry
        return entry

    # --- both kinds -------------------------------------------------------------------

    def find(self, target: str) -> list[Entry]:
        """The pools a ``%fnrun`` HANDLER argument names: by resolved command in the
        current directory, else by the name the pool was started with or its file name.
        Local pools come first, then ``--dask`` pools (named as their cell named them).
        ``UsageError`` when none is live."""
        if target == "all":
            return [*self.local.values(), *self.dask.values()]
        cwd = os.getcwd()
        try:
            argv = self.resolve(target, cwd)
        except UsageError:
            argv = None
        here: list[Entry] = (
            [self.local[(tuple(argv), cwd)]] if argv and (tuple(argv), cwd) in self.local else []
        )
        found: list[Entry] = here or [
            e for e in self.local.values()
            if target in (e.handler, os.path.basename(e.handler))
            or (argv is not None and tuple(e.argv) == tuple(argv))
        ]
        found += [
            d for d in self.dask.values()
            if target in (d.handler, os.path.basename(d.handler))
        ]
        if not found:
            raise UsageError(f"%fnrun: no live pool for {target!r} (see %fnrun pools)")
        return found

    def one(self, target: str) -> Entry:
        """The one pool ``target`` names; ``UsageError`` when it names none or several."""
        found = self.find(target)
        if len(found) > 1:
            where = (
                "locally and on Dask" if any(isinstance(e, DaskEntry) for e in found)
                else "in different directories"
            )
            raise UsageError(
                f"%fnrun: {target!r} names {len(found)} pools (started {where}); "
                "cd to one of them"
            )
        return found[0]

    @overload
    def restart(self, entry: PoolEntry) -> PoolEntry: ...

    @overload
    def restart(self, entry: DaskEntry) -> DaskEntry: ...

    def restart(self, entry: Entry) -> Entry:
        """Close ``entry``'s pool and start a new one with its settings, registered."""
        self.forget(entry)
        if isinstance(entry, DaskEntry):
            return self._start_dask(
                entry.handler, entry.address, entry.cwd, entry.command, entry.given
            )
        new = self._start(entry.handler, entry.argv, entry.cwd, entry.pool.settings)
        self.local[new.key] = new
        return new

    def forget(self, entry: Entry) -> None:
        """Remove ``entry`` from the registry and close its pool."""
        if isinstance(entry, DaskEntry):
            del self.dask[entry.key]
        else:
            del self.local[entry.key]
        entry.pool.close()

    def entries(self) -> Iterator[PoolEntry]:
        """The live local pools, oldest first."""
        return iter(list(self.local.values()))

    def close_all(self) -> int:
        """Close every pool of the registry; the number closed."""
        entries: list[Entry] = [*self.local.values(), *self.dask.values()]
        self.local.clear()
        self.dask.clear()
        for e in entries:
            e.pool.close()
        return len(entries)

    def table(self) -> PoolTable:
        """The value ``%fnrun pools`` shows: local pools, then ``--dask`` pools."""
        now = time.monotonic()
        rows = []
        for e in self.local.values():
            snap = e.pool.snapshot()
            rows.append(
                PoolRow(
                    handler=e.handler,
                    command=shlex.join(e.argv),
                    cwd=e.cwd,
                    workers=e.pool.workers,
                    timeout=e.pool.timeout,
                    max_wait=e.pool.settings.max_wait,
                    calls=snap.calls,
                    failures=snap.failures,
                    replacements=snap.replacements,
                    uptime=now - e.started,
                )
            )
        for d in self.dask.values():
            rows.append(
                PoolRow(
                    handler=d.handler,
                    command=shlex.join(d.pool.command),
                    cwd=d.cwd,
                    workers=d.pool.workers,
                    timeout=d.pool.timeout,
                    max_wait=d.pool.settings.max_wait,
                    calls=d.calls,
                    failures=d.failures,
                    replacements=None,
                    uptime=now - d.started,
                    where=f"dask {d.address}",
                )
            )
        return PoolTable(tuple(rows))


def _number(value: float | str | None) -> str:
    """A setting's value in a restart note: ``2.5``, ``script`` (``--protocol``), or
    ``none`` (``--max-rss`` unset)."""
    if isinstance(value, str):
        return value
    return "none" if value is None else f"{value:g}"
