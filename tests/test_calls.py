"""Calls through the real SFU and TURN server: video-service runs Janus and coturn, and the SDK
does the signaling as a bot or a test would (it sends no media; the browser tests do).

What a user would notice: a call rings the other members (not a stranger's message request),
only members get in, the roster shows who is there, a removed member is put out, a call that
ended or was missed shows in the conversation, TURN credentials from the call work on coturn
and stop working when they expire, and coturn will not relay into the private network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest

from secureconnect.client import ApiError, Call, CallChanged, Client
from secureconnect.diagnostics.facts import Facts
from secureconnect.diagnostics.probes import turn_probe
from secureconnect.diagnostics.rules import diagnose
from secureconnect.stun import TurnClient, TurnRefused
from secureconnect.video.sfu import local_addresses, signed_token
from secureconnect.video.turn import credentials
from tests.helpers import Listener, listening
from tests.server import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.solo,
]  # the server with Janus and coturn (tests/conftest.py)

NewUser = Callable[[str], Awaitable[Client]]


def _offer() -> dict[str, str]:
    """A publisher's SDP offer, as a browser would send (Opus and VP8). Its ICE never
    completes: enough for Janus to negotiate and answer, which is what signaling is about."""
    fingerprint = ":".join(f"{b:02X}" for b in uuid.uuid4().bytes * 2)
    lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS s",
    ]
    streams = (("0", "audio", 111, "opus/48000/2"), ("1", "video", 96, "VP8/90000"))
    for mid, media, pt, codec in streams:
        lines += [
            f"m={media} 9 UDP/TLS/RTP/SAVPF {pt}",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:sc01",
            "a=ice-pwd:secureconnectsecureconnect",
            "a=ice-options:trickle",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:actpass",
            f"a=mid:{mid}",
            "a=sendonly",
            f"a=msid:s {media}track",
            "a=rtcp-mux",
            f"a=rtpmap:{pt} {codec}",
            f"a=ssrc:{1000 + pt} cname:sc",
        ]
    return {"type": "offer", "sdp": "\r\n".join(lines) + "\r\n"}


@pytest.fixture
def new_user(make_user, calls_server: ServerProcess) -> NewUser:  # type: ignore[no-untyped-def]
    """A new user logged in on the server with Janus and coturn."""
    return lambda prefix: make_user(calls_server, prefix)


async def wait_call(
    listener: Listener, predicate: Callable[[Call], bool], timeout: float = 10.0
) -> Call:
    """The newest call event that satisfies ``predicate``, waiting for one."""

    def matching(heard: Listener) -> list[Call]:
        return [e.call for e in heard.events if isinstance(e, CallChanged) and predicate(e.call)]

    await listener.wait_for(matching, timeout)
    return matching(listener)[-1]


def username(client: Client) -> str:
    assert client.login_info is not None
    return client.login_info.username


async def test_a_call_rings_members_and_only_members_get_in(new_user: NewUser) -> None:
    alice, bob, mallory = await new_user("alice"), await new_user("bob"), await new_user("mal")
    conv = await alice.direct(username(bob))
    await bob.accept(conv.id)  # a stranger's call would not ring (the test below)
    async with listening(bob) as bob_hears:
        call = await alice.start_call(conv.id, "video")
        assert call.state == "ringing" and call.caller == username(alice)
        rang = await wait_call(bob_hears, lambda c: c.id == call.id and c.state == "ringing")
        assert rang.media == "video"
    # Pressing "call" again, or the other person calling back, gives the same call.
    assert (await bob.start_call(conv.id)).id == call.id
    # Someone outside the conversation sees nothing and cannot get in.
    for attempt in (mallory.get_call(call.id), mallory.join_call(call.id)):
        with pytest.raises(ApiError) as refused:
            await attempt
        assert refused.value.status in (403, 404)
    with pytest.raises(ApiError) as refused:
        await mallory.start_call(conv.id)
    assert refused.value.status == 404
    await alice.leave_call(call.id)


async def test_a_strangers_call_waits_as_the_message_request_does(new_user: NewUser) -> None:
    alice, bob, carol = await new_user("alice"), await new_user("bob"), await new_user("carol")
    conv = await alice.direct(username(bob))
    async with listening(bob) as bob_hears:
        missed = await alice.start_call(conv.id)
        await alice.join_call(missed.id)
        # Nothing rings on Bob's devices; when the ringing stops (3 s here) the request
        # shows a missed call, as Signal's does.
        await bob_hears.wait_for(lambda heard: heard.messages(conv.id, kind="call"), timeout=20)
        assert not [e for e in bob_hears.events if isinstance(e, CallChanged)]
    entry = (await bob.history(conv.id)).messages[-1]
    assert entry.call is not None and entry.call["outcome"] == "missed"
    assert [c.request for c in await bob.conversations() if c.id == conv.id] == [True]
    # Alice calls again: Bob's open calls leave it out (as Carol's, who is not in the 1:1)
    # until he accepts; then he finds it, and hears the call as it goes on.
    call = await alice.start_call(conv.id)
    assert await bob.open_calls() == [] and await carol.open_calls() == []
    await bob.accept(conv.id)
    assert [c.id for c in await bob.open_calls()] == [call.id]
    async with listening(bob) as bob_hears:
        await alice.join_call(call.id)
        await wait_call(bob_hears, lambda c: c.id == call.id and len(c.participants) == 1)
    await alice.leave_call(call.id)
    # Joining a stranger's call answers the request, as a reply does: Carol learns of the call
    # (she opens the request) and joins without pressing "accept" first.
    other = await alice.create_group([username(carol)], "pair")
    call = await alice.start_call(other.id)
    await alice.join_call(call.id)
    assert (await carol.current_call(other.id)).id == call.id
    async with listening(carol) as carol_hears:
        await carol.join_call(call.id)
        await alice.configure_call(call.id, audio=False)
        await wait_call(
            carol_hears,
            lambda c: any(p.username == username(alice) and not p.audio for p in c.participants),
        )
    assert [c.request for c in await carol.conversations() if c.id == other.id] == [False]
    for client in (alice, carol):
        await client.leave_call(call.id)


async def test_join_roster_leave_and_the_call_in_the_timeline(new_user: NewUser) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    call = await alice.start_call(conv.id, "audio")
    joined = await alice.join_call(call.id)
    assert joined.e2ee == "sframe" and joined.feed_id > 0
    # TURN credentials come with the seat: coturn's REST scheme, for this user, short-lived.
    assert alice.login_info is not None
    turn = joined.ice_servers[0]
    expiry, _, user_id = (turn.username or "").partition(":")
    assert user_id == alice.login_info.user_id
    assert 0 < int(expiry) - time.time() <= 3600
    async with listening(alice) as alice_hears:
        await bob.join_call(call.id)
        live = await wait_call(alice_hears, lambda c: len(c.participants) == 2)
        assert live.state == "live" and live.answered_at is not None
        assert {p.username for p in live.participants} == {username(alice), username(bob)}
        # Mute shows in the roster for everyone.
        await bob.configure_call(call.id, audio=False)
        muted = await wait_call(
            alice_hears,
            lambda c: any(p.username == username(bob) and not p.audio for p in c.participants),
        )
        assert muted.state == "live"
        await bob.leave_call(call.id)  # in a 1:1, one hanging up ends it for both
        ended = await wait_call(alice_hears, lambda c: c.state == "ended")
        assert ended.outcome == "ended"
        await alice_hears.wait_for(lambda heard: heard.messages(conv.id, kind="call"))
    entry = (await alice.history(conv.id)).messages[-1]
    assert entry.kind == "call" and entry.call is not None
    assert entry.call["outcome"] == "ended" and entry.call["media"] == "audio"
    assert entry.call["participants"] == [username(alice), username(bob)]
    assert entry.call["duration_ms"] >= 0
    # An ended call takes no one in; a new one can start.
    with pytest.raises(ApiError) as refused:
        await bob.join_call(call.id)
    assert refused.value.code == "call_ended"
    assert (await bob.start_call(conv.id)).id != call.id
    await bob.leave_call((await bob.current_call(conv.id)).id)


async def test_unanswered_and_declined_calls_show_as_such(new_user: NewUser) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    missed = await alice.start_call(conv.id)
    await alice.join_call(missed.id)
    # Ringing stops after SECURECONNECT_CALL_RING_S (3 s here) with nobody answering: missed.
    deadline = time.monotonic() + 15
    while (await alice.get_call(missed.id)).state != "ended":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert (await alice.get_call(missed.id)).outcome == "missed"
    declined = await alice.start_call(conv.id)
    await alice.join_call(declined.id)
    answer = await bob.decline_call(declined.id)
    assert answer.state == "ended" and answer.outcome == "declined"
    outcomes = [m.call["outcome"] for m in (await bob.history(conv.id)).messages if m.call]
    assert outcomes == ["missed", "declined"]


async def test_a_silent_device_is_dropped_and_heartbeats_keep_one_in(new_user: NewUser) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.create_group([username(bob)], "pair")  # a 1:1 would end
    call = await alice.start_call(conv.id)
    await alice.join_call(call.id)
    await bob.join_call(call.id)
    for _ in range(12):  # 6 s, past the 4 s timeout: alice beats, bob went quiet
        await alice.call_heartbeat(call.id)
        await asyncio.sleep(0.5)
    present = {p.username for p in (await alice.get_call(call.id)).participants}
    assert present == {username(alice)}
    with pytest.raises(ApiError) as refused:
        await bob.call_heartbeat(call.id)
    assert refused.value.code == "not_in_call"
    await alice.leave_call(call.id)


async def test_a_removed_member_is_put_out_of_the_call(new_user: NewUser) -> None:
    alice, bob, carol = await new_user("alice"), await new_user("bob"), await new_user("carol")
    group = await alice.create_group([username(bob), username(carol)], "standup")
    call = await alice.start_call(group.id)
    for client in (alice, bob, carol):
        await client.join_call(call.id)
    async with listening(bob) as bob_hears:
        await alice.remove_member(group.id, username(carol))
        after = await wait_call(
            bob_hears,
            lambda c: (
                c.id == call.id and username(carol) not in {p.username for p in c.participants}
            ),
        )
        assert {p.username for p in after.participants} == {username(alice), username(bob)}
    for attempt in (carol.join_call(call.id), carol.call_heartbeat(call.id)):
        with pytest.raises(ApiError) as refused:
            await attempt
        assert refused.value.status == 403
    for client in (alice, bob):
        await client.leave_call(call.id)


async def test_a_removal_the_call_service_never_heard_of_still_puts_them_out(
    new_user: NewUser, calls_server: ServerProcess
) -> None:
    """Heartbeats are answered from memory between the call service's store rounds, so a
    removal whose event it missed (a bus message lost) must be caught by the round itself:
    carol is out within a round or two, heartbeating all along, not after the 4 s of silence
    that would drop any device."""
    alice, bob, carol = await new_user("alice"), await new_user("bob"), await new_user("carol")
    group = await alice.create_group([username(bob), username(carol)], "standup")
    call = await alice.start_call(group.id)
    for client in (alice, bob, carol):
        await client.join_call(call.id)
    for client in (alice, bob, carol):
        await client.call_heartbeat(call.id)
    # Removed in the store alone: no membership event, as if the bus had dropped it.
    with sqlite3.connect(calls_server.data_dir / "secureconnect.db") as db:
        db.execute(
            "UPDATE members SET left_seq = 1 WHERE conversation_id = ? AND user_id"
            " = (SELECT id FROM users WHERE username = ?)",
            (group.id, username(carol)),
        )
    started = time.monotonic()
    while True:
        with contextlib.suppress(ApiError):
            await carol.call_heartbeat(call.id)
        present = {p.username for p in (await alice.get_call(call.id)).participants}
        if username(carol) not in present:
            break
        assert time.monotonic() - started < 3.0, "carol is still in the call"
        await asyncio.sleep(0.25)
    assert present == {username(alice), username(bob)}
    with pytest.raises(ApiError) as refused:
        await carol.call_heartbeat(call.id)
    assert refused.value.status == 403
    for client in (alice, bob):
        await client.leave_call(call.id)


def _janus_settings(server: ServerProcess) -> dict[str, str]:
    folder = server.data_dir / "janus"
    text = (folder / "janus.jcfg").read_text() + (folder / "janus.transport.http.jcfg").read_text()
    return dict(re.findall(r'^\s*(\w+) = "?([^"\n]*)"?$', text, re.M))


async def test_a_forged_janus_join_is_refused(
    new_user: NewUser, calls_server: ServerProcess
) -> None:
    """Even someone holding Janus's API secret (read off this machine) cannot enter a room: it
    wants a per-device token that video-service adds only for members it let in."""
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    call = await alice.start_call(conv.id)
    await alice.join_call(call.id)
    with sqlite3.connect(calls_server.data_dir / "secureconnect.db") as db:
        (room,) = db.execute("SELECT room FROM calls WHERE id = ?", (call.id,)).fetchone()
    settings = _janus_settings(calls_server)
    token = signed_token(settings["token_auth_secret"], ["janus.plugin.videoroom"], 60, time.time())
    base = f"http://127.0.0.1:{settings['port']}/janus"
    async with httpx.AsyncClient(timeout=5) as http:

        async def post(path: str, body: dict[str, object]) -> dict[str, object]:
            answer = await http.post(
                base + path, json={"transaction": uuid.uuid4().hex, "token": token, **body}
            )
            data: dict[str, object] = answer.json()
            return data

        session = (await post("", {"janus": "create"}))["data"]["id"]  # type: ignore[index]
        handle = (
            await post(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        )["data"]["id"]  # type: ignore[index]
        await post(
            f"/{session}/{handle}",
            {"janus": "message", "body": {"request": "join", "ptype": "publisher", "room": room}},
        )
        polled = (await http.get(f"{base}/{session}", params={"token": token, "maxev": 5})).json()
        events = polled if isinstance(polled, list) else [polled]
        refusals = [e["plugindata"]["data"] for e in events if "plugindata" in e]
        assert refusals and refusals[0].get("error_code") == 433, events  # unauthorized
        # Nor can it put a member out, or destroy the room, without the room's secret.
        for request in ({"request": "kick", "id": 1}, {"request": "destroy"}):
            refused = await post(
                f"/{session}/{handle}",
                {"janus": "message", "body": {**request, "room": room, "secret": "guess"}},
            )
            assert refused["plugindata"]["data"]["error_code"] == 433  # type: ignore[index]
    assert (await alice.get_call(call.id)).state == "ringing"
    await alice.leave_call(call.id)


async def test_publish_subscribe_and_bad_media_are_told_apart(new_user: NewUser) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    call = await alice.start_call(conv.id)
    # Nothing before joining.
    with pytest.raises(ApiError) as refused:
        await alice._call("POST", f"/v1/calls/{call.id}/publish", json={"jsep": _offer()})
    assert refused.value.code == "not_in_call"
    alice_seat = await alice.join_call(call.id)
    bob_seat = await bob.join_call(call.id)
    answer = await alice._call("POST", f"/v1/calls/{call.id}/publish", json={"jsep": _offer()})
    assert answer["jsep"]["type"] == "answer" and "m=video" in answer["jsep"]["sdp"]
    # Janus is told the media is end-to-end encrypted: it forwards frames it cannot read.
    with pytest.raises(ApiError) as refused:
        await alice._call(
            "POST",
            f"/v1/calls/{call.id}/publish",
            json={"jsep": {"type": "offer", "sdp": "v=0\r\nnonsense"}},
        )
    assert refused.value.status == 400 and refused.value.code == "bad_media"
    with pytest.raises(ApiError) as refused:
        await bob.subscribe_call(call.id, [bob_seat.feed_id + 1])
    assert refused.value.code == "unknown_feed"
    # Alice's media never flowed (this offer's ICE cannot complete): nothing to receive yet.
    with pytest.raises(ApiError) as refused:
        await bob.subscribe_call(call.id, [alice_seat.feed_id])
    assert refused.value.code == "unknown_feed"
    # A key frame is asked of one's own encoder, or of a feed one receives: not of anyone else.
    await bob._call("POST", f"/v1/calls/{call.id}/keyframe", json={})
    with pytest.raises(ApiError) as refused:
        await bob._call(
            "POST", f"/v1/calls/{call.id}/keyframe", json={"feed_id": alice_seat.feed_id}
        )
    assert refused.value.status == 400 and refused.value.code == "unknown_feed"
    for client in (alice, bob):
        await client.leave_call(call.id)


async def test_turn_credentials_work_on_coturn_until_they_expire(
    new_user: NewUser, calls_server: ServerProcess
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    call = await alice.start_call(conv.id)
    seat = await alice.join_call(call.id)
    server = seat.ice_servers[0]
    host, port = re.match(r"turn:([^:]+):(\d+)", server.urls[0]).groups()  # type: ignore[union-attr]
    assert server.username and server.credential
    turn = TurnClient(host, int(port), server.username, server.credential)
    try:
        relayed = turn.allocate()
        assert relayed.startswith(f"{host}:")
        # Relaying into the private network is refused, except to the SFU's own address.
        for private in ("10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254"):
            if private in local_addresses():
                continue
            with pytest.raises(TurnRefused) as denied:
                turn.permit(private)
            assert denied.value.code == 403
        for own in local_addresses()[:1]:
            turn.permit(own)
    finally:
        turn.close()
    # An expired credential (same secret, expiry in the past) is refused.
    secret = (calls_server.data_dir / "turn" / "turnserver.conf").read_text()
    static = re.search(r"^static-auth-secret=(.+)$", secret, re.M)
    assert static is not None
    assert alice.login_info is not None
    name, password = credentials(static.group(1), alice.login_info.user_id, -60, time.time())
    stale = TurnClient(host, int(port), name, password)
    try:
        with pytest.raises(TurnRefused) as refused:
            stale.allocate()
        assert refused.value.code == 401
    finally:
        stale.close()
    await alice.leave_call(call.id)


async def test_calls_move_the_metrics(new_user: NewUser, calls_server: ServerProcess) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    call = await alice.start_call(conv.id)
    await alice.join_call(call.id)
    await bob.join_call(call.id)
    text = httpx.get(calls_server.url + "/metrics").text
    assert re.search(r"^secureconnect_call_participants [1-9]", text, re.M), text
    assert re.search(r"^secureconnect_calls_started_total [1-9]", text, re.M)
    await alice._call("POST", f"/v1/calls/{call.id}/decrypt-failures", json={"frames": 3})
    text = httpx.get(calls_server.url + "/metrics").text
    assert re.search(r"^secureconnect_media_decrypt_failures_total [3-9]", text, re.M)
    for client in (alice, bob):
        await client.leave_call(call.id)


def test_the_status_page_shows_video_from_the_sfu(calls_server: ServerProcess) -> None:
    page = httpx.get(calls_server.url + "/v1/status").json()
    video = next(c for c in page["components"] if c["name"] == "Video calls")
    assert (video["state"], video["colour"]) == ("operational", "green")


async def test_janus_restart_changes_the_epoch_and_the_call_rejoins(
    new_user: NewUser, calls_server: ServerProcess
) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    conv = await alice.direct(username(bob))
    call = await alice.start_call(conv.id)
    before = await alice.join_call(call.id)
    await bob.join_call(call.id)
    assert calls_server.proc is not None
    pids = subprocess.run(  # noqa: ASYNC221 - one quick pgrep
        ["pgrep", "-P", str(calls_server.proc.pid), "-x", "janus"], capture_output=True, text=True
    ).stdout.split()
    os.kill(int(pids[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            again = await alice.join_call(call.id)
            break
        except ApiError as error:
            assert error.code == "calls_unavailable"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
    assert again.call.sfu_epoch > before.call.sfu_epoch
    rejoined = await bob.join_call(call.id)
    assert rejoined.feed_id != again.feed_id
    assert {p.feed_id for p in rejoined.call.participants} == {again.feed_id, rejoined.feed_id}
    for client in (alice, bob):
        await client.leave_call(call.id)


async def test_without_an_sfu_calls_are_refused_clearly(in_process_user) -> None:  # type: ignore[no-untyped-def]
    alice = await in_process_user("alice")
    bob = await in_process_user("bob")
    conv = await alice.direct(username(bob))
    with pytest.raises(ApiError) as refused:
        await alice.start_call(conv.id)
    assert refused.value.status == 503 and refused.value.code == "calls_unavailable"


async def test_the_diagnosis_allocates_on_coturn_and_names_a_wrong_secret_or_a_dead_one(
    calls_server: ServerProcess,
) -> None:
    config = (calls_server.data_dir / "turn" / "turnserver.conf").read_text()
    secret = re.search(r"^static-auth-secret=(.+)$", config, re.M)
    port = re.search(r"^listening-port=(\d+)$", config, re.M)
    assert secret is not None and port is not None
    address = f"127.0.0.1:{port.group(1)}"
    good = await turn_probe(address, secret.group(1))
    assert good.ok and good.detail.startswith("allocated a TURN relay at 127.0.0.1:"), good
    wrong = await turn_probe(address, "not the secret")
    assert not wrong.ok and "SECURECONNECT_TURN_SECRET differs" in wrong.detail
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    stopped = await turn_probe(dead, secret.group(1))
    assert not stopped.ok and ("no answer" in stopped.detail or "refused" in stopped.detail)
    facts = Facts(target="local", now_ms=0, turn=stopped)
    [finding] = [f for f in diagnose("video", facts, lambda a: "") if f.check == "turn"]
    assert finding.status == "fail" and "coturn" in finding.advice
