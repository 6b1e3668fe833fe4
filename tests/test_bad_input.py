"""Bad input gets a clear 4xx naming the problem (or a WebSocket close code), loses nothing that
was already accepted, and never produces a 500."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import call, error_of, listening, metric, ws_url


@pytest.fixture
async def pair(user):
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    kept = await alice.send(conv.id, b"already accepted", content_type="text/plain")
    return alice, bob, conv, kept


def message(body: bytes = b"x", **over):
    return {
        "client_msg_id": "c1",
        "content_type": "text/plain",
        "body": base64.b64encode(body).decode(),
        **over,
    }


async def test_malformed_and_oversized_messages(server, pair) -> None:
    alice, bob, conv, _kept = pair
    token, path = alice.token, f"/v1/conversations/{conv.id}/messages"
    cases = [
        (
            call(
                server,
                "POST",
                path,
                token,
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            (422, "invalid_request"),
        ),
        (call(server, "POST", path, token, json={"body": "aGk="}), (422, "invalid_request")),
        (call(server, "POST", path, token, json=message(body=b"")), (422, "invalid_request")),
        (
            call(server, "POST", path, token, json={**message(), "body": "***not base64***"}),
            (422, "invalid_request"),
        ),
        (
            call(server, "POST", path, token, json=message(client_msg_id="has space")),
            (422, "invalid_request"),
        ),
        (
            call(server, "POST", path, token, json=message(content_type="nonsense")),
            (422, "invalid_request"),
        ),
        (
            call(server, "POST", path, token, json=message(body=b"x" * (64 * 1024 + 1))),
            (413, "message_too_large"),
        ),
        (
            call(
                server,
                "POST",
                path,
                token,
                content=b"{" + b" " * 300_000 + b"}",
                headers={"content-type": "application/json"},
            ),
            (413, "too_large"),
        ),
        (call(server, "POST", path, token, json=[1, 2]), (422, "invalid_request")),
    ]
    for response, expected in cases:
        assert error_of(response) == expected, response.text
    body_error = call(server, "POST", path, token, json={**message(), "body": "***"}).json()
    assert "body" in body_error["error"]["message"]
    history = await bob.history(conv.id)
    assert [m.body for m in history.messages if m.kind == "message"] == [b"already accepted"]


async def test_bad_sequence_ranges(server, pair) -> None:
    alice, _, conv, kept = pair
    path = f"/v1/conversations/{conv.id}/messages"
    for query in (
        "after=-1",
        f"after={kept.seq + 1}",
        "before=0",
        "after=1&before=2",
        "limit=0",
        "limit=100000",
    ):
        response = call(server, "GET", f"{path}?{query}", alice.token)
        assert error_of(response) == (400, "invalid_range"), query
    assert error_of(call(server, "GET", f"{path}?after=abc", alice.token)) == (
        422,
        "invalid_request",
    )
    receipt = call(
        server,
        "POST",
        f"/v1/conversations/{conv.id}/receipts",
        alice.token,
        json={"read_seq": kept.seq + 5},
    )
    assert error_of(receipt) == (400, "invalid_range")


async def test_bad_conversation_requests(server, user) -> None:
    alice, bob = await user("alice"), await user("bob")
    token = alice.token
    create = "/v1/conversations"
    assert error_of(
        call(server, "POST", create, token, json={"kind": "direct", "members": []})
    ) == (400, "invalid_members")
    assert error_of(
        call(
            server,
            "POST",
            create,
            token,
            json={"kind": "direct", "members": [bob.login_info.username, "someone"]},
        )
    ) == (400, "invalid_members")
    assert error_of(
        call(
            server,
            "POST",
            create,
            token,
            json={"kind": "group", "members": ["nobody-by-this-name"]},
        )
    ) == (404, "user_not_found")
    assert error_of(call(server, "POST", create, token, json={"kind": "room"})) == (
        422,
        "invalid_request",
    )
    conv = await alice.direct(bob.login_info.username)
    assert error_of(
        call(server, "POST", f"{create}/{conv.id}/members", token, json={"username": "x" * 5})
    ) == (404, "user_not_found")
    assert error_of(
        call(server, "DELETE", f"{create}/{conv.id}/members/{bob.login_info.username}", token)
    ) == (400, "direct_conversation")
    assert error_of(call(server, "GET", "/v1/no-such-thing", token)) == (404, "not_found")
    assert error_of(call(server, "PUT", "/v1/me", token)) == (405, "method_not_allowed")


async def test_other_users_conversation_is_invisible_and_unwritable(server, user) -> None:
    alice, bob, mallory = await user("alice"), await user("bob"), await user("mallory")
    conv = await alice.create_group([bob.login_info.username], name="private")
    await alice.send(conv.id, b"secret plans", content_type="text/plain")
    token, base = mallory.token, f"/v1/conversations/{conv.id}"
    attempts = [
        call(server, "GET", base, token),
        call(server, "GET", f"{base}/messages", token),
        call(server, "POST", f"{base}/messages", token, json=message()),
        call(server, "GET", f"{base}/members", token),
        call(
            server, "POST", f"{base}/members", token, json={"username": mallory.login_info.username}
        ),
        call(server, "DELETE", f"{base}/members/{bob.login_info.username}", token),
        call(server, "POST", f"{base}/receipts", token, json={"read_seq": 1}),
        call(server, "GET", f"{base}/receipts", token),
        call(server, "POST", f"{base}/typing", token, json={"typing": True}),
    ]
    for response in attempts:
        assert error_of(response) == (404, "conversation_not_found"), response.request.url
    assert conv.id not in [c.id for c in await mallory.conversations()]
    async with listening(mallory) as spy:
        await alice.send(conv.id, b"more secrets", content_type="text/plain")
        await bob.history(conv.id)
        assert spy.messages() == []
    members = [m.username for m in await alice.members(conv.id)]
    assert mallory.login_info.username not in members


async def close_code_after(server, *frames: str | bytes) -> tuple[int, str]:
    async with connect(ws_url(server)) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason


async def test_websocket_refuses_bad_frames_with_close_codes(server, user) -> None:
    alice = await user("alice")
    auth = json.dumps({"type": "auth", "protocol": 2, "token": alice.token})
    assert (await close_code_after(server))[0] == 4408  # no auth frame in time
    assert (await close_code_after(server, "not json"))[0] == 4400
    assert (await close_code_after(server, b"\x00\x01"))[0] == 4400
    assert (await close_code_after(server, json.dumps({"type": "ping"})))[0] == 4400
    bad_token = json.dumps({"type": "auth", "protocol": 2, "token": "sct_nope"})
    assert await close_code_after(server, bad_token) == (4401, "invalid_token")
    assert (await close_code_after(server, auth, json.dumps({"type": "dance"})))[0] == 4400
    code, reason = await close_code_after(server, auth, json.dumps({"type": "ack", "seq": "x"}))
    assert code == 4400 and "conversation_id" in reason
    code, reason = await close_code_after(
        server,
        json.dumps({"type": "auth", "protocol": 2, "token": alice.token, "cursors": {"c": -1}}),
    )
    assert code == 4400 and "cursors" in reason


HUGE = 2**63  # one past what a 64-bit column holds


async def test_numbers_beyond_64_bits_and_deep_nesting_are_refused_not_500(server, pair) -> None:
    """Found by fuzzing (issue 15): such numbers reached the database and came back as 500s
    (on PostgreSQL the connection was lost too), and nested JSON closed the socket with 1011."""
    alice, _bob, conv, kept = pair
    token = alice.token
    answers = [
        call(server, "GET", f"/v1/inbox?after={HUGE}", token),
        call(server, "POST", "/v1/inbox/ack", token, json={"up_to": HUGE}),
        call(server, "GET", f"/v1/conversations/{conv.id}/messages?after={HUGE}", token),
        call(server, "GET", f"/v1/conversations/{conv.id}/messages?before={-HUGE - 1}", token),
        call(
            server, "POST", f"/v1/conversations/{conv.id}/receipts", token, json={"read_seq": HUGE}
        ),
    ]
    for answer in answers:
        assert error_of(answer) == (422, "invalid_request"), answer.text
    assert "between" in answers[1].json()["error"]["message"]
    # The server, and its database connections, are fine: the same requests in range work.
    page = call(server, "GET", f"/v1/conversations/{conv.id}/messages?after=0", token).json()
    assert page["events"][-1]["seq"] == kept.seq
    assert call(server, "GET", f"/v1/inbox?after={HUGE - 1}", token).status_code == 200
    auth = json.dumps({"type": "auth", "protocol": 2, "token": token})
    for frames in (
        [auth, json.dumps({"type": "inbox_ack", "up_to": HUGE})],
        [auth, json.dumps({"type": "ack", "conversation_id": conv.id, "seq": HUGE})],
        [json.dumps({"type": "auth", "protocol": 2, "token": token, "cursors": {conv.id: HUGE}})],
        ["[" * 30000 + "]" * 30000],  # before auth
        [auth, "[" * 30000 + "]" * 30000],  # and after
    ):
        code, reason = await close_code_after(server, *frames)
        assert code == 4400, (code, reason)
    assert not [e for e in server.logs() if e.get("status", 0) >= 500]


async def test_a_client_of_the_old_protocol_is_told_to_update(server, user) -> None:
    """Protocol 1 clients expected a receipt frame per member; rather than leave them waiting
    for receipts that never come, the server refuses them with a reason they can show."""
    alice = await user("alice")
    old = json.dumps({"type": "auth", "token": alice.token, "cursors": {}})
    code, reason = await close_code_after(server, old)
    assert code == 4400 and "protocol 2" in reason and "update the client" in reason


async def test_websocket_answers_pings_and_reports_non_fatal_errors(server, user) -> None:
    alice = await user("alice")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": alice.token}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"type": "typing", "conversation_id": "nope", "typing": True}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "conversation_not_found"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}  # still open


async def test_a_flood_of_frames_is_dropped_with_an_error_and_the_socket_lives(
    server, user
) -> None:
    """1,000 pings at once: the first hundred or so are answered, the rest dropped with a
    rate_limited error; a second later the same socket answers again."""
    alice = await user("alice")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": alice.token}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        assert json.loads(await ws.recv())["type"] == "ready"
        started = time.monotonic()
        for _ in range(1000):
            await ws.send(json.dumps({"type": "ping"}))
        replies: list[dict] = []
        with contextlib.suppress(TimeoutError):
            while True:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
        pongs = [r for r in replies if r["type"] == "pong"]
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        # The bucket holds 100 and refills at 20 a second while the pings go out.
        assert 100 <= len(pongs) <= 101 + 20 * (time.monotonic() - started), len(pongs)
        assert limited and limited[0]["frame"] == "ping", replies[-3:]
        await asyncio.sleep(1.0)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_revoked_session_loses_its_live_connection(server, user) -> None:
    alice = await user("alice")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": alice.token}))
        await ws.recv()
        await ws.recv()
        await alice.logout()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd.code == 4401


@pytest.mark.slow  # a server of its own, and megabytes a device does not read
async def test_a_device_that_stops_reading_is_cut_off_by_what_waits_for_it(
    own_server, make_user
) -> None:
    """With ordinary socket buffers, a device that stops reading is cut off once what waits
    for it (in the server's queue, its socket buffer and the kernel's send queue) passes the
    limit, long before the event queue itself would fill; its log line and metric come at
    once, and the connection is gone within the close's grace."""
    own_server.extra_env["SECURECONNECT_WS_SEND_BUFFER_BYTES"] = str(1024 * 1024)
    own_server.start()
    alice, bob = await make_user(own_server, "alice"), await make_user(own_server, "bob")
    conv = await alice.direct(bob.login_info.username)
    big = os.urandom(60_000)
    async with connect(ws_url(own_server), max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": bob.token}))
        await ws.recv()
        await ws.recv()
        ws.transport.pause_reading()  # as a device that stopped reading
        started = time.monotonic()
        for i in range(120):  # 7 MB, far fewer events than ws_send_queue's 1000
            await alice.send(conv.id, big + bytes([i]), content_type="x/y")
            closed = [
                line
                for line in own_server.logs()
                if line.get("msg") == "websocket closed" and line.get("close_code") == 4429
            ]
            if closed:
                break
        assert closed, "never cut off"
        assert closed[0]["user"] == bob.login_info.username
        assert time.monotonic() - started < 20
        metrics = httpx.get(f"{own_server.url}/metrics").text
        assert metric(metrics, 'secureconnect_websocket_closed_total{reason="too_slow"}') == 1
        ws.transport.resume_reading()
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 15)


