"""The IPython extension: ``%%fnrun`` runs a cell through a warm pool, ``%fnrun`` manages pools.

::

    %%fnrun HANDLER [options]   ──parse_cell (magic_args)──▶ CellRequest
    <body>                      ──FnrunMagics._pool_for──▶ Pool (one per command + cwd,
                                                             reused across cells)
                                ──Pool.invoke / Pool.map──▶ Result | Batch  (returned:
                                                             the displayhook shows it once)

The registry of pools lives on the :class:`FnrunMagics` instance that
``load_ipython_extension`` registers, never in module globals, and
``unload_ipython_extension`` closes every pool it holds.  A pool is restarted, with a
one-line note, when a cell asks for different ``-w/-t/--wait`` settings, when the
handler file changed on disk (size/mtime, confirmed by hash), or on ``--restart``.
Options a cell leaves out keep the pool's current settings (a new pool takes
``Pool``'s defaults), so a cell without ``-w`` never undoes another cell's ``-w 8``.
``--dask`` cells keep their ``DaskPool`` in the same registry: ``%fnrun pools`` lists
it with its scheduler, and ``stop``/``restart`` treat it like a local pool.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, output_can_be_silenced

from .errors import FnrunError, HandlerStartError
from .front import Pool
from .invoker import resolve_command
from .magic_args import (
    LINE_SUBCOMMANDS,
    CellRequest,
    cell_arguments,
    parse_cell,
    parse_line,
)
from .magic_views import CallFailed, JsonResult, PoolRow, PoolTable, StderrView, json_batch

__all__ = ["FnrunMagics", "load_ipython_extension", "unload_ipython_extension"]

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
class _PoolEntry:
    """One pool of the registry, with what is needed to decide a restart."""

    handler: str
    """The HANDLER as first typed: the pool's name in notes and in ``%fnrun pools``."""
    argv: list[str]
    cwd: str
    pool: Pool
    files: list[_Fingerprint] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def settings(self) -> dict[str, float]:
        return {
            "workers": self.pool.workers,
            "timeout": self.pool.timeout,
            "wait": self.pool.config.max_wait,
        }

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
class _DaskEntry:
    """A ``--dask`` pool of the registry, with the calls the magics ran on it (a
    DaskPool counts nothing itself: its calls are rows of the batches it returns)."""

    handler: str
    address: str
    cwd: str
    command: str | list[str]
    settings: dict[str, Any]
    pool: Any  # a DaskPool; typed loosely so that distributed loads only for --dask
    started: float = field(default_factory=time.monotonic)
    calls: int = 0
    failures: int = 0

    @property
    def key(self) -> tuple[Any, ...]:
        """Its key in the registry: a cell with the same address, handler, directory
        and settings reuses it."""
        return _dask_key(self.address, self.handler, self.cwd, self.settings)

    def count(self, batch: Any) -> None:
        """Add a batch's calls: every row but the ``cancelled`` ones, which never ran."""
        if batch is None:
            return
        outcome = batch.df["outcome"]
        ran = outcome != "cancelled"
        self.calls += int(ran.sum())
        self.failures += int((ran & (outcome != "ok")).sum())


def _dask_key(address: str, handler: str, cwd: str, settings: dict[str, Any]) -> tuple[Any, ...]:
    return (address, handler, cwd, tuple(sorted(settings.items())))


_Entry = _PoolEntry | _DaskEntry


_KEYS = {"workers": "workers", "timeout": "timeout", "wait": "max_wait"}
_OPT = {"workers": "-w", "timeout": "-t", "wait": "--wait"}


