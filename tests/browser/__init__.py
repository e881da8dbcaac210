"""Helpers for tests that drive JupyterLab in a real browser (Chromium via Playwright)."""
