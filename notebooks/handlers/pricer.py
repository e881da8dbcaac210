#!/usr/bin/env python3
"""A price quote service with a slow path, for the call-profiling notebook.

Each call prices a basket ``"ITEMS:KIND"`` (``ITEMS`` a count, ``KIND`` ``retail`` or
``wholesale``).  Every basket goes through ``price_items()`` (linear in its items);
a wholesale basket then goes through ``apply_volume_rules()``, which compares every
item with every other one (quadratic): a large wholesale basket is the slow tail.
The answer is the total price in cents.
"""

from __future__ import annotations

from fnrun_nb.handler import Context, serve


def price_items(items: int) -> list[int]:
    """One price per item (cents), from a small deterministic table."""
    return [100 + (i * 37) % 400 for i in range(items)]


def apply_volume_rules(prices: list[int]) -> list[int]:
    """A discount per item for every cheaper item in the basket: quadratic."""
    out = []
    for p in prices:
        cheaper = 0
        for q in prices:
            if q < p:
                cheaper += 1
        out.append(max(p - cheaper // 10, 1))
    return out


def handle(data: bytes, ctx: Context) -> bytes:
    items, _, kind = data.decode().partition(":")
    prices = price_items(int(items))
    if kind == "wholesale":
        prices = apply_volume_rules(prices)
    return str(sum(prices)).encode()


if __name__ == "__main__":
    serve(handle)