@magics_class
class FnrunMagics(Magics):
    """``%%fnrun`` and ``%fnrun``.  Holds the pools it started; ``close_all`` ends them."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self._pools: dict[tuple[tuple[str, ...], str], _PoolEntry] = {}
        # --dask: DaskPools by (address, handler, cwd, settings), closed by close_all.
        self._dask_pools: dict[tuple[Any, ...], _DaskEntry] = {}

    # --- the cell magic ---------------------------------------------------------------

    @cell_magic("fnrun")  # type: ignore[arg-type]  # IPython's marker is typed for functions
    @output_can_be_silenced
    @cell_arguments
    def fnrun_cell(self, line: str, cell: str) -> Any:
        """Run the cell body through a warm pool of HANDLER processes.

        One call returns its ``Result``; ``--lines``, ``-r/--repeat`` or a JSON list
        make a batch and return the ``Batch``.  The pool (one per command and working
        directory) stays warm for the next cell; ``%fnrun`` lists and stops pools.
        """
        user_ns = self.shell.user_ns if self.shell is not None else {}
        req = parse_cell(line, cell, user_ns)
        opts = req.options
        if opts.dask is not None:
            value = self._run_dask(opts.dask, req)
        else:
            value = self._run(self._pool_for(opts.handler, req, quiet=opts.quiet), req)
        if opts.output is not None:
            user_ns[opts.output] = value
        return None if opts.quiet else value

    def _run(self, entry: _PoolEntry, req: CellRequest) -> Any:
        pool = entry.pool
        env = req.env or None
        if not req.batch:
            # --monitor on one call: the live view is shown while the cell blocks and
            # stopped on its final state however the call ends.
            view = pool.monitor(show=True) if req.options.monitor else None
            try:
                result = pool.invoke(req.inputs[0], env=env)
            except FnrunError as exc:
                raise CallFailed(exc, entry.handler) from exc
            finally:
                if view is not None:
                    view.stop()
            return JsonResult.of(result) if req.options.json else result
        try:
            # -q means nothing on screen, the batch's progress bar included.
            batch = pool.map(
                req.inputs, env=env, repeat=req.repeat, rate=req.options.rate,
                monitor=req.options.monitor,
                progress=False if req.options.quiet else "auto",
            )
        except KeyboardInterrupt:
            # The batch layer keeps the partial batch as pool.last_batch; hand it to
            # the user before the interrupt propagates.
            self._store_partial(req, pool.last_batch)
            raise
        except FnrunError as exc:
            raise CallFailed(exc, entry.handler) from exc
        return json_batch(batch) if req.options.json else batch

    def _store_partial(self, req: CellRequest, batch: Any) -> None:
        """``-o NAME`` of an interrupted batch cell: the partial batch, decoded as the
        finished one would have been."""
        if req.options.output is None or self.shell is None:
            return
        if batch is not None and req.options.json:
            batch = json_batch(batch)
        self.shell.user_ns[req.options.output] = batch

    def _run_dask(self, address: str, req: CellRequest) -> Any:
        """A ``--dask`` cell: the batch on the cluster at ``address`` (a DaskPool kept
        for the next cell with the same address, handler, directory and settings)."""
        opts = req.options
        cwd = os.getcwd()
        path = os.path.join(cwd, opts.handler)
        # The workers resolve the command themselves (their Python runs a .py file).
        command: str | list[str] = [path] if os.path.isfile(path) else opts.handler
        settings: dict[str, Any] = {
            name: value
            for name, value in (("workers", opts.workers), ("timeout", opts.timeout),
                                ("max_wait", opts.wait))
            if value is not None
        }
        entry = self._dask_pools.get(_dask_key(address, opts.handler, cwd, settings))
        if entry is None or entry.pool.closed or opts.restart:
            if entry is not None:
                self._forget(entry)
            entry = self._start_dask(opts.handler, address, cwd, command, settings)
        dpool = entry.pool
        try:
            batch = dpool.map(
                req.inputs, env=req.env or None, repeat=req.repeat, rate=opts.rate,
                progress=False if opts.quiet else "auto",
            )
        except KeyboardInterrupt:
            entry.count(dpool.last_batch)
            self._store_partial(req, dpool.last_batch)
            raise
        entry.count(batch)
        return json_batch(batch) if opts.json else batch

    # --- the registry -----------------------------------------------------------------

    def _resolve(self, handler: str, cwd: str) -> list[str]:
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

    def _pool_for(self, handler: str, req: CellRequest, *, quiet: bool) -> _PoolEntry:
        """The live pool for ``handler`` in the current directory, started or restarted
        as the cell's options and the handler file require."""
        cwd = os.getcwd()
        argv = self._resolve(handler, cwd)
        key = (tuple(argv), cwd)
        opts = req.options
        wanted = {
            name: value
            for name, value in (("workers", opts.workers), ("timeout", opts.timeout), ("wait", opts.wait))
            if value is not None
        }
        entry = self._pools.get(key)
        reason = None
        if entry is not None:
            if entry.pool.closed:
                reason = ""  # closed behind our back (pool.close()): start afresh, quietly
            elif opts.restart:
                reason = "restarted as asked (--restart)"
            else:
                current = entry.settings()
                diffs = [
                    f"{_OPT[k]} {current[k]:g} -> {v:g}" for k, v in wanted.items() if current[k] != v
                ]
                changed = entry.changed_file()
                if changed is not None:
                    reason = f"{os.path.basename(changed)} changed on disk"
                elif diffs:
                    reason = "new settings: " + ", ".join(diffs)
            if reason is None:
                return entry
            settings = {**entry.settings(), **wanted}
            del self._pools[key]
            entry.pool.close()
            name = entry.handler
        else:
            settings = dict(wanted)
            name = handler
        new = self._start(name, argv, cwd, settings)
        self._pools[key] = new
        if reason and not quiet:
            pids = ", ".join(str(w.pid) for w in new.pool.snapshot().workers if w.pid)
            print(f"fnrun: restarted the pool of {name}: {reason} (pids {pids})")
        return new

    def _start(self, handler: str, argv: list[str], cwd: str, settings: dict[str, Any]) -> _PoolEntry:
        kwargs = {_KEYS[k]: v for k, v in settings.items()}
        files = [fp for fp in map(_fingerprint, _watched_files(argv, cwd)) if fp is not None]
        try:
            # Named as typed: reprs and batches show HANDLER, not this machine's argv.
            pool = Pool(argv, cwd=cwd, name=handler, **kwargs)
        except FnrunError as exc:
            raise CallFailed(exc, handler) from exc
        return _PoolEntry(handler, argv, cwd, pool, files)

    def _find(self, target: str) -> list[_Entry]:
        """The pools a ``%fnrun`` HANDLER argument names: by resolved command in the
        current directory, else by the name the pool was started with or its file name.
        Local pools come first, then ``--dask`` pools (named as their cell named them)."""
        if target == "all":
            return [*self._pools.values(), *self._dask_pools.values()]
        cwd = os.getcwd()
        try:
            argv = self._resolve(target, cwd)
        except UsageError:
            argv = None
        here: list[_Entry] = (
            [self._pools[(tuple(argv), cwd)]] if argv and (tuple(argv), cwd) in self._pools else []
        )
        found: list[_Entry] = here or [
            e for e in self._pools.values()
            if target in (e.handler, os.path.basename(e.handler))
            or (argv is not None and tuple(e.argv) == tuple(argv))
        ]
        found += [
            d for d in self._dask_pools.values()
            if target in (d.handler, os.path.basename(d.handler))
        ]
        if not found:
            raise UsageError(f"%fnrun: no live pool for {target!r} (see %fnrun pools)")
        return found

    def _one(self, target: str) -> _Entry:
        found = self._find(target)
        if len(found) > 1:
            where = (
                "locally and on Dask" if any(isinstance(e, _DaskEntry) for e in found)
                else "in different directories"
            )
            raise UsageError(
                f"%fnrun: {target!r} names {len(found)} pools (started {where}); "
                "cd to one of them"
            )
        return found[0]

    def _forget(self, entry: _Entry) -> None:
        """Remove ``entry`` from the registry and close its pool."""
        if isinstance(entry, _DaskEntry):
            del self._dask_pools[entry.key]
        else:
            del self._pools[(tuple(entry.argv), entry.cwd)]
        entry.pool.close()

    def entries(self) -> Iterator[_PoolEntry]:
        """The live pools, oldest first."""
        return iter(list(self._pools.values()))

    def close_all(self) -> int:
        """Close every pool this instance started; the number closed."""
        entries = list(self._pools.values())
        self._pools.clear()
        for e in entries:
            e.pool.close()
        dask_pools = list(self._dask_pools.values())
        self._dask_pools.clear()
        for d in dask_pools:
            d.pool.close()
        return len(entries) + len(dask_pools)

    # --- the line magic ---------------------------------------------------------------

    @line_magic("fnrun")  # type: ignore[arg-type]
    @output_can_be_silenced
    def fnrun_line(self, line: str) -> Any:
        """Manage the pools of ``%%fnrun``.

        ``%fnrun pools``                  table of live pools
        ``%fnrun stop [HANDLER|all]``     close a pool (all of them by default)
        ``%fnrun restart HANDLER``        restart a pool with its settings
        ``%fnrun stderr HANDLER``         recent stderr of each worker
        ``%fnrun monitor HANDLER``        the live worker monitor
        ``%fnrun``                        this help; ``%%fnrun?`` documents the cell magic
        """
        cmd = parse_line(line.rstrip().removesuffix(";"))
        if cmd.action == "help":
            print(line_help())
            return None
        if cmd.action == "pools":
            return self.pool_table()
        assert cmd.target is not None  # parse_line guarantees it for the other actions
        if cmd.action == "stop":
            entries = self._find(cmd.target)
            for e in entries:
                self._forget(e)
            names = ", ".join(e.handler for e in entries) or "none were running"
            print(f"fnrun: stopped {len(entries)} pool{'s' if len(entries) != 1 else ''}: {names}")
            return None
        entry = self._one(cmd.target)
        if isinstance(entry, _DaskEntry):
            return self._dask_action(cmd.action, entry)
        if cmd.action == "restart":
            self._forget(entry)
            new = self._start(entry.handler, entry.argv, entry.cwd, entry.settings())
            self._pools[(tuple(new.argv), new.cwd)] = new
            pids = ", ".join(str(w.pid) for w in new.pool.snapshot().workers if w.pid)
            print(f"fnrun: restarted the pool of {new.handler} (pids {pids})")
            return None
        if cmd.action == "stderr":
            return StderrView(entry.handler, entry.pool.stderr())
        return entry.pool.monitor()

    def _dask_action(self, action: str, entry: _DaskEntry) -> None:
        """``restart`` of a ``--dask`` pool; the views a Dask pool cannot give."""
        if action != "restart":
            # Its handler processes live in the Dask workers' own processes.
            raise UsageError(
                f"%fnrun {action}: {entry.handler!r} runs on the Dask cluster at "
                f"{entry.address}; see its dashboard for its workers"
            )
        self._forget(entry)
        self._start_dask(entry.handler, entry.address, entry.cwd, entry.command, entry.settings)
        print(f"fnrun: restarted the pool of {entry.handler} on Dask at {entry.address}")

    def _start_dask(
        self, handler: str, address: str, cwd: str, command: str | list[str],
        settings: dict[str, Any],
    ) -> _DaskEntry:
        """A new DaskPool for ``handler`` on the cluster at ``address``, registered."""
        from .dask import DaskPool  # distributed loads only when a cell asks for it

        try:
            # Batches name the handler as typed, not its absolute path.
            dpool = DaskPool(address, command, name=handler, **settings)
        except FnrunError as exc:
            raise CallFailed(exc, handler) from exc
        except OSError as exc:  # no scheduler at that address
            raise UsageError(f"--dask {address}: {exc}") from None
        entry = _DaskEntry(handler, address, cwd, command, dict(settings), dpool)
        self._dask_pools[entry.key] = entry
        return entry

    def pool_table(self) -> PoolTable:
        """The value ``%fnrun pools`` shows: local pools, then ``--dask`` pools."""
        now = time.monotonic()
        rows = []
        for e in self._pools.values():
            snap = e.pool.snapshot()
            rows.append(
                PoolRow(
                    handler=e.handler,
                    command=shlex.join(e.argv),
                    cwd=e.cwd,
                    workers=e.pool.workers,
                    timeout=e.pool.timeout,
                    max_wait=e.pool.config.max_wait,
                    calls=snap.calls,
                    failures=snap.failures,
                    replacements=snap.replacements,
                    uptime=now - e.started,
                )
            )
        for d in self._dask_pools.values():
            rows.append(
                PoolRow(
                    handler=d.handler,
                    command=shlex.join(d.pool.command),
                    cwd=d.cwd,
                    workers=d.pool.workers,
                    timeout=d.pool.timeout,
                    max_wait=d.pool.options["max_wait"],
                    calls=d.calls,
                    failures=d.failures,
                    replacements=None,
                    uptime=now - d.started,
                    where=f"dask {d.address}",
                )
            )
        return PoolTable(tuple(rows))


def line_help() -> str:
    """The text bare ``%fnrun`` prints."""
    width = max(len(k) for k in LINE_SUBCOMMANDS)
    lines = ["%fnrun SUBCOMMAND: manage the warm pools of %%fnrun", ""]
    lines += [f"  %fnrun {k.ljust(width)}  {v}" for k, v in LINE_SUBCOMMANDS.items()]
    lines += [
        "",
        "%%fnrun HANDLER [options] runs the cell body through a pool of HANDLER;",
        "%%fnrun? lists its options.",
    ]
    return "\n".join(lines)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics on ``ipython`` (``%load_ext fnrun_nb``)."""
    ipython.register_magics(FnrunMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Close every pool the magics started and unregister them (``%unload_ext fnrun_nb``)."""
    manager = ipython.magics_manager
    magics = manager.registry.pop(FnrunMagics.__name__, None)
    if magics is None:
        return
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        if getattr(table.get("fnrun"), "__self__", None) is magics:
            del table["fnrun"]
    magics.close_all()
