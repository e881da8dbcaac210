"""Turning what a caller passes to ``map`` into validated call parts, once, up front.

Everything here runs before the first call, so a bad input or option raises
(``TypeError`` / ``ValueError`` naming the culprit) while nothing has been sent.  The
JSON-lines rule shared by the CLI and the magics (``{"data": ..., "env": {...}}``)
lives here too, in :func:`input_from_json`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol import PROFILE_KEY, TIMING_KEY, encode_env
from ..values import Input, to_bytes

__all__ = ["Plan", "input_from_json", "parse_json_lines", "plan_batch"]

_DATA_TYPES = (bytes, bytearray, memoryview, str, Input)
_JSON_KEYS = frozenset({"data", "data_b64", "env"})
_TIMING_BLOCK = encode_env({TIMING_KEY: "1"})
_PROFILE_BLOCK = encode_env({PROFILE_KEY: "1"})


@dataclass(frozen=True)
class Plan:
    """A validated batch, ready to run: one entry per distinct input.

    ``datas[i]`` is input ``i`` as bytes, ``env_blocks[i]`` its merged env encoded
    for the wire and ``env_ins[i]`` the same env as a dict (inputs with equal envs
    share one dict and one block: the env is encoded once per distinct env).  Row
    ``k`` of the batch runs input ``k % len(datas)`` for the ``k // len(datas)``-th time.

    With ``handler_timing`` each block also asks the handler for its own time
    (``FNRUN_NB_TIMING=1``), which ``env_ins`` (the ``env_in`` column) leaves out;
    with ``profile`` each block asks the handler to profile the call
    (``FNRUN_NB_PROFILE=1``), left out of ``env_ins`` likewise.
    ``resources`` records each call's CPU time and memory.
    """

    datas: list[bytes]
    env_blocks: list[bytes]
    env_ins: list[dict[str, str]]
    repeat: int
    concurrency: int
    rate: float | None
    keep_data: bool
    progress: bool | str
    resources: bool = False
    handler_timing: bool = False
    profile: bool = False

    @property
    def rows(self) -> int:
        return len(self.datas) * self.repeat


def _check_env(env: Any, where: str) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"{where}: env must be a mapping of str to str, not {type(env).__name__}")
    for name, value in env.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: env names must be str, got {name!r}")
        if not isinstance(value, str):
            raise TypeError(
                f"{where}: env value of {name!r} must be str, got {type(value).__name__} {value!r}"
            )
    return dict(env)


_ONLY_BYTES = {bytes}


def _to_bytes(data: Any, where: str) -> bytes:
    try:
        return to_bytes(data)
    except TypeError:
        raise TypeError(
            f"{where} is {type(data).__name__}; expected bytes, str, Input or a (data, env) pair"
        ) from None


def plan_batch(
    inputs: Iterable[Any],
    *,
    env: Mapping[str, str] | None,
    repeat: int,
    concurrency: int | None,
    rate: float | None,
    keep_data: bool,
    progress: bool | str,
    workers: int,
    resources: bool = False,
    handler_timing: bool = False,
    profile: bool = False,
) -> Plan:
    """Materialise and validate the arguments of ``map``; raises before any call.

    Raises ``TypeError`` for an input that is not bytes, str, ``Input`` or a
    ``(data, env)`` pair, for an env name or value that is not a str, and for options
    of the wrong type; ``ValueError`` for ``repeat < 1``, ``concurrency < 1``, a rate
    that is not a positive finite number, or an unknown ``progress``.
    """
    if isinstance(inputs, (*_DATA_TYPES, Mapping)) or not isinstance(inputs, Iterable):
        raise TypeError(
            "inputs must be an iterable of inputs (a list of bytes or str, say), not "
            f"{type(inputs).__name__}; wrap a single input in a list"
        )
    if isinstance(repeat, bool) or not isinstance(repeat, int):
        raise TypeError(f"repeat must be an int, not {type(repeat).__name__}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if concurrency is None:
        concurrency = workers
    elif isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f"concurrency must be an int or None, not {type(concurrency).__name__}")
    elif concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"rate must be a number of calls per second, not {type(rate).__name__}")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive, finite number of calls per second, got {rate!r}")
        rate = float(rate)
    if not isinstance(keep_data, bool):
        raise TypeError(f"keep_data must be True or False, not {keep_data!r}")
    if progress not in ("auto", True, False):
        raise ValueError(f"progress must be 'auto', True or False, got {progress!r}")
    for name, flag in (
        ("resources", resources), ("handler_timing", handler_timing), ("profile", profile)
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, not {flag!r}")
    common = _check_env(env, "env")

    datas: list[bytes] = []
    blocks: list[bytes] = []
    env_ins: list[dict[str, str]] = []
    # Equal envs share one dict and one encoded block (keyed by content).
    seen: dict[frozenset[tuple[str, str]], tuple[dict[str, str], bytes]] = {}
    empty = (common, encode_env(common)) if common else ({}, b"")
    if type(inputs) is list and set(map(type, inputs)) == _ONLY_BYTES:
        # The common batch, a list of bytes, is validated in C (the type of every
        # item) rather than item by item: every input shares the batch's env.
        merged, block = empty
        datas = inputs.copy()
        env_ins = [merged] * len(inputs)
        blocks = [block] * len(inputs)
        inputs = ()
    for i, item in enumerate(inputs):
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(
                    f"input {i} is a tuple of {len(item)} items; a pair is (data, env)"
                )
            data, item_env = item
            datas.append(_to_bytes(data, f"input {i}'s data"))
            own = _check_env(item_env, f"input {i}")
        else:
            datas.append(_to_bytes(item, f"input {i}"))
            own = {}
        if not own:
            merged, block = empty
        else:
            merged = {**common, **own}  # the item's own env wins
            key = frozenset(merged.items())
            hit = seen.get(key)
            if hit is None:
                hit = seen[key] = (merged, encode_env(merged))
            merged, block = hit
        env_ins.append(merged)
        blocks.append(block)
    if handler_timing:
        # A later entry wins on the wire: the request holds even if the env names it.
        timed: dict[bytes, bytes] = {}
        blocks = [timed.setdefault(b, b + _TIMING_BLOCK) for b in blocks]
    if profile:
        profiled: dict[bytes, bytes] = {}
        blocks = [profiled.setdefault(b, b + _PROFILE_BLOCK) for b in blocks]
    return Plan(
        datas, blocks, env_ins, repeat, concurrency, rate, keep_data, progress,
        resources, handler_timing, profile,
    )


# --- JSON lines: one rule for the CLI and the magics -----------------------------------


def input_from_json(obj: Any, where: str = "JSON input") -> tuple[bytes, dict[str, str]]:
    """One decoded JSON-lines record as a ``(data, env)`` pair.

    The record is an object with at most one of ``data`` (a string is sent as UTF-8,
    any other JSON value as its compact JSON encoding) and ``data_b64`` (raw bytes,
    base64), and an optional ``env`` object of string values.  A record with neither
    is an empty input.  Raises ``ValueError`` (unknown keys, both data keys, bad
    base64) or ``TypeError`` (not an object, a non-string env value), naming ``where``.
    """
    if not isinstance(obj, dict):
        raise TypeError(
            f'{where}: expected an object like {{"data": ..., "env": {{...}}}}, '
            f"got {type(obj).__name__}"
        )
    unknown = set(obj) - _JSON_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}; "
            "allowed: 'data', 'data_b64', 'env'"
        )
    if "data" in obj and "data_b64" in obj:
        raise ValueError(f"{where}: give 'data' or 'data_b64', not both")
    if "data_b64" in obj:
        raw = obj["data_b64"]
        if not isinstance(raw, str):
            raise TypeError(f"{where}: 'data_b64' must be a base64 string")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{where}: 'data_b64' is not valid base64: {exc}") from exc
    elif "data" in obj:
        value = obj["data"]
        if isinstance(value, str):
            data = value.encode("utf-8")
        else:
            data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    else:
        data = b""
    return data, _check_env(obj.get("env"), where)


def parse_json_lines(text: str | bytes) -> list[tuple[bytes, dict[str, str]]]:
    """Every non-blank line of ``text`` decoded by :func:`input_from_json`.

    Raises ``ValueError`` naming the line (1-based) that is not valid JSON, and the
    errors of :func:`input_from_json`.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not valid JSON: {exc.msg}") from exc
        out.append(input_from_json(obj, f"line {number}"))
    return out
