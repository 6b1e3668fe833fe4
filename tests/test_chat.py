"""Chat through a real server: live delivery, groups, ordering, catch-up and idempotent sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import pytest
from websockets.asyncio.client import connect

from secureconnect.client import ApiError, Client, Receipt, Typing
from tests.helpers import PASSWORD, listening, texts, ws_url


async def test_two_users_exchange_messages_live(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    async with listening(alice) as alice_rx, listening(bob) as bob_rx:
        await alice.send(conv.id, b"hi bob", content_type="text/plain")
        assert texts(await bob_rx.wait_messages(conv.id, 1)) == ["hi bob"]
        await bob.send(conv.id, b"hi alice", content_type="text/plain")
        got = await alice_rx.wait_messages(conv.id, 2)
        assert texts(got) == ["hi bob", "hi alice"]
        assert [m.sender for m in got] == [alice.login_info.username, bob.login_info.username]


async def test_direct_conversation_is_one_per_pair(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    first = await alice.direct(bob.login_info.username)
    again = await bob.direct(alice.login_info.username)
    assert first.id == again.id
    assert sorted(first.members) == sorted([alice.login_info.username, bob.login_info.username])


async def test_group_of_three_and_late_joiner_sees_only_what_follows(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    group = await alice.create_group([bob.login_info.username], name="team")
    await alice.send(group.id, b"before carol", content_type="text/plain")
    async with listening(bob) as bob_rx, listening(carol) as carol_rx:
        await alice.add_member(group.id, carol.login_info.username)
        await bob.send(group.id, b"welcome carol", content_type="text/plain")
        await carol.send(group.id, b"thanks", content_type="text/plain")
        carol_msgs = await carol_rx.wait_messages(group.id, 2)
        bob_msgs = await bob_rx.wait_messages(group.id, 3)
    assert texts(carol_msgs) == ["welcome carol", "thanks"]
    # Bob was a member all along: he also gets what was sent before he connected.
    assert texts(bob_msgs) == ["before carol", "welcome carol", "thanks"]
    # Carol's history starts at her own "added" event; the earlier message is not hers to read.
    page = await carol.history(group.id)
    assert page.messages[0].membership == {
        "action": "add",
        "actor": alice.login_info.username,
        "user": carol.login_info.username,
    }
    assert "before carol" not in [m.body.decode() for m in page.messages if m.kind == "message"]
    # Asking for earlier sequence numbers still yields only what follows her joining.
    from_start = await carol.history(group.id, after=0)
    assert from_start.messages[0].seq == page.joined_seq + 1


async def test_removed_member_stops_receiving_and_cannot_post(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    group = await alice.create_group([bob.login_info.username, carol.login_info.username])
    async with listening(carol) as carol_rx:
        await alice.remove_member(group.id, carol.login_info.username)
        await carol_rx.wait_for(lambda s: len(s.messages(group.id, kind="membership")) >= 1)
        await alice.send(group.id, b"after carol left", content_type="text/plain")
        await asyncio.sleep(0.3)
        assert carol_rx.messages(group.id) == []
    with pytest.raises(ApiError) as refused:
        await carol.send(group.id, b"let me back", content_type="text/plain")
    assert (refused.value.status, refused.value.code) == (403, "not_a_member")
    page = await carol.history(group.id)
    assert [m.body for m in page.messages if m.kind == "message"] == []
    assert page.messages[-1].membership["action"] == "remove"


async def test_only_admins_change_members_and_anyone_may_leave(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    group = await alice.create_group([bob.login_info.username])
    with pytest.raises(ApiError) as refused:
        await bob.add_member(group.id, carol.login_info.username)
    assert (refused.value.status, refused.value.code) == (403, "not_admin")
    await bob.remove_member(group.id, bob.login_info.username)
    assert [m.username for m in await alice.members(group.id)] == [alice.login_info.username]
    # The last admin leaving hands the group to the longest-standing member.
    await alice.add_member(group.id, carol.login_info.username)
    await alice.remove_member(group.id, alice.login_info.username)
    assert [(m.username, m.role) for m in await carol.members(group.id)] == [
        (carol.login_info.username, "admin")
    ]


async def test_order_is_one_sequence_under_concurrent_senders(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    group = await alice.create_group([bob.login_info.username, carol.login_info.username])
    per_sender = 25

    async def burst(client, tag: str) -> list[int]:
        seqs = []
        for i in range(per_sender):
            sent = await client.send(group.id, f"{tag}-{i}".encode(), content_type="text/plain")
            seqs.append(sent.seq)
        return seqs

    async with listening(alice) as alice_rx, listening(bob) as bob_rx:
        results = await asyncio.gather(burst(alice, "a"), burst(bob, "b"), burst(carol, "c"))
        total = 3 * per_sender
        a_seen = await alice_rx.wait_messages(group.id, total)
        b_seen = await bob_rx.wait_messages(group.id, total)
    all_seqs = sorted(s for seqs in results for s in seqs)
    assert all_seqs == list(range(2, 2 + total))  # seq 1 is the "create" event; no gaps, no repeats
    for seqs in results:
        assert seqs == sorted(seqs)  # each sender's messages keep the order they were sent in
    assert [m.seq for m in a_seen] == all_seqs
    assert [(m.seq, m.body) for m in a_seen] == [(m.seq, m.body) for m in b_seen]
    history = [
        m for m in (await carol.history(group.id, limit=500)).messages if m.kind == "message"
    ]
    assert [(m.seq, m.body) for m in history] == [(m.seq, m.body) for m in a_seen]


async def test_offline_device_catches_up_in_order_exactly_once(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    async with listening(bob) as online:
        await alice.send(conv.id, b"while online", content_type="text/plain")
        await online.wait_messages(conv.id, 1)
        await asyncio.sleep(0.8)  # the server batches acks; let this one land
    for i in range(40):
        await alice.send(conv.id, f"missed {i}".encode(), content_type="text/plain")
    # A fresh stream, as after a restart of the app: the server's cursor for this device decides.
    async with listening(bob) as back:
        await asyncio.sleep(0.3)
        caught_up = back.messages(conv.id)
        assert texts(caught_up) == [f"missed {i}" for i in range(40)]
        await alice.send(conv.id, b"live again", content_type="text/plain")
        await back.wait_messages(conv.id, 41)
        assert len(back.messages(conv.id)) == 41


async def test_a_device_that_reconnects_resumes_from_its_own_cursor(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    for i in range(5):
        await alice.send(conv.id, f"m{i}".encode(), content_type="text/plain")
    # Bob's device says it already has up to seq 4 (create + m0..m2): it gets m3, m4 only.
    async with listening(bob, cursors={conv.id: 4}) as rx:
        assert texts(rx.messages(conv.id)) == ["m3", "m4"]


async def test_retry_with_same_client_id_never_duplicates(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    first = await alice.send(conv.id, b"once", content_type="text/plain", client_msg_id="retry-1")
    again = await alice.send(conv.id, b"once", content_type="text/plain", client_msg_id="retry-1")
    assert again == first
    racing = await asyncio.gather(
        *[
            alice.send(conv.id, b"raced", content_type="text/plain", client_msg_id="race-1")
            for _ in range(6)
        ]
    )
    assert len({m.seq for m in racing}) == 1
    bodies = [m.body for m in (await bob.history(conv.id)).messages if m.kind == "message"]
    assert bodies == [b"once", b"raced"]
    with pytest.raises(ApiError) as conflict:
        await alice.send(conv.id, b"different", content_type="text/plain", client_msg_id="retry-1")
    assert (conflict.value.status, conflict.value.code) == (409, "client_msg_id_reused")


async def test_history_pages_forward_and_backward(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    for i in range(12):
        await alice.send(conv.id, f"{i}".encode(), content_type="text/plain")
    forward = [m.seq async for m in bob.all_messages(conv.id, page_size=5)]
    assert forward == list(range(1, 14))
    newest = await bob.history(conv.id, before=14, limit=3)
    assert [m.seq for m in newest.messages] == [11, 12, 13] and newest.has_more
    older = await bob.history(conv.id, before=11, limit=100)
    assert [m.seq for m in older.messages] == list(range(1, 11)) and not older.has_more


async def test_receipts_reach_the_sender_and_clear_unread(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    sent = [await alice.send(conv.id, f"{i}".encode(), content_type="text/plain") for i in range(3)]
    assert (await bob.conversation(conv.id)).unread == 3
    async with listening(alice) as alice_rx:
        await bob.mark(conv.id, read=sent[-1].seq)
        await alice_rx.wait_for(
            lambda s: any(isinstance(e, Receipt) and e.read_seq == sent[-1].seq for e in s.events)
        )
    assert (await bob.conversation(conv.id)).unread == 0
    marks = {r.username: r for r in await alice.receipts(conv.id)}
    assert marks[bob.login_info.username].read_seq == sent[-1].seq
    assert marks[bob.login_info.username].delivered_seq == sent[-1].seq
    # Marks never move back.
    await bob.mark(conv.id, read=1)
    assert (await bob.conversation(conv.id)).read_seq == sent[-1].seq


async def test_delivery_receipt_follows_the_device_ack(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    async with listening(alice) as alice_rx, listening(bob) as bob_rx:
        sent = await alice.send(conv.id, b"did you get it?", content_type="text/plain")
        await bob_rx.wait_messages(conv.id, 1)
        await alice_rx.wait_for(
            lambda s: any(
                isinstance(e, Receipt)
                and e.username == bob.login_info.username
                and e.delivered_seq >= sent.seq
                for e in s.events
            )
        )


async def test_receipts_go_to_the_sender_not_to_every_member(user) -> None:
    """In a group, bob's delivery receipt concerns alice (she sent the message), not carol."""
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    names = [bob.login_info.username, carol.login_info.username]
    group = await alice.create_group(names, name="receipts")
    async with listening(alice) as a_rx, listening(bob) as b_rx, listening(carol) as c_rx:
        sent = await alice.send(group.id, b"from alice", content_type="text/plain")
        await b_rx.wait_messages(group.id, 1)
        await c_rx.wait_messages(group.id, 1)

        def delivered(listener, who) -> bool:
            return any(
                isinstance(e, Receipt) and e.username == who and e.delivered_seq >= sent.seq
                for e in listener.events
            )

        await a_rx.wait_for(lambda s: all(delivered(s, n) for n in names))
        # Carol's own message is delivered to bob: now bob's receipt concerns carol.
        mine = await carol.send(group.id, b"from carol", content_type="text/plain")
        await b_rx.wait_messages(group.id, 2)
        await c_rx.wait_for(
            lambda s: any(
                isinstance(e, Receipt)
                and e.username == bob.login_info.username
                and e.delivered_seq >= mine.seq
                for e in s.events
            )
        )
        await asyncio.sleep(1.2)  # two ack flushes
    early = [e for e in c_rx.events if isinstance(e, Receipt) and e.delivered_seq < mine.seq]
    assert early == []  # nothing about alice's message reached carol, who did not send it