@pytest.mark.slow  # fills a socket until the server gives up on it
async def test_slow_reader_is_disconnected_then_catches_up(server, user) -> None:
    """A device that stops reading is cut off (4429) instead of growing server memory; when it
    comes back it resumes from its cursor and misses nothing."""
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    big = os.urandom(60_000)  # ciphertext-like: incompressible
    seen: dict[int, bytes] = {}
    # A small receive window, as on a slow phone link, so that backpressure reaches the server
    # instead of disappearing into loopback's multi-megabyte socket buffers.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    async with connect(ws_url(server), sock=sock, max_size=2**24, max_queue=1) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": bob.token}))
        await ws.recv()
        await ws.recv()
        # Sent until the server has cut bob off, and no further: the close frame waits behind
        # what he did not read for CLOSE_WAIT_S only, and on a busy machine 300 sends outlast it.
        cut_off = 'secureconnect_websocket_closed_total{reason="too_slow"}'
        before = metric(httpx.get(f"{server.url}/metrics").text, cut_off)
        sent = []
        for i in range(300):
            sent.append(await alice.send(conv.id, big + bytes([i % 256]), content_type="x/y"))
            if metric(httpx.get(f"{server.url}/metrics").text, cut_off) > before:
                break
        else:
            pytest.fail("300 messages of 60 kB and bob, who reads nothing, was never cut off")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "message" and frame["kind"] == "message":
                    seen[frame["seq"]] = base64.b64decode(frame["body"])
    assert closed.value.rcvd.code == 4429
    assert len(seen) < len(sent)
    last = max(seen) if seen else 1
    async with listening(bob, cursors={conv.id: last}) as back:
        rest = back.messages(conv.id)
    assert [m.seq for m in rest] == [m.seq for m in sent if m.seq > last]
    assert {**seen, **{m.seq: m.body for m in rest}} == {m.seq: m.body for m in sent}
