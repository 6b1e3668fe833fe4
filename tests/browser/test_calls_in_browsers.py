"""Calls between real browsers, through the real Janus and coturn, end-to-end encrypted.

The browsers run in a network namespace of the test's own (tests/browser/netns.py), with a fake
camera and microphone; the server, Janus and coturn listen on this machine's end of the link.
What a user would notice: the other person's video and sound arrive and keep arriving, the call
says it is end-to-end encrypted, a wrong key shows nothing, the call survives the SFU restarting
and the replica hosting it shutting down, and a relay-only network still gets media through TURN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from secureconnect.client import Client
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.secure import CallKey, SecureClient
from secureconnect.crypto import sframe
from secureconnect.crypto.primitives import CryptoError
from tests.browser import mjr, pages
from tests.browser.conftest import ARGS, CHROMIUM
from tests.browser.netns import ClientNet, can_make_namespaces
from tests.conftest import FAST, backend_env, drop_database, in_ci
from tests.helpers import PASSWORD, call_owner, signed_up, unique
from tests.server import RedisProcess, ServerProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # browsers, Janus, coturn


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
    # Janus records every call here: the SFU's own view, for the test that reads it back.
    env["SECURECONNECT_JANUS_RECORD_DIR"] = str(tmp_path_factory.mktemp("janus-recordings"))
    proc = ServerProcess(tmp_path_factory.mktemp("media"), env).start().wait_media()
    yield proc
    proc.stop()


@contextlib.asynccontextmanager
async def browser_in(net: ClientNet, folder: Path, origin: str) -> AsyncIterator[Any]:
    """Chromium inside the test network, with a fake camera and microphone, taking ``origin``
    (plain http on the link's address) as secure enough for them."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if in_ci():
            raise
        pytest.skip("playwright is not installed")
    wrapper = net.wrapper(folder, CHROMIUM)
    args = [
        *ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--unsafely-treat-insecure-origin-as-secure={origin}",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(wrapper), args=args)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="module")
async def net_browser(
    net: ClientNet, media_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    async with browser_in(net, tmp_path_factory.mktemp("chromium"), media_server.url) as browser:
        yield browser


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


async def media_flows(page: Any, timeout: float = 40.0) -> dict[str, Any]:
    """Waits until this browser decodes video and audio from the call, and keeps doing so."""
    deadline = time.monotonic() + timeout
    first: dict[str, Any] | None = None
    while True:
        now = await page.evaluate("window.secureconnect.callStats()")
        if now and now["state"] == "in-call":
            if first is None:
                if now["framesDecoded"] > 10 and now["audioSamples"] > 0:
                    first = now
            elif (
                now["framesDecoded"] > first["framesDecoded"] + 10
                and now["audioSamples"] > first["audioSamples"]
            ):
                return dict(now)
        assert time.monotonic() < deadline, f"media did not flow: {now}"
        await asyncio.sleep(0.5)


async def frames_from_each(page: Any, others: int, timeout: float = 60.0) -> None:
    """Every other participant's video plays here (its <video> advances)."""
    script = """() => [...document.querySelectorAll('.tile:not(.me) video')]
        .map((v) => v.getVideoPlaybackQuality().totalVideoFrames)"""
    deadline = time.monotonic() + timeout
    first: list[int] | None = None
    while True:
        counts: list[int] = await page.evaluate(script)
        if len(counts) == others and all(c > 0 for c in counts):
            if first is None:
                first = counts
            elif all(c > f for c, f in zip(counts, first, strict=True)):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not every video plays: {counts} {await stats(page)}")
        await asyncio.sleep(0.5)


async def call_between(
    browser: Any, server: ServerProcess, relay_only: bool = False
) -> tuple[Any, Any]:
    alice, bob = unique("alice"), unique("bob")
    a = await person(browser, server, alice, relay_only)
    b = await person(browser, server, bob, relay_only)
    await pages.start_conversation(a, bob)
    await pages.accept_request(b, alice)  # a stranger's call would not ring
    await a.click("#call-video")
    await b.wait_for_selector("#incoming-call", timeout=20000)
    await pages.shot(b, "21-incoming-call")
    await b.click("#accept-call")
    return a, b


async def close(*pages_: Any) -> None:
    for page in pages_:
        await page.context.close()


async def test_a_one_to_one_video_call_is_encrypted_end_to_end(net_browser, media_server) -> None:
    a, b = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    for page in (a, b):
        now = await stats(page)
        assert now["decryptFailures"] == 0 and now["decrypted"] > 0, now
        assert await page.text_content("#call-e2ee") == "End-to-end encrypted"
    await frames_from_each(a, 1)
    await pages.shot(a, "22-in-call")
    # Simulcast: Bob asks the SFU for Alice's low layer and gets the width Alice's browser is
    # sending on it; then for the high one again, and gets that.
    layers = """async () => Object.fromEntries([...(await window.secureconnect.call().pub
        .getStats()).values()].filter((r) => r.type === "outbound-rtp" && r.kind === "video")
        .map((r) => [r.rid, r.frameWidth || 0]))"""
    await b.evaluate("window.secureconnect.call().chooseLayers(0)")
    deadline = time.monotonic() + 30
    while True:
        sent, got = await a.evaluate(layers), (await stats(b))["frameWidth"]
        if sent["h"] > sent["l"] and got == sent["l"]:
            break
        assert time.monotonic() < deadline, (sent, got)
        await asyncio.sleep(0.3)
    await b.evaluate("window.secureconnect.call().chooseLayers(1)")
    deadline = time.monotonic() + 30
    while (await stats(b))["frameWidth"] != (sent := await a.evaluate(layers))["h"]:
        assert time.monotonic() < deadline, ("not back on the high layer", sent)
        await asyncio.sleep(0.3)
    # Mute shows on the other side.
    await a.click("#toggle-mic")
    await b.wait_for_selector(".tile:not(.me) .label:has-text('muted')", timeout=10000)
    # A muted microphone sends nothing at all, not even silence; unmuting brings the sound back.
    packets = """async ([pc, type]) => [
        ...(await window.secureconnect.call()[pc].getStats()).values()].filter(
        (r) => r.type === type && r.kind === "audio").reduce(
        (n, r) => n + (r.packetsSent || r.packetsReceived || 0), 0)"""
    await asyncio.sleep(0.5)
    quiet = await a.evaluate(packets, ["pub", "outbound-rtp"])
    await asyncio.sleep(1.5)
    assert await a.evaluate(packets, ["pub", "outbound-rtp"]) == quiet
    heard = await b.evaluate(packets, ["sub", "inbound-rtp"])
    await a.click("#toggle-mic")
    deadline = time.monotonic() + 10
    while await b.evaluate(packets, ["sub", "inbound-rtp"]) < heard + 50:
        assert time.monotonic() < deadline, "no sound after unmuting"
        await asyncio.sleep(0.2)
    # A wrong key decodes nothing: Bob's worker is handed garbage for Alice's current key.
    await b.evaluate(
        """() => { const c = window.secureconnect.call();
                   for (const kid of c.keysFrom.values()) for (let g = 0n; g < 4n; g++)
                     c.worker.postMessage({ type: "receive", kid: String(BigInt(kid) + g),
                       base: crypto.getRandomValues(new Uint8Array(32)) }); }"""
    )
    await asyncio.sleep(1.5)
    before = await stats(b)
    failures = 0
    for _ in range(6):
        await asyncio.sleep(0.5)
        failures += (await stats(b))["decryptFailures"]
    after = await stats(b)
    assert after["decrypted"] == before["decrypted"], (before, after)
    assert after["framesDecoded"] - before["framesDecoded"] <= 2
    assert failures > 0
    # Bob's browser drops that key; the right one then arrives late, after frames it had to
    # drop. Alice's encoder makes no key frame by itself, so Bob asks for one, and her picture
    # comes back rather than stay frozen.
    await b.evaluate(
        """() => { const c = window.secureconnect.call();
                   const tags = [...c.keysFrom.values()].map((k) => String(BigInt(k) >> 8n));
                   c.worker.postMessage({ type: "forget", tags }); }"""
    )
    await asyncio.sleep(6)  # forgotten keys go once frames in flight are done (5 s)
    real = await a.evaluate(
        """() => { const c = window.secureconnect.call();
                   return { kid: String(c.kid()), key: btoa(String.fromCharCode(...c.base)) }; }"""
    )
    frozen = (await stats(b))["framesDecoded"]
    await b.evaluate(
        """(k) => { const c = window.secureconnect.call(); const p = c.others()[0];
                    c.onKey(p.user_id, p.device_id,
                            { type: "call_key", call_id: c.id, kid: k.kid, key: k.key }); }""",
        real,
    )
    deadline = time.monotonic() + 10
    while (await stats(b))["framesDecoded"] < frozen + 10:
        assert time.monotonic() < deadline, "the picture stayed frozen after the key came"
        await asyncio.sleep(0.3)
    # It came back because Bob asked (0.6 s here), not after Chromium's own request (2-2.5 s).
    assert (await stats(b))["keys"]["keyframesAsked"] >= 1
    await a.click("#leave-call")
    await b.wait_for_selector("#call-screen", state="detached", timeout=20000)
    assert a.errors == [] and b.errors == []
    await close(a, b)


async def test_speaking_another_microphone_and_a_shared_screen(net_browser, media_server) -> None:
    """The controls a person uses in a call do what they say on the other side."""
    a, b = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    alice = await a.evaluate("window.secureconnect.call().me.username")
    # Alice's (fake) microphone beeps: Bob sees her tile light up as speaking.
    await b.wait_for_selector(f".tile.speaking[data-user='{alice}']", timeout=20000)
    # Another microphone from the device picker: Bob keeps hearing her.
    await a.click("#pick-device")
    microphones = "#device-dialog select[data-kind=audioinput]"
    await a.wait_for_selector(f"{microphones} option", state="attached")
    values = "(options) => options.map((o) => o.value)"
    options = await a.eval_on_selector_all(f"{microphones} option", values)
    assert len(options) >= 2, options
    before = await a.evaluate("window.secureconnect.call().local.getAudioTracks()[0].label")
    await a.select_option(microphones, options[-1])
    deadline = time.monotonic() + 10
    while await a.evaluate("window.secureconnect.call().local.getAudioTracks()[0].label") == before:
        assert time.monotonic() < deadline, "the microphone did not change"
        await asyncio.sleep(0.2)
    await a.click("#device-dialog button")
    await media_flows(b)
    # Sharing the screen: Bob is told, and what he sees keeps coming (now the screen).
    await a.click("#share-screen")
    await b.wait_for_selector(
        f".tile[data-user='{alice}'] .label:has-text('sharing screen')", timeout=20000
    )
    await frames_from_each(b, 1)
    assert (await stats(b))["decryptFailures"] == 0
    await pages.shot(b, "26-screen-shared")
    assert a.errors == [] and b.errors == []
    await close(a, b)


async def test_what_janus_holds_of_a_call_does_not_decrypt_without_the_key(
    net_browser, media_server
) -> None:
    """The SFU's own view of the media: Janus's recording of the streams it forwards. Every
    video and audio frame in it is SFrame ciphertext: with Alice's key each one decrypts, with
    any other key none does. In clear there is only the codec's payload header (VP8's frame
    tag and, on a key frame, the picture's size), which Janus reads to switch layers."""
    a, b = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    key = await a.evaluate(
        """async () => { const c = window.secureconnect.call();
                         await c.api.callStep(c.id, "keyframe");  // one under this key for sure
                         return { kid: String(c.kid()), base: btoa(String.fromCharCode(...c.base)),
                                  feed: c.feedId }; }"""
    )
    await asyncio.sleep(2)
    await a.click("#leave-call")  # Janus closes its files as the publishers leave
    await b.wait_for_selector("#call-screen", state="detached", timeout=20000)
    await close(a, b)
    await asyncio.sleep(1)
    folder = Path(media_server.env()["SECURECONNECT_JANUS_RECORD_DIR"])
    seen = frames_janus_holds(folder, key["feed"], int(key["kid"]), base64.b64decode(key["base"]))
    assert seen["key"] >= 1 and seen["delta"] >= 20 and seen["audio"] >= 50, seen


def frames_janus_holds(folder: Path, feed: int, kid: int, base: bytes) -> dict[str, int]:
    """Checks every frame of this feed under this key in Janus's recordings; counts them."""
    right = sframe.derive(base, kid)
    wrong = sframe.derive(secrets.token_bytes(32), kid)
    seen = {"key": 0, "delta": 0, "audio": 0}
    for path in sorted(folder.glob(f"*-{feed}-*.mjr")):
        header, packets = mjr.read(path)
        if header["t"] == "v":
            frames = [("key" if f[0] & 1 == 0 else "delta", f) for f in mjr.vp8_frames(packets)]
        else:
            frames = [("audio", p.payload) for p in packets if p.payload]
        for kind, frame in frames:
            clear = sframe.CLEAR_BYTES[kind]
            if sframe.parse_header(frame[clear:])[0] != kid:
                continue  # a frame from before this key (it ratcheted when Bob joined)
            plain = sframe.unprotect(lambda k: right if k == kid else None, frame, kind)
            with pytest.raises(CryptoError):
                sframe.unprotect(lambda k: wrong if k == kid else None, frame, kind)
            assert plain[clear:] not in frame  # what the decoder gets is nowhere in Janus's copy
            if kind == "key":  # VP8's key frame start code and the picture's size: all Janus
                # can read. The camera's 640x360, or a 16:9 step down from it: Chromium sends
                # less when the machine is busy (CI once saw 320x180).
                assert frame[3:6] == b"\x9d\x01\x2a"
                width = int.from_bytes(frame[6:8], "little") & 0x3FFF
                height = int.from_bytes(frame[8:10], "little") & 0x3FFF
                assert width <= 640 and width * 9 == height * 16, (width, height)
            seen[kind] += 1
    return seen


async def test_a_group_call_of_four_everyone_sees_everyone(net_browser, media_server) -> None:
    names = [unique(n) for n in ("ann", "ben", "cat", "dan")]
    people = [await person(net_browser, media_server, n) for n in names]
    await pages.start_conversation(people[0], ", ".join(names[1:]), "Standup")
    for page in people[1:]:
        await pages.accept_request(page, "Standup")
    await people[0].click("#call-video")
    for page in people[1:]:
        await page.wait_for_selector("#incoming-call", timeout=20000)
        await page.click("#accept-call")
    for page in people:
        await frames_from_each(page, 3, timeout=90)
        await media_flows(page)  # sound too
    for page in people:
        now = await stats(page)
        assert now["decryptFailures"] == 0 and len(now["keysFrom"]) == 3, now
    await pages.shot(people[0], "23-group-call")
    # Dan is removed from the group by Ann (from her phone, here the SDK): he is put out of
    # the call, and the others carry on under new keys that his browser never gets.
    admin = Client(media_server.url)
    await admin.login(names[0], PASSWORD)
    try:
        conv = next(c for c in await admin.conversations() if c.name == "Standup")
        keys_before = [
            dict(
                await people[i].evaluate("Object.fromEntries(window.secureconnect.call().keysFrom)")
            )
            for i in (1, 2)
        ]
        await admin.remove_member(conv.id, names[3])
    finally:
        await admin.aclose()
    await people[3].wait_for_selector("#call-screen", state="detached", timeout=20000)
    await asyncio.sleep(4)  # the key change after a leave, and a margin
    for page in people[:3]:
        # Every remaining tile keeps moving through the renegotiation and the new keys.
        await frames_from_each(page, 2, timeout=40)
        await media_flows(page, timeout=40)
    for i, page in zip((1, 2), people[1:3], strict=True):
        now = await page.evaluate("Object.fromEntries(window.secureconnect.call().keysFrom)")
        changed = [d for d in now if now[d] != keys_before[i - 1].get(d)]
        assert len(now) == 2 and len(changed) == 2, (keys_before[i - 1], now)
        assert (await stats(page))["decryptFailures"] == 0
    for page in people[:3]:
        assert page.errors == [], page.errors
    # Dan's browser was refused what it tried after his removal (403), and nothing else.
    assert all("403" in e for e in people[3].errors), people[3].errors
    await close(*people)


async def test_after_a_network_drop_the_call_comes_back_without_a_click(
    net, net_browser, media_server
) -> None:
    """Both browsers lose the network for 20 s (a train tunnel, a Wi-Fi hand-over), less than
    the 30 s after which the server drops a silent device. Once it is back they see and hear
    each other again, with no one pressing anything."""
    a, b = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    net.cut(down=True)
    try:
        await asyncio.sleep(20)
    finally:
        net.cut(down=False)
    for page in (a, b):
        now = await media_flows(page, timeout=90)
        assert now["state"] == "in-call" and now["decryptFailures"] == 0, now
    await frames_from_each(a, 1)
    await frames_from_each(b, 1)
    await close(a, b)


async def test_a_receiving_connection_that_stops_or_is_set_up_twice_comes_back(
    net_browser, media_server
) -> None:
    """Three ways a call can go quiet while its seats look fine: a receiving connection stops
    without "failed" (closed under it); a second rejoin starts while the first is still setting
    up (a lost heartbeat and a roster change at once, as when a replica goes away); a sending
    connection stops. All come back by themselves: a new receiving connection, the newer seat,
    a new seat."""
    a, b = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    await b.evaluate("window.secureconnect.call().sub.close()")
    now = await media_flows(b, timeout=60)
    assert now["keys"]["subscriberRenewals"] == 1 and now["decryptFailures"] == 0, now
    twice = """() => new Promise((resolve) => {
        const c = window.secureconnect.call();
        c.rejoin();
        const t = setInterval(() => {
            if (c.state !== "in-call") return;
            clearInterval(t);
            c.rejoin();  // the first seat is set up no further than its join
            resolve(c.seatNo);
        }, 1);
    })"""
    seat = await b.evaluate(twice)
    for page in (a, b):
        now = await media_flows(page, timeout=60)
        assert now["state"] == "in-call" and now["decryptFailures"] == 0, now
    assert await b.evaluate("window.secureconnect.call().seatNo") == seat  # no third seat needed
    await frames_from_each(a, 1)
    await frames_from_each(b, 1)
    # Bob's sending connection stops: Janus drops his feed, Alice's roster says so (she is not
    # sent to subscribe to a feed that is gone), and Bob takes a new seat by himself.
    await b.evaluate("window.secureconnect.call().pub.close()")
    bob_publishing = """() => window.secureconnect.call().call.participants
        .filter((p) => p.device_id !== window.secureconnect.call().me.device_id)[0].publishing"""
    deadline = time.monotonic() + 10
    while await a.evaluate(bob_publishing):
        assert time.monotonic() < deadline, "Janus's loss of Bob's feed never reached Alice"
        await asyncio.sleep(0.2)
    for page in (a, b):
        now = await media_flows(page, timeout=60)
        assert now["state"] == "in-call" and now["decryptFailures"] == 0, now
    assert await b.evaluate("window.secureconnect.call().seatNo") == seat + 1
    await frames_from_each(a, 1)
    await close(a, b)


async def test_relay_only_goes_through_coturn(net_browser, media_server) -> None:
    a, b = await call_between(net_browser, media_server, relay_only=True)
    for page in (a, b):
        now = await media_flows(page)
        assert now["candidateTypes"] and set(now["candidateTypes"]) == {"relay"}, now
    await close(a, b)


async def test_janus_killed_mid_call_comes_back_without_a_click(net_browser, media_server) -> None:
    a, b = await call_between(net_browser, media_server)
    for page in (a, b):
        await media_flows(page)
    assert media_server.proc is not None
    pids = subprocess.run(  # noqa: ASYNC221 - one quick pgrep
        ["pgrep", "-P", str(media_server.proc.pid), "-x", "janus"], capture_output=True, text=True
    ).stdout.split()
    epochs = [await page.evaluate("window.secureconnect.call().epoch") for page in (a, b)]
    os.kill(int(pids[0]), signal.SIGKILL)
    for page, epoch in zip((a, b), epochs, strict=True):
        deadline = time.monotonic() + 60
        while await page.evaluate("window.secureconnect.call().epoch") == epoch:
            assert time.monotonic() < deadline, "the browser did not join the new SFU"
            await asyncio.sleep(0.3)
    for page in (a, b):
        now = await media_flows(page, timeout=90)
        assert now["decryptFailures"] == 0
    await close(a, b)


async def test_a_python_device_joins_and_trades_media_keys_with_a_browser(
    net_browser, media_server, tmp_path: Path
) -> None:
    alice = unique("alice")
    a = await person(net_browser, media_server, alice)
    bot = Client(media_server.url)
    try:
        await signed_up(bot, unique("bot"))
        secure = SecureClient(bot, DeviceStore(tmp_path / "bot.json", "pass"))
        await secure.start()
        conv = await bot.direct(alice)
        assert bot.login_info is not None
        await pages.accept_request(a, bot.login_info.username)
        call = await bot.start_call(conv.id, "video")
        await bot.join_call(call.id)
        await a.wait_for_selector("#incoming-call", timeout=20000)
        await a.click("#accept-call")
        deadline = time.monotonic() + 20
        got: list[CallKey] = []
        while not got:
            assert time.monotonic() < deadline, "the browser's media key never came"
            got = [e for e in await secure.sync_inbox() if isinstance(e, CallKey)]
            await bot.call_heartbeat(call.id)
            await asyncio.sleep(0.3)
        assert got[0].call_id == call.id and len(got[0].key) == 32
        roster = await bot.get_call(call.id)
        assert secure.device_id in {p.device_id for p in roster.participants}
        sent = await secure.send_call_key(roster, 7 << 8, os.urandom(32))
        assert len(sent) == 1
        deadline = time.monotonic() + 20
        while True:
            keys = await a.evaluate("[...window.secureconnect.call().keysFrom.keys()]")
            if secure.device_id in keys:
                break
            assert time.monotonic() < deadline, keys
            await asyncio.sleep(0.3)
        await bot.leave_call(call.id)
    finally:
        await bot.aclose()
    await a.wait_for_selector("#call-screen", state="detached", timeout=20000)
    await close(a)


async def test_a_call_on_a_phone_in_vietnamese(net_browser, media_server) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "locale": "vi-VN"}
    a = await pages.open_client(
        net_browser, media_server.url, permissions=["camera", "microphone"], **phone
    )
    b = await pages.open_client(
        net_browser, media_server.url, permissions=["camera", "microphone"], **phone
    )
    alice, bob = unique("an"), unique("binh")
    await pages.register(a, alice, PASSWORD)
    await pages.register(b, bob, PASSWORD)
    await pages.start_conversation(a, bob)
    await pages.accept_request(b, alice)
    await a.click("#call-video")
    incoming = await b.wait_for_selector("#incoming-call", timeout=20000)
    assert "đang gọi video" in (await incoming.text_content() or "")
    assert await b.text_content("#accept-call") == "Nghe"
    await pages.shot(b, "24-incoming-phone-vi")
    await b.click("#accept-call")
    await media_flows(b)
    assert await b.text_content("#call-e2ee") == "Mã hóa đầu cuối"
    # The microphone's, not the conversation's "mute" (notifications), which once won.
    assert await b.text_content("#toggle-mic") == "Tắt mic"
    await frames_from_each(b, 1)
    await pages.shot(b, "25-call-phone-vi")
    await b.click("#leave-call")
    await a.wait_for_selector("#call-screen", state="detached", timeout=20000)
    await close(a, b)


# The ingress of a deployment with two video-service replicas, on the test network's link.
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream replicas {{
    server {host}:{a} max_fails=1 fail_timeout=60s;
    server {host}:{b} max_fails=1 fail_timeout=60s;
  }}
  server {{
    listen {host}:{port};
    proxy_next_upstream error timeout;
    proxy_set_header Host $http_host;
    location = /v1/events {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
    }}
    location / {{ proxy_pass http://replicas; }}
  }}
}}
"""


@pytest.fixture
def two_replicas(
    net: ClientNet, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str], list[ServerProcess]]]:
    """Two replicas (each with its own Janus and coturn) on PostgreSQL and Redis, behind nginx:
    (the ingress URL, their settings, the replicas)."""
    for tool in ("nginx", "redis-server", "janus", "turnserver"):
        if shutil.which(tool) is None:
            if in_ci():
                pytest.fail(f"{tool} is required in CI")
            pytest.skip(f"{tool} is not installed")
    redis = RedisProcess()
    redis.start()
    env, database = backend_env("postgresql")
    env.update(
        {
            "SECURECONNECT_REDIS_URL": redis.url,
            "SECURECONNECT_HOST": net.host_ip,
            "SECURECONNECT_SFU": "true",
            "SECURECONNECT_MEDIA_ADDRESS": net.host_ip,
            "SECURECONNECT_TURN_PORT": "0",
            "SECURECONNECT_CALL_RING_S": "30",
        }
    )
    replicas: list[ServerProcess] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for name, rtp, relay in (
            ("a", "23300-23499", "23500-23599"),
            ("b", "23600-23799", "23800-23899"),
        ):
            (tmp_path / name).mkdir()
            extra = {"SECURECONNECT_JANUS_RTP_PORTS": rtp, "SECURECONNECT_TURN_RELAY_PORTS": relay}
            replicas.append(ServerProcess(tmp_path / name, {**env, **extra}).start().wait_media())
        port = free_port()
        conf = tmp_path / "nginx.conf"
        a, b = replicas
        conf.write_text(
            NGINX_CONF.format(tmp=tmp_path, host=net.host_ip, port=port, a=a.port, b=b.port)
        )
        nginx = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.DEVNULL
        )
        url = f"http://{net.host_ip}:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield url, env, replicas
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        for server in replicas:
            server.stop()
        redis.stop()
        drop_database(database)


async def test_a_replica_shut_down_mid_call_the_browsers_carry_on_through_the_other(
    net: ClientNet, two_replicas, tmp_path: Path
) -> None:
    """A rolling update: the video-service replica hosting a call gets SIGTERM. Both people's
    browsers, through the ingress, move to the other replica and its Janus by themselves, and
    see and hear each other again under end-to-end encryption."""
    url, env, replicas = two_replicas
    async with browser_in(net, tmp_path, url) as browser:
        people = []
        for name in (unique("alice"), unique("bob")):
            page = await pages.open_client(browser, url, permissions=["camera", "microphone"])
            await pages.register(page, name, PASSWORD)
            people.append((name, page))
        (alice, a), (bob, b) = people
        await pages.start_conversation(a, bob)
        await pages.accept_request(b, alice)
        await a.click("#call-video")
        await b.wait_for_selector("#incoming-call", timeout=20000)
        await b.click("#accept-call")
        for page in (a, b):
            await media_flows(page)
        call_id = await a.evaluate("window.secureconnect.call().id")
        host = await call_owner(env, call_id)
        hosting = next(r for r in replicas if host.endswith(f":{r.port}"))
        other = next(r for r in replicas if r is not hosting)
        seats = [await page.evaluate("window.secureconnect.call().feedId") for page in (a, b)]
        await asyncio.to_thread(hosting.stop)  # SIGTERM
        assert '"released calls"' in hosting.log_path.read_text()  # a graceful stop, not a crash
        stopped = time.monotonic()
        for page, seat in zip((a, b), seats, strict=True):
            # A new seat on the other replica's Janus, taken without anyone pressing anything.
            while await page.evaluate("window.secureconnect.call().feedId") == seat:
                assert time.monotonic() < stopped + 30, (await stats(page), page.errors[-5:])
                await asyncio.sleep(0.2)
        moved = time.monotonic() - stopped
        assert moved < 15, f"the browsers took {moved:.1f} s to move"  # not a heartbeat's wait
        for page in (a, b):
            now = await media_flows(page, timeout=90)
            assert now["state"] == "in-call" and now["decryptFailures"] == 0, now
        await frames_from_each(a, 1)
        await frames_from_each(b, 1)
        assert (await call_owner(env, call_id)).endswith(f":{other.port}")
        for page in (a, b):
            assert not [e for e in page.errors if "status of 500" in e], page.errors
        await close(a, b)
