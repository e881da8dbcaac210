"""The IPython extension: ``%%fnrun`` runs a cell through a warm pool, ``%fnrun`` manages pools.

::

    %%fnrun HANDLER [options]   ──parse_cell (magic_args)──▶ CellRequest
    <body>                      ──PoolRegistry.pool_for (magic_registry)──▶ Pool (one per
                                                             command + cwd, reused across cells)
                                ──Pool.invoke / Pool.map──▶ Result | Batch  (returned:
                                                             the displayhook shows it once)

A thin :class:`~IPython.core.magic.Magics` class: it parses with ``magic_args``, asks its
:class:`~fnrun_nb.magic_registry.PoolRegistry` for the pool (which holds the restart
rules), runs the call or batch and shows what ``magic_views`` makes of it.  The
registry lives on the :class:`FnrunMagics` instance that ``load_ipython_extension``
registers, never in module globals, and ``unload_ipython_extension`` closes every pool
it holds.  ``--dask`` cells keep their ``DaskPool`` in the same registry: ``%fnrun
pools`` lists it with its scheduler, and ``stop``/``restart`` treat it like a local pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, output_can_be_silenced

from .errors import FnrunError
from .magic_forensics import SUBCOMMANDS as FORENSICS
from .magic_forensics import run_line as run_forensics
from .magic_args import (
    LINE_SUBCOMMANDS,
    CellRequest,
    cell_arguments,
    check_line_cell,
    parse_cell,
    parse_line,
)
from .magic_profile import profile_batch, show_cell_profile
from .magic_registry import DaskEntry, PoolEntry, PoolRegistry
from .magic_views import CallFailed, JsonResult, PoolTable, StderrView, json_batch

if TYPE_CHECKING:
    from .batch import Batch
    from .front import Pool

__all__ = ["FnrunMagics", "load_ipython_extension", "unload_ipython_extension"]


@magics_class
class FnrunMagics(Magics):
    """``%%fnrun`` and ``%fnrun``.  Holds the pools it started; ``close_all`` ends them."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.registry = PoolRegistry()
        """The pools this instance started: local ones, then ``--dask`` ones."""

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
            entry, restarted = self.registry.pool_for(opts)
            if restarted and not opts.quiet:
                note = f"{entry.handler}: {restarted} ({_pids(entry.pool)})"
                print(f"fnrun: restarted the pool of {note}")
            value = self._run(entry, req)
        if opts.output is not None:
            user_ns[opts.output] = value
        if opts.profile and not opts.quiet and not opts.json:
            show_cell_profile(value)
        return None if opts.quiet else value

    def _run(self, entry: PoolEntry, req: CellRequest) -> Any:
        pool = entry.pool
        env = req.env or None
        if pool.protocol == "lines":  # a kept lines pool, its protocol not given again
            check_line_cell(req.inputs, req.env, req.options.handler_timing)
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
                **_profiling(req),
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

    def _store_partial(self, req: CellRequest, batch: Batch | None) -> None:
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
        entry = self.registry.dask_pool_for(address, opts)
        dpool = entry.pool
        if dpool.settings.protocol == "lines":
            check_line_cell(req.inputs, req.env, opts.handler_timing)
        try:
            batch = dpool.map(
                req.inputs, env=req.env or None, repeat=req.repeat, rate=opts.rate,
                progress=False if opts.quiet else "auto",
                **_profiling(req),
            )
        except KeyboardInterrupt:
            entry.count(dpool.last_batch)
            self._store_partial(req, dpool.last_batch)
            raise
        entry.count(batch)
        return json_batch(batch) if opts.json else batch

    def _user_ns(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    # --- the registry, as callers of the magics see it ----------------------------------

    def entries(self) -> Iterator[PoolEntry]:
        """The live local pools, oldest first."""
        return self.registry.entries()

    def close_all(self) -> int:
        """Close every pool this instance started; the number closed."""
        return self.registry.close_all()

    def pool_table(self) -> PoolTable:
        """The value ``%fnrun pools`` shows: local pools, then ``--dask`` pools."""
        return self.registry.table()

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
        ``%fnrun check HANDLER [--quick]`` the handler conformance report
        ``%fnrun replay BATCH [--times N]``  replay a batch's failed rows
        ``%fnrun fuzz HANDLER [--examples N] [--strategy EXPR]``  fuzz a handler
        ``%fnrun profile BATCH [--slowest N]``  profile a batch's N slowest calls again
        ``%fnrun``                        this help; ``%%fnrun?`` documents the cell magic
        """
        line = line.rstrip().removesuffix(";")
        words = line.split(None, 1)
        if words[:1] == ["check"]:
            from .conformance.magic import check_line

            return check_line(line, self._user_ns())
        if words and words[0] in FORENSICS:
            return run_forensics(line, self._user_ns())
        if words[:1] == ["profile"]:  # its own arguments: see magic_profile
            return profile_batch(self._user_ns(), line.split()[1:])
        cmd = parse_line(line)
        if cmd.action == "help":
            print(line_help())
            return None
        if cmd.action == "pools":
            return self.pool_table()
        assert cmd.target is not None  # parse_line guarantees it for the other actions
        if cmd.action == "stop":
            entries = self.registry.find(cmd.target)
            for e in entries:
                self.registry.forget(e)
            names = ", ".join(e.handler for e in entries) or "none were running"
            print(f"fnrun: stopped {len(entries)} pool{'s' if len(entries) != 1 else ''}: {names}")
            return None
        entry = self.registry.one(cmd.target)
        if isinstance(entry, DaskEntry):
            if cmd.action != "restart":
                # Its handler processes live in the Dask workers' own processes.
                raise UsageError(
                    f"%fnrun {cmd.action}: {entry.handler!r} runs on the Dask cluster at "
                    f"{entry.address}; see its dashboard for its workers"
                )
            self.registry.restart(entry)
            print(f"fnrun: restarted the pool of {entry.handler} on Dask at {entry.address}")
            return None
        if cmd.action == "restart":
            new = self.registry.restart(entry)
            print(f"fnrun: restarted the pool of {new.handler} ({_pids(new.pool)})")
            return None
        if cmd.action == "stderr":
            return StderrView(entry.handler, entry.pool.stderr())
        return entry.pool.monitor()


def _profiling(req: CellRequest) -> dict[str, bool]:
    """``resources`` / ``handler_timing`` / ``profile`` for ``map``: only those the cell asked for, so
    a pool started with them on (``Pool(resources=True)``) keeps its default."""
    opts = req.options
    asked = {
        "resources": opts.resources, "handler_timing": opts.handler_timing,
        "profile": opts.profile,
    }
    return {name: True for name, on in asked.items() if on}


def _pids(pool: Pool) -> str:
    """``pids 123, 124``: the processes of a freshly started pool, for its note."""
    return "pids " + ", ".join(str(w.pid) for w in pool.snapshot().workers if w.pid)


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
