"""Argument parsing of the ``%%fnrun`` and ``%fnrun`` magics: pure, no shell, no pool.

::

    %%fnrun HANDLER [options]        parse_cell(line, body, namespace) ──▶ CellRequest
    <body>                                  (options, inputs, env, batch or one call)
    %fnrun [SUBCOMMAND [HANDLER]]    parse_line(line) ──▶ LineCommand

Every usage mistake raises IPython's own :class:`~IPython.core.error.UsageError`
(the exact class: IPython prints its message without a traceback) with one of the
messages below, so tests and users see the same words.  Nothing here starts a process
or touches a shell; ``magics`` executes what these functions return.

The options live in one list, :data:`CELL_ARGUMENTS`, applied to the magic by
:func:`cell_arguments`: a front-end adding an option (``--dask ADDRESS``) appends one
``argument`` there and one field, named as the argument's ``dest``, to
:class:`CellOptions`; :func:`parse_cell_options` fills every field from the parsed
arguments by name.  An option that sets a pool setting says which in its field's
metadata (``setting``), and :meth:`CellOptions.pool_settings` names it as
:class:`~fnrun_nb.settings.PoolSettings` does.
"""

from __future__ import annotations

import functools
import json
import keyword
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core import magic_arguments as _ma
from IPython.utils.process import arg_split  # type: ignore[attr-defined]

from .kinds import check_calls

__all__ = [
    "CELL_ARGUMENTS",
    "LINE_SUBCOMMANDS",
    "CellOptions",
    "CellRequest",
    "LineCommand",
    "cell_arguments",
    "check_line_cell",
    "encode_json",
    "parse_body",
    "parse_cell",
    "parse_cell_options",
    "parse_env",
    "parse_line",
    "setting_option",
]

_F = TypeVar("_F", bound=Callable[..., Any])

# IPython's decorators are untyped; these aliases give them the types they have.
argument: Callable[..., Callable[[_F], _F]] = _ma.argument
magic_arguments: Callable[[str], Callable[[_F], _F]] = _ma.magic_arguments


CELL_ARGUMENTS: list[Callable[[_F], _F]] = [
    argument(
        "handler",
        metavar="HANDLER",
        help="the handler: a path, or a quoted command line with arguments"
        ' ("node handler.js --fast"); a .py file that is not executable runs under'
        " this kernel's Python",
    ),
    argument("-w", "--workers", type=int, metavar="N", help="worker processes (Pool default: 4)"),
    argument(
        "-t", "--timeout", type=float, metavar="SECONDS",
        help="per-call run time limit (Pool default: 30)",
    ),
    argument(
        "--wait", type=float, metavar="SECONDS",
        help="max wait for a free worker (Pool default: 5)",
    ),
    argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE",
        help="per-call env, repeatable; -e @NAME takes a dict from the namespace",
    ),
    argument(
        "-r", "--repeat", type=int, metavar="N",
        help="run each input N times: a batch",
    ),
    argument(
        "--lines", action="store_true",
        help="each non-empty line of the cell is one input: a batch",
    ),
    argument(
        "--json", action="store_true",
        help="the cell is JSON: a value (one call) or a list of values (a batch); each"
        " value is sent as its compact JSON encoding (a string keeps its quotes);"
        " results are decoded as JSON when they parse (result.value, or a batch's"
        " batch.values)",
    ),
    argument("--rate", type=float, metavar="R", help="open-loop arrivals per second (a batch)"),
    argument(
        "--resources", action="store_true",
        help="record what each call cost its handler process: the columns cpu_ms,"
        " rss_mib and peak_rss_mib (the cell is a batch: one input, a batch of one)",
    ),
    argument(
        "--handler-timing", action="store_true",
        help="ask the handler for its own time per call (FNRUN_NB_TIMING=1; SDK"
        " handlers answer): the columns handler_ms and transport_ms (the cell is a"
        " batch: one input, a batch of one)",
    ),
    argument(
        "--profile", action="store_true",
        help="profile every call (the handler SDK's sampler, or the pool's profiler):"
        " the profile is shown under the cell and is the batch's .profile (the cell is"
        " a batch: one input, a batch of one)",
    ),
    argument(
        "--max-rss", type=float, metavar="MIB",
        help="recycle a worker whose resident memory exceeds MIB after a call (after"
        " the call's answer; never a failed call)",
    ),
    argument(
        "--protocol", choices=("fnrun", "lines", "script"), metavar="KIND",
        help="how the handler is driven: fnrun (framed calls to warm processes, the"
        " default), lines (one line in, one line out of warm processes; no -e, no"
        " --handler-timing, no newline inside an input) or script (a new process per"
        " call: stdin in, stdout out, exit code as status)",
    ),
    argument(
        "--monitor", action="store_true",
        help="show the live worker monitor of the pool while the cell runs",
    ),
    argument(
        "--dask", metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS: one pool of -w workers"
        " on each Dask worker; the cell is a batch (one input: a batch of one)",
    ),
    argument("-o", "--output", metavar="NAME", help="store the value in the namespace as NAME"),
    argument(
        "-q", "--quiet", action="store_true",
        help="display nothing: no value, note or progress bar (not with --monitor)",
    ),
    argument("--restart", action="store_true", help="restart the pool before running"),
]
"""The options of ``%%fnrun``, in the order ``%%fnrun?`` lists them."""


