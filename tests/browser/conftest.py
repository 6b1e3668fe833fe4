"""Headless Chromium (Debian's) driven by Playwright. Under CI=true a missing browser fails.

The browser tests prove the web client, so they run against the embedded default (SQLite).
What the server does on PostgreSQL is proven by the tests that talk to its API, which run on
both backends; the few browser tests marked ``postgresql_too`` also run on PostgreSQL, end to
end as a deployment does (decision 0032).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import in_ci

HERE = Path(__file__).parent
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the PostgreSQL twin of each browser test not marked ``postgresql_too``."""
    kept, left_out = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        backend = params.get("server") or params.get("own_server")
        twin = backend == "postgresql" and item.get_closest_marker("postgresql_too") is None
        (left_out if twin and HERE in item.path.parents else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


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
