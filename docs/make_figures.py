"""Regenerate the README's latency-analysis figures: ``python docs/make_figures.py``.

Writes docs/timeline.png (swimlanes of a real batch in which two calls crash their
worker) and prints the comparison verdict the README quotes.
"""

from __future__ import annotations

import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import fnrun_nb  # noqa: E402
from fnrun_nb import Pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SLEEPY = ROOT / "tests" / "handlers" / "sleepy.py"
DELAY = ROOT / "tests" / "handlers" / "delay.py"


def timeline() -> None:
    rng = random.Random(7)
    inputs = [f"{rng.uniform(0.005, 0.03):.3f}" for _ in range(60)]
    inputs[17] = inputs[41] = "crash"
    with Pool(str(SLEEPY), workers=4, timeout=5) as pool:
        batch = pool.map(inputs, progress=False)
    print(batch.summary())
    ax = batch.plot.timeline()
    ax.set_title("60 calls on 4 workers; two crash and their worker is replaced")
    ax.figure.savefig(ROOT / "docs" / "timeline.png", dpi=110, bbox_inches="tight")


def comparison() -> None:
    inputs = [f"item {i}" for i in range(20)]
    c = fnrun_nb.compare(f"{DELAY} 0.004", f"{DELAY} 0.006", inputs, rounds=6, workers=2)
    print(c)


if __name__ == "__main__":
    timeline()
    comparison()