def cell_arguments(func: _F) -> _F:
    """Decorate a magic with :data:`CELL_ARGUMENTS` so ``%%fnrun?`` shows its usage."""
    return _with_arguments(func, CELL_ARGUMENTS)


def _with_arguments(func: _F, arguments: Sequence[Any]) -> _F:
    # magic_arguments applies decorators bottom-up; apply the list reversed so the
    # help lists options in the list's order.
    for arg in reversed(arguments):
        func = arg(func)
    return magic_arguments("%fnrun")(func)


def _cell_parser() -> Any:
    """The parser of :data:`CELL_ARGUMENTS` as the list is now."""
    return _parser_of(tuple(CELL_ARGUMENTS))


@functools.lru_cache(maxsize=4)
def _parser_of(arguments: tuple[Any, ...]) -> Any:
    def spec(line: str, cell: str | None = None) -> None:
        """Run the cell body through a warm pool of HANDLER processes."""

    return getattr(_with_arguments(spec, arguments), "parser")


def _setting(name: str) -> Any:
    """A :class:`CellOptions` field, "not given" by default, whose option sets the pool
    setting ``name`` (a :class:`~fnrun_nb.settings.PoolSettings` field)."""
    return field(default=None, metadata={"setting": name})


@dataclass(frozen=True)
class CellOptions:
    """The options of one ``%%fnrun`` line, validated.  ``None`` means "not given".

    Each field is the ``dest`` of one argument of :data:`CELL_ARGUMENTS`.
    """

    handler: str
    workers: int | None = _setting("workers")
    timeout: float | None = _setting("timeout")
    wait: float | None = _setting("max_wait")
    env: tuple[str, ...] = ()
    repeat: int | None = None
    lines: bool = False
    json: bool = False
    rate: float | None = None
    resources: bool = False
    handler_timing: bool = False
    profile: bool = False
    max_rss: float | None = _setting("max_rss_mib")
    protocol: str | None = _setting("protocol")
    monitor: bool = False
    dask: str | None = None
    output: str | None = None
    quiet: bool = False
    restart: bool = False

    def pool_settings(self) -> dict[str, Any]:
        """The pool settings this line gives, by their ``PoolSettings`` names (``--wait``
        sets ``max_wait``); the options left out are absent."""
        return {
            f.metadata["setting"]: getattr(self, f.name)
            for f in fields(self)
            if "setting" in f.metadata and getattr(self, f.name) is not None
        }


def setting_option(setting: str) -> str:
    """The option that sets the pool setting ``setting``, as notes name it (``-w``,
    ``--wait``).  ``KeyError`` when no option sets it."""
    dests = [f.name for f in fields(CellOptions) if f.metadata.get("setting") == setting]
    for action in _cell_parser()._actions:
        if action.dest in dests:
            return str(action.option_strings[0])
    raise KeyError(setting)


def parse_cell_options(line: str) -> CellOptions:
    """Parse and validate the arguments of ``%%fnrun`` (after ``$var`` expansion).

    Raises ``UsageError`` for a missing handler, an unknown option, a bad number or a
    bad combination.
    """
    # POSIX splitting, so a quoted command line or env value loses its quotes
    # (IPython's default split keeps them).
    ns = _cell_parser().parse_args(_split(line))
    # Every argument lands in the field named as its dest; a list (repeated -e) is
    # kept as a tuple, so the options stay immutable and hashable.
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}
    opts = CellOptions(**given)
    _validate(opts)
    return opts


def _split(line: str) -> list[str]:
    try:
        return list(arg_split(line.strip(), posix=True, strict=True))
    except ValueError as exc:
        raise UsageError(f"%fnrun: cannot split the line: {exc}") from None


