"""Debian's chromium, driven headless by Playwright (nothing is downloaded): one place for every browser test."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM} (apt install chromium)"
)
