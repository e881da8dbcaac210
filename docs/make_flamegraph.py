"""Regenerate the README's flame graph screenshot: ``python docs/make_flamegraph.py``.

Profiles the 10 slowest calls of a batch of ``notebooks/handlers/pricer.py`` (as
notebook 10 does), puts the profile's notebook view (the same HTML Jupyter shows: the
flame graph SVG and the top functions) in a page, and screenshots it with Chromium
driven by Playwright, to docs/flamegraph.png.  Needs ``/usr/bin/chromium`` (or
``CHROMIUM=path``) and the ``playwright`` package; it downloads nothing.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from fnrun_nb import Pool

ROOT = Path(__file__).resolve().parent.parent
PRICER = ROOT / "notebooks" / "handlers" / "pricer.py"
OUT = ROOT / "docs" / "flamegraph.png"
_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font-family: sans-serif; font-size: 13px; margin: 16px; width: 1010px; }}
pre {{ background: #f5f5f5; padding: 6px 10px; }}
table {{ border-collapse: collapse; margin-top: 10px; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: right; }}
</style></head><body>
<pre>profile = batch.profile_rows(batch.slowest(10))
profile</pre>
{html}
</body></html>"""


def profile_html() -> str:
    rng = random.Random(7)
    baskets = [f"{20 + i % 7}:retail" for i in range(190)]
    baskets += [f"{1200 + i}:wholesale" for i in range(10)]
    rng.shuffle(baskets)
    with Pool(str(PRICER), workers=2, name="handlers/pricer.py") as pool:
        pool.map(["1:retail"] * 8, progress=False)
        batch = pool.map(baskets, progress=False)
        profile = batch.profile_rows(batch.slowest(10))
    print(profile.flamegraph())
    # The page shows paths relative to the repository, as a reader's checkout has them.
    return profile._repr_html_().replace(str(ROOT) + os.sep, "")


def screenshot(html: str) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "profile.html"
        page_file.write_text(_PAGE.format(html=html), encoding="utf-8")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1050, "height": 600})
                page.goto(page_file.as_uri())
                page.locator("body").screenshot(path=str(OUT))
            finally:
                browser.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    screenshot(profile_html())