def _validate(o: CellOptions) -> None:
    if not o.handler.strip():
        raise UsageError("HANDLER is empty")
    if o.workers is not None and o.workers < 1:
        raise UsageError(f"-w/--workers must be at least 1, got {o.workers}")
    if o.timeout is not None and not o.timeout > 0:
        raise UsageError(f"-t/--timeout must be a positive number of seconds, got {o.timeout:g}")
    if o.wait is not None and not o.wait >= 0:
        raise UsageError(f"--wait must be zero or a positive number of seconds, got {o.wait:g}")
    if o.repeat is not None and o.repeat < 1:
        raise UsageError(f"-r/--repeat must be at least 1, got {o.repeat}")
    if o.max_rss is not None and not (o.max_rss > 0 and o.max_rss != float("inf")):
        raise UsageError(f"--max-rss must be a positive number of MiB, got {o.max_rss:g}")
    if o.rate is not None and not o.rate > 0:
        raise UsageError(f"--rate must be a positive number of calls per second, got {o.rate:g}")
    if o.lines and o.json:
        raise UsageError("--lines and --json cannot be combined")
    if o.quiet and o.monitor:
        # Asked to show the monitor and to show nothing: say so rather than drop one.
        raise UsageError("-q/--quiet displays nothing; it cannot be combined with --monitor")
    if o.dask is not None and o.monitor:
        raise UsageError("--monitor shows a local pool; it cannot be combined with --dask")
    if o.output is not None and not (o.output.isidentifier() and not keyword.iskeyword(o.output)):
        raise UsageError(f"-o NAME must be a Python identifier, got {o.output!r}")


def parse_env(items: tuple[str, ...] | list[str], namespace: Mapping[str, Any]) -> dict[str, str]:
    """Merge ``-e`` items in order (a later key wins) into one per-call env.

    ``KEY=VALUE`` sets one name (the value may contain ``=`` or be empty); ``@NAME``
    takes every item of the mapping ``namespace[NAME]``, whose keys and values must
    be strings.  Raises ``UsageError`` otherwise.
    """
    env: dict[str, str] = {}
    for item in items:
        if item.startswith("@"):
            name = item[1:]
            if name not in namespace:
                raise UsageError(f"-e @{name}: no variable {name!r} in the namespace")
            mapping = namespace[name]
            if not isinstance(mapping, Mapping):
                raise UsageError(
                    f"-e @{name}: expected a mapping of str to str, got {type(mapping).__name__}"
                )
            for k, v in mapping.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise UsageError(
                        f"-e @{name}: keys and values must be str, got {k!r}: {v!r}"
                    )
                env[k] = v
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-e/--env expects KEY=VALUE or @NAME, got {item!r}")
        env[key] = value
    return env


@dataclass(frozen=True)
class CellRequest:
    """What a ``%%fnrun`` cell asks for: one call, or a batch of inputs.

    ``inputs`` holds the bytes to send (exactly one item when ``batch`` is False);
    ``repeat`` is 1 unless ``-r`` was given.
    """

    options: CellOptions
    inputs: list[bytes]
    env: dict[str, str] = field(default_factory=dict)
    batch: bool = False
    repeat: int = 1


