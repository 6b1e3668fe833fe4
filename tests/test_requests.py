"""Message requests through a real server: a stranger who puts someone in a conversation makes
a request that its recipient accepts, declines or blocks; contacts are not asked again; a block
makes the blocker look like an unknown name; the key directory answers only for people one
shares a conversation with."""

from __future__ import annotations

import pytest

from secureconnect.client import ApiError, Client
from tests.helpers import listening, texts


async def refused(call) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as error:
        await call
    return error.value.status, error.value.code, error.value.message


async def by_id(client: Client, conv_id: str):
    return next((c for c in await client.conversations() if c.id == conv_id), None)


async def test_a_stranger_makes_a_request_that_the_recipient_accepts(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    a, b = alice.login_info.username, bob.login_info.username
    group = await alice.create_group([b], name="hello from a stranger")
    assert (group.request, group.requested_by) == (False, None)  # the asker's own view
    async with listening(bob) as bob_rx:
        await alice.send(group.id, b"may I ask you something?", content_type="text/plain")
        # The request shows what it says, as Signal's does, before anyone accepts.
        assert texts(await bob_rx.wait_messages(group.id, 1)) == ["may I ask you something?"]
    mine = await by_id(bob, group.id)
    assert (mine.request, mine.requested_by) == (True, a)
    accepted = await bob.accept(group.id)
    assert (accepted.request, accepted.requested_by) == (False, None)
    # In contact now: a new conversation between them is no request, either way round.
    again = await alice.direct(b)
    assert (await by_id(bob, again.id)).request is False
    assert (await by_id(alice, again.id)).request is False


async def test_replying_accepts_and_contacts_are_not_asked(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    b, c = bob.login_info.username, carol.login_info.username
    first = await alice.direct(b)
    assert (await by_id(bob, first.id)).request is True
    await bob.send(first.id, b"hi, who is this?", content_type="text/plain")
    assert (await by_id(bob, first.id)).request is False
    # Bob and Alice are contacts; Carol is a stranger to both: only she is asked.
    group = await alice.create_group([b, c], name="three")
    assert (await by_id(bob, group.id)).request is False
    assert (await by_id(carol, group.id)).requested_by == alice.login_info.username
    # Adding someone is asking too, by whoever adds them.
    dave = await user("dave")
    await alice.add_member(group.id, dave.login_info.username)
    assert (await by_id(dave, group.id)).requested_by == alice.login_info.username


async def test_declining_with_a_block_makes_the_blocker_an_unknown_name(user, server) -> None:
    spammer, victim = await user("spammer"), await user("victim")
    s, v = spammer.login_info.username, victim.login_info.username
    spam = await spammer.direct(v)
    await spammer.send(spam.id, b"buy now", content_type="text/plain")
    await victim.decline(spam.id, block=True)
    assert await by_id(victim, spam.id) is None  # gone from the list
    assert await victim.blocked_users() == [s]
    # Nor may the spammer look up the victim's devices or take their keys any more.
    assert (await refused(spammer.user_devices(v)))[:2] == (404, "user_not_found")
    notes = await victim.create_group([], name="notes")  # a group of one, to sync on
    async with listening(victim) as victim_rx:
        await spammer.send(spam.id, b"buy now!!", content_type="text/plain")
        await victim.send(notes.id, b"after the spam", content_type="text/plain")
        await victim_rx.wait_messages(notes.id, 1)  # everything sent before has been through
        assert "buy now!!" not in texts(victim_rx.messages(spam.id))
    # Every way of putting the victim somewhere answers as an unknown name does.
    unknown = await refused(spammer.create_group(["no-such-person-at-all"]))
    assert unknown[:2] == (404, "user_not_found")
    assert await refused(spammer.create_group([v])) == (
        404,
        "user_not_found",
        f"no such user: {v}",
    )
    assert await refused(spammer.direct(v)) == (404, "user_not_found", f"no such user: {v}")
    mine = await spammer.create_group([], name="trap")
    assert await refused(spammer.add_member(mine.id, v)) == (
        404,
        "user_not_found",
        f"no such user: {v}",
    )
    # Unblocked, the spammer may ask again; a request is still the victim's to answer.
    await victim.unblock_user(s)
    assert await victim.blocked_users() == []
    again = await spammer.create_group([v], name="second try")
    assert (await by_id(victim, again.id)).request is True
    assert (await refused(victim.unblock_user(s)))[:2] == (404, "not_blocked")


async def test_declining_a_group_request_leaves_it(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    await bob.send(
        (await bob.direct(alice.login_info.username)).id, b"hi", content_type="text/plain"
    )
    await alice.accept((await alice.direct(bob.login_info.username)).id)
    group = await alice.create_group([bob.login_info.username, carol.login_info.username])
    await carol.decline(group.id)
    assert [m.username for m in await alice.members(group.id)] == sorted(
        [alice.login_info.username, bob.login_info.username]
    )
    assert (await by_id(carol, group.id)).left is True
    # Only a request can be declined, and only by its recipient.
    assert (await refused(bob.decline(group.id)))[:2] == (409, "not_a_request")
    assert (await refused(carol.decline(group.id)))[:2] == (409, "not_a_request")
    stranger = await user("stranger")
    assert (await refused(stranger.accept(group.id)))[:2] == (404, "conversation_not_found")
    assert (await refused(stranger.decline(group.id)))[:2] == (404, "conversation_not_found")


async def test_someone_who_declined_a_1to1_can_start_it_again(user) -> None:
    alice, bob = await user("alice"), await user("bob")
    b = bob.login_info.username
    asked = await alice.direct(b)
    await alice.send(asked.id, b"before", content_type="text/plain")
    await bob.decline(asked.id)
    await alice.send(asked.id, b"while declined", content_type="text/plain")
    back = await bob.direct(alice.login_info.username)  # Bob changes his mind
    assert back.id == asked.id and back.request is False and back.left is False
    await alice.send(asked.id, b"after", content_type="text/plain")
    page = await bob.history(asked.id)
    assert texts([m for m in page.messages if m.kind == "message"]) == ["after"]


async def test_the_key_directory_answers_only_for_people_one_shares_a_conversation_with(
    user,
) -> None:
    alice, bob = await user("alice"), await user("bob")
    b = bob.login_info.username
    assert await refused(alice.user_devices(b)) == (404, "user_not_found", f"no such user: {b}")
    assert (await refused(alice.user_devices("nobody-by-this-name")))[:2] == (
        404,
        "user_not_found",
    )
    assert await alice.user_devices(alice.login_info.username) is not None  # one's own
    await alice.direct(b)  # a request is a shared conversation: keys are needed to read it
    assert await alice.user_devices(b) is not None
    assert await bob.user_devices(alice.login_info.username) is not None
