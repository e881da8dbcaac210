"""An SDK handler that spends each call in pure-Python CPU work: the input is the
number of loop turns (ASCII decimal); the answer is the loop's result."""

from __future__ import annotations

from fnrun_nb.handler import Context, serve


def work(turns: int) -> int:
    total = 0
    for i in range(turns):
        total += i * i % 7
    return total


def handle(data: bytes, ctx: Context) -> bytes:
    return str(work(int(data or b"0"))).encode()


if __name__ == "__main__":
    serve(handle)
