"""Plain functions for ``python -m fnrun_nb.handler sdk_funcs:upper``."""

from __future__ import annotations


def upper(data: bytes, ctx: object) -> bytes:
    return data.upper()


not_callable = 42