async def test_receipts_of_many_devices_arrive_together(server, make_user) -> None:
    """Five members ack within the same half second: their receipts reach the sender in one
    frame (two at most, if the acks straddle a flush), not one frame each."""
    alice = await make_user(server, "alice")
    others = [await make_user(server, "member") for _ in range(5)]
    names = [o.login_info.username for o in others]
    group = await alice.create_group(names, name="batch")
    frames: list[dict] = []
    async with connect(ws_url(server)) as ws, contextlib.AsyncExitStack() as stack:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": alice.token}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        listeners = [await stack.enter_async_context(listening(o)) for o in others]
        sent = await alice.send(group.id, b"to all", content_type="text/plain")
        for listener in listeners:
            await listener.wait_messages(group.id, 1)
        covered: set[str] = set()

        async def collect() -> None:
            while covered != set(names):
                frame = json.loads(await ws.recv())
                if frame["type"] == "receipts":
                    frames.append(frame)
                    covered.update(
                        r["username"] for r in frame["receipts"] if r["delivered_seq"] >= sent.seq
                    )

        await asyncio.wait_for(collect(), 10)
    assert 1 <= len(frames) <= 2, frames


async def test_a_read_mark_reaches_the_readers_other_devices(server, make_user) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    conv = await alice.direct(bob.login_info.username)
    sent = await alice.send(conv.id, b"read me", content_type="text/plain")
    phone = Client(server.url)
    await phone.login(bob.login_info.username, PASSWORD)
    try:
        async with listening(phone) as phone_rx:
            await bob.mark(conv.id, read=sent.seq)
            await phone_rx.wait_for(
                lambda s: any(
                    isinstance(e, Receipt)
                    and e.username == bob.login_info.username
                    and e.read_seq == sent.seq
                    for e in s.events
                )
            )
    finally:
        await phone.aclose()


