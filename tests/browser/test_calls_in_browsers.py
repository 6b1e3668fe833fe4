"""Calls between real browsers, through the real Janus and coturn, end-to-end encrypted.

The browsers run in a network namespace of the test's own (tests/browser/netns.py), with a fake
camera and microphone; the server, Janus and coturn listen on this machine's end of the link.
What a user would notice: the other person's video and sound arrive and keep arriving, the call
says it is end-to-end encrypted, a wrong key shows nothing, the call survives the SFU restarting,
and a relay-only network still gets media through TURN.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.browser import pages
from tests.browser.conftest import ARGS, CHROMIUM
from tests.browser.netns import ClientNet, can_make_namespaces
from tests.conftest import FAST, in_ci
from tests.helpers import PASSWORD, unique
from tests.server import ServerProcess

pytestmark = pytest.mark.slow  # browsers, Janus, coturn


@pytest.fixture(scope="module")
def net() -> Iterator[ClientNet]:
    why = can_make_namespaces()
    if why is not None:
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    with ClientNet.create() as made:
        yield made


@pytest.fixture(scope="module")
def media_server(
    net: ClientNet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        **FAST,
        "SECURECONNECT_HOST": net.host_ip,
        "SECURECONNECT_SFU": "true",
        "SECURECONNECT_MEDIA_ADDRESS": net.host_ip,
        "SECURECONNECT_TURN_PORT": "0",
        "SECURECONNECT_JANUS_RTP_PORTS": "23000-23199",
        "SECURECONNECT_TURN_RELAY_PORTS": "23200-23299",
        "SECURECONNECT_CALL_RING_S": "30",
    }
    proc = ServerProcess(tmp_path_factory.mktemp("media"), env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
async def net_browser(
    net: ClientNet, media_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if in_ci():
            raise
        pytest.skip("playwright is not installed")
    wrapper = net.wrapper(tmp_path_factory.mktemp("chromium"), CHROMIUM)
    args = [
        *ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--unsafely-treat-insecure-origin-as-secure={media_server.url}",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(wrapper), args=args)
        yield browser
        await browser.close()


async def person(browser: Any, server: ServerProcess, name: str, relay_only: bool = False) -> Any:
    page = await pages.open_client(browser, server.url, permissions=["camera", "microphone"])
    if relay_only:
        await page.evaluate("localStorage.setItem('sc-relay-only', '1')")
    await pages.register(page, name, PASSWORD)
    return page


async def stats(page: Any) -> dict[str, Any]:
    found: dict[str, Any] | None = await page.evaluate("window.secureconnect.callStats()")
    assert found is not None, "not in a call"
    return found


async def media_flows(page: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Waits until this browser decodes video and audio from the call, and keeps doing so."""
    deadline = time.monotonic() + timeout
    first: dict[str, Any] | None = None
    while True:
        now = await stats(page)
        if first is None and now["framesDecoded"] > 10 and now["audioSamples"] > 0:
            first = now
        elif (
            first is not None
            and now["framesDecoded"] > first["framesDecoded"] + 10
            and now["audioSamples"] > first["audioSamples"]
        ):
            return now
        assert time.monotonic() < deadline, f"media did not flow: {now}"
        await asyncio.sleep(0.5)


async def call_between(
    browser: Any, server: ServerProcess, relay_only: bool = False
) -> tuple[Any, Any, str, str]:
    alice, bob = unique("alice"), unique("bob")
    a = await person(browser, server, alice, relay_only)
    b = await person(browser, server, bob, relay_only)
    await pages.start_conversation(a, bob)
    await a.click("#call-video")
    await b.wait_for_selector("#incoming-call", timeout=20000)
    await pages.shot(b, "21-incoming-call")
    await b.click("#accept-call")
    return a, b, alice, bob


async def test_a_one_to_one_video_call_is_encrypted_end_to_end(net_browser, media_server) -> None:
    a, b, alice, bob = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    for page in (a, b):
        now = await stats(page)
        assert now["decryptFailures"] == 0 and now["decrypted"] > 0, now
        assert await page.text_content("#call-e2ee") == "End-to-end encrypted"
    await pages.shot(a, "22-in-call")
    await a.click("#leave-call")
    await b.wait_for_selector("#call-screen", state="detached", timeout=20000)
    assert a.errors == [] and b.errors == []
    for page in (a, b):
        await page.context.close()
