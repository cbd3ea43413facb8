"""Debian's Chromium driven by Playwright for the page's browser tests, never a downloaded
browser (Playwright's own `playwright install` is not used anywhere)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

INSTALL_HINT = "apt-get install chromium chromium-driver"
SETUP = Path(__file__).resolve().parent.parent / "scripts" / "setup_chromium.sh"


def chromium_path() -> str:
    """Debian's Chromium, installed by scripts/setup_chromium.sh when missing and the tests
    run as root (CI). Missing otherwise is a failure, not a skip."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file() and os.geteuid() == 0:
        done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{SETUP} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
        path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            f"the browser tests need Debian's Chromium and none was found (PATH, {path}): "
            f"run `{INSTALL_HINT}`",
            pytrace=False,
        )
    return path


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