def encode_json(value: Any) -> bytes:
    """What ``--json`` sends for one value: its compact JSON encoding, UTF-8.

    A string keeps its quotes (``"hi"`` is sent as ``b'"hi"'``), so a handler always
    receives a JSON document.  (The CLI's JSON lines are records with their own rule:
    see :func:`fnrun_nb.batch.input_from_json`.)
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_body(body: str, *, lines: bool, json_mode: bool) -> tuple[list[bytes], bool]:
    """The inputs a cell body stands for, and whether they form a batch.

    Plain: the body as typed minus one trailing newline, one call.  ``lines``: every
    line that is not blank, as typed, is one input (a batch).  ``json_mode``: the body
    is one JSON document; a list is a batch of its items, anything else one call;
    each value is sent as :func:`encode_json` encodes it.  Raises ``UsageError`` for
    invalid JSON (``NaN`` and ``Infinity`` included), an empty list, or ``lines`` with
    no input line.
    """
    if lines:
        items = [ln.encode() for ln in body.splitlines() if ln.strip()]
        if not items:
            raise UsageError("--lines: the cell has no non-empty line")
        return items, True
    if json_mode:
        try:
            # Python's json reads NaN/Infinity, which are not JSON: no handler's
            # parser would accept what encode_json would make of them.
            value = json.loads(body, parse_constant=_not_json)
        except ValueError as exc:  # JSONDecodeError is one
            raise UsageError(f"--json: the cell is not valid JSON: {exc}") from None
        if isinstance(value, list):
            if not value:
                raise UsageError("--json: the list is empty")
            return [encode_json(v) for v in value], True
        return [encode_json(value)], False
    if body.endswith("\r\n"):
        body = body[:-2]
    elif body.endswith("\n"):
        body = body[:-1]
    return [body.encode()], False


def parse_cell(
    line: str,
    body: str,
    namespace: Mapping[str, Any],
) -> CellRequest:
    """Parse a whole ``%%fnrun`` cell (line already ``$var``-expanded) into a request.

    Raises ``UsageError`` for every usage mistake, before anything runs.
    """
    opts = parse_cell_options(line)
    env = parse_env(opts.env, namespace)
    inputs, batch = parse_body(body, lines=opts.lines, json_mode=opts.json)
    # Resource and timing columns are a batch's: one input then is a batch of one.
    if (opts.repeat is not None or opts.dask is not None or opts.resources
            or opts.handler_timing or opts.profile):
        batch = True
    if opts.rate is not None and not batch:
        raise UsageError("--rate applies to a batch: add --lines, -r/--repeat or a JSON list")
    if opts.protocol == "lines":
        check_line_cell(inputs, env, opts.handler_timing)
    return CellRequest(
        options=opts, inputs=inputs, env=env, batch=batch, repeat=opts.repeat or 1
    )


def check_line_cell(inputs: Sequence[bytes], env: Mapping[str, str], timing: bool) -> None:
    """``UsageError`` when a cell asks of a ``lines`` pool what the line protocol cannot
    carry (a per-call env, handler timing, an input with a newline)."""
    try:
        check_calls("lines", inputs, env=bool(env), handler_timing=timing)
    except ValueError as exc:
        raise UsageError(str(exc).replace("handler_timing=True", "--handler-timing")) from None


# --- the line magic -------------------------------------------------------------------

LINE_SUBCOMMANDS: dict[str, str] = {
    "pools": "table of live pools: command, workers, calls, failures, uptime",
    "stop": "stop [HANDLER|all]: close one pool, or every pool (the default)",
    "restart": "restart HANDLER: restart the pool of HANDLER",
    "stderr": "stderr HANDLER: recent stderr of each worker of HANDLER's pool",
    "monitor": "monitor HANDLER: the live worker monitor of HANDLER's pool",
    "check": "check HANDLER [--quick]: the conformance report of HANDLER (fresh processes)",
    # Crash forensics (parsed and run by magic_forensics).
    "replay": "replay BATCH_NAME [--times N] [--warm]: replay a batch's failed rows",
    "fuzz": "fuzz HANDLER [--examples N] [--strategy EXPR] [--seed S]: fuzz a handler",
    "profile": "profile BATCH_NAME [--slowest N]: profile the N slowest calls again (20)",
}


@dataclass(frozen=True)
class LineCommand:
    """One ``%fnrun`` line: ``action`` is ``"help"`` or a key of :data:`LINE_SUBCOMMANDS`;
    ``target`` the HANDLER argument (``None`` when absent, ``"all"`` for every pool)."""

    action: str
    target: str | None = None


def parse_line(line: str) -> LineCommand:
    """Parse a ``%fnrun`` line (after ``$var`` expansion).  Raises ``UsageError``."""
    words = _split(line)
    if not words:
        return LineCommand("help")
    action, rest = words[0], words[1:]
    if action not in LINE_SUBCOMMANDS:
        raise UsageError(
            f"%fnrun: unknown subcommand {action!r}; expected one of: "
            + ", ".join(LINE_SUBCOMMANDS)
            + " (a call is a cell: %%fnrun HANDLER)"
        )
    if len(rest) > 1:
        raise UsageError(
            f"%fnrun {action}: expected at most one HANDLER, got {len(rest)} words"
            " (quote a command line with arguments)"
        )
    target = rest[0] if rest else None
    if action == "pools":
        if target is not None:
            raise UsageError("%fnrun pools takes no argument")
        return LineCommand("pools")
    if action == "stop":
        return LineCommand("stop", target or "all")
    if target is None:
        raise UsageError(f"%fnrun {action} needs a HANDLER")
    if target == "all":
        raise UsageError(f"%fnrun {action} needs one HANDLER, not 'all'")
    return LineCommand(action, target)