async def test_a_device_level_with_a_conversation_is_not_sent_it_again(server, user) -> None:
    """Reconnecting with a cursor at the end, the next live message follows on: the server does
    not take it for a gap and replay the whole history (it used to, to every such device)."""
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    for i in range(3):
        last = await alice.send(conv.id, f"old {i}".encode(), content_type="text/plain")
    async with connect(ws_url(server)) as ws:
        cursors = {conv.id: last.seq}
        await ws.send(
            json.dumps({"type": "auth", "protocol": 2, "token": bob.token, "cursors": cursors})
        )
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        fresh = await alice.send(conv.id, b"new", content_type="text/plain")
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (frame["type"], frame["seq"]) == ("message", fresh.seq)


async def test_typing_is_relayed_but_never_stored(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    async with listening(bob) as bob_rx:
        await alice.typing(conv.id, True)
        await bob_rx.wait_for(
            lambda s: any(
                isinstance(e, Typing) and e.typing and e.username == alice.login_info.username
                for e in s.events
            )
        )
    assert [m.kind for m in (await bob.history(conv.id)).messages] == ["membership"]


async def test_a_flood_of_typing_frames_reaches_the_peer_as_a_few(server, user) -> None:
    """2,000 typing frames in a burst (repeats and flips) become at most one relay per half
    second; a real change after that still gets through."""
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    async with listening(bob) as bob_rx, connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": alice.token}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        started = asyncio.get_running_loop().time()
        for i in range(2000):
            frame = {"type": "typing", "conversation_id": conv.id, "typing": i % 3 != 0}
            await ws.send(json.dumps(frame))
        burst = asyncio.get_running_loop().time() - started
        await asyncio.sleep(1.1)  # most of the burst was dropped at the socket; it refills
        await ws.send(json.dumps({"type": "ping"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] != "pong":
            pass  # every frame before the ping has been handled
        await asyncio.sleep(0.6)
        relayed = [e for e in bob_rx.events if isinstance(e, Typing)]
        assert 1 <= len(relayed) <= 1 + burst / 0.5 + 1, (len(relayed), burst)
        change = not relayed[-1].typing
        await ws.send(json.dumps({"type": "typing", "conversation_id": conv.id, "typing": change}))
        await bob_rx.wait_for(
            lambda s: (
                [e.typing for e in s.events if isinstance(e, Typing)][len(relayed) :] == [change]
            )
        )


async def test_conversation_list_shows_unread_and_members(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    direct = await alice.direct(bob.login_info.username)
    group = await carol.create_group([alice.login_info.username], name="book club")
    await bob.send(direct.id, b"x", content_type="text/plain")
    await carol.send(group.id, b"y", content_type="text/plain")
    await carol.send(group.id, b"z", content_type="text/plain")
    listed = {c.id: c for c in await alice.conversations()}
    assert listed[direct.id].unread == 1 and listed[group.id].unread == 2
    assert listed[group.id].name == "book club"
    assert sorted(listed[group.id].members) == sorted(
        [alice.login_info.username, carol.login_info.username]
    )


async def test_a_send_frame_stores_and_answers_as_the_http_send_does(server, user) -> None:
    """The web client sends on its socket: the same rules, idempotency and order as the POST,
    an answer per message, and a refusal that names the message and keeps the socket open."""
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    conv = await alice.direct(bob.login_info.username)
    others = await bob.direct(carol.login_info.username)
    body = base64.b64encode(b"ciphertext").decode()

    def send(conv_id: str, msg_id: str, data: str = body) -> str:
        frame = {"type": "send", "conversation_id": conv_id, "client_msg_id": msg_id}
        return json.dumps({**frame, "content_type": "text/plain", "body": data})

    async def answer(ws) -> dict:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] in ("sent", "error", "pong"):
                return frame

    async with listening(bob) as bob_rx, connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": alice.token}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        for i in range(3):  # pipelined: no waiting between them
            await ws.send(send(conv.id, f"m{i}", base64.b64encode(f"msg {i}".encode()).decode()))
        sent = [await answer(ws) for _ in range(3)]
        assert [(s["type"], s["client_msg_id"], s["created"]) for s in sent] == [
            ("sent", f"m{i}", True) for i in range(3)
        ]
        seqs = [s["seq"] for s in sent]
        assert seqs == list(range(seqs[0], seqs[0] + 3))
        got = await bob_rx.wait_messages(conv.id, 3)
        assert texts(got) == ["msg 0", "msg 1", "msg 2"]

        # A retry is the original, not a second copy; the same id for other content is refused.
        await ws.send(send(conv.id, "m0", base64.b64encode(b"msg 0").decode()))
        again = await answer(ws)
        assert (again["type"], again["seq"], again["created"]) == ("sent", seqs[0], False)
        await ws.send(send(conv.id, "m0", base64.b64encode(b"other").decode()))
        conflict = await answer(ws)
        assert (conflict["status"], conflict["code"], conflict["client_msg_id"]) == (
            409,
            "client_msg_id_reused",
            "m0",
        )

        # Someone else's conversation: refused as the HTTP send refuses it.
        await ws.send(send(others.id, "x1"))
        refused = await answer(ws)
        with pytest.raises(ApiError) as http:
            await alice.send(others.id, b"x", content_type="text/plain")
        assert (refused["type"], refused["frame"], refused["status"], refused["code"]) == (
            "error",
            "send",
            http.value.status,
            http.value.code,
        )

        # Malformed content is named; the socket lives on.
        await ws.send(send(conv.id, "m9", "not base64!"))
        bad = await answer(ws)
        assert (bad["status"], bad["code"], bad["client_msg_id"]) == (422, "invalid_message", "m9")
        assert "body" in bad["message"]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await answer(ws))["type"] == "pong"

    page = await bob.history(conv.id)
    assert texts([m for m in page.messages if m.kind == "message"]) == ["msg 0", "msg 1", "msg 2"]
    assert [m.kind for m in (await bob.history(others.id)).messages] == ["membership"]
