"""Headless Chromium for the tests: Debian's package, driven with Playwright.

Nothing is downloaded beyond Debian's ``chromium`` package: Playwright's own browser builds
(``playwright install``) are never used; its bundled driver runs offline and launches the
system binary. The package is installed once per machine when missing, under a file lock so
that concurrent test sessions do not run apt at the same time.

Test modules use the fixture by importing it under its function name::

    from tests.browser import chromium_browser_fixture  # noqa: F401  (fixture)

    def test_page(chromium_browser: Browser) -> None: ...
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

INSTALL_LOCK = Path(tempfile.gettempdir()) / "tuneloop-chromium-install.lock"
INSTALL_TIMEOUT_S = 900


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installing the package first when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing it right now
        found = shutil.which("chromium")
        if found:
            return found
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "chromium"],
        ):
            subprocess.run(
                command, check=True, env=env, timeout=INSTALL_TIMEOUT_S, stdout=subprocess.DEVNULL
            )
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("apt-get installed 'chromium' but no chromium binary is on PATH")
    return found


@pytest.fixture(scope="module", name="chromium_browser")
def chromium_browser_fixture() -> Iterator[Browser]:
    """One headless Chromium per test module.

    Not per session: while it is open, Playwright's sync API keeps an event loop running in
    the main thread, and every later test that calls ``asyncio.run`` would fail.
    """
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
