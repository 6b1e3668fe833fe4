"""Headless Chromium (Debian's) driven by Playwright. Under CI=true a missing browser fails."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from tests.conftest import in_ci

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[object]:
    async for instance in _chromium(ARGS):
        yield instance


@pytest.fixture
async def browser_with_microphone() -> AsyncIterator[object]:
    """Chromium with a fake microphone and camera (a beep, a test pattern), permission given."""
    fake = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    async for instance in _chromium(ARGS + fake):
        yield instance


async def _chromium(args: list[str]) -> AsyncIterator[object]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if in_ci():
            raise
        pytest.skip("playwright is not installed")
    if not shutil.which("chromium"):
        if in_ci():
            pytest.fail("chromium is not installed: .ci/run must install it")
        pytest.skip("chromium is not installed")
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        yield instance
        await instance.close()
