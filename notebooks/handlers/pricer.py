"""A price quote service with a slow path, for the call-profiling notebook.

Each call prices a basket ``"ITEMS:KIND"`` (``ITEMS`` a count, ``KIND`` ``retail`` or
``wholesale``): ``price_items()`` and ``add_tax()`` are linear in the items; a
wholesale basket also goes through ``apply_volume_rules()``, which compares every
item with every other one (quadratic): large wholesale baskets are the slow tail.
The answer is the total price in cents.
"""

from __future__ import annotations

from fnrun_nb.handler import Context, serve


def price_items(items: int) -> list[int]:
    """One price per item (cents), from a small deterministic pricing formula."""
    prices = []
    for i in range(items):
        cents = 100
        for step in range(60):  # a few tariff steps per item
            cents += (i * 37 + step * 11) % 9
        prices.append(cents)
    return prices


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


def add_tax(prices: list[int]) -> int:
    """The basket's total with tax, rounded per item."""
    total = 0
    for p in prices:
        for _ in range(20):  # per-item rounding rules
            p = p * 1001 // 1000 if p % 3 else p
        total += p
    return total


def handle(data: bytes, ctx: Context) -> bytes:
    items, _, kind = data.decode().partition(":")
    prices = price_items(int(items))
    if kind == "wholesale":
        prices = apply_volume_rules(prices)
    return str(add_tax(prices)).encode()


if __name__ == "__main__":
    serve(handle)
