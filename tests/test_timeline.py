"""Replies, reactions, edits and deletions for everyone (issue 14): end-to-end encrypted events
that every device folds into the timeline by the same rules (client/timeline.py, and
static/js/timeline.js in the browser test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from secureconnect.client import timeline
from secureconnect.client.secure import CannotChangeMessage, PlainMessage
from tests.helpers import started_devices
from tests.server import ServerProcess


def said(
    seq: int, sender: str, text: str, at: int, content_type: str = "text/plain"
) -> PlainMessage:
    return PlainMessage(
        "c", seq, "message", sender, f"id-{sender}", None, content_type, text.encode(), at
    )


def test_only_the_sender_within_the_window_changes_a_message() -> None:
    hour = 3600 * 1000
    edit = timeline.EDIT
    items = [
        said(1, "alice", "first", 0),
        said(2, "alice", "second", 0),
        said(3, "bob", '{"to": 1, "text": "bob rewrites alice"}', 10, edit),
        said(4, "alice", '{"to": 1, "text": "first, fixed"}', hour, edit),
        said(5, "alice", '{"to": 2, "text": "too late"}', 25 * hour, edit),
        said(6, "alice", '{"to": 2}', 25 * hour, timeline.DELETE),
        said(7, "bob", '{"to": 2, "emoji": "👍"}', 30 * hour, timeline.REACTION),
        said(8, "carol", '{"to": 1, "emoji": "' + "x" * 17 + '"}', 5, timeline.REACTION),
        said(9, "carol", "not json", 5, timeline.REACTION),
    ]
    first, second = timeline.fold(items, edit_window_s=24 * 3600)
    assert (first.text, first.edited, first.reactions) == ("first, fixed", True, {})
    assert (second.text, second.edited, second.deleted) == ("second", False, False)
    assert second.reactions == {"👍": ["bob"]}  # reactions have no window
    [deleted] = timeline.fold(
        [
            items[0],
            said(2, "alice", '{"to": 1}', 5, timeline.DELETE),
            said(3, "alice", '{"to": 1, "text": "back?"}', 6, timeline.EDIT),
            said(4, "bob", '{"to": 1, "emoji": "😂"}', 7, timeline.REACTION),
        ],
        60,
    )
    assert (deleted.deleted, deleted.text, deleted.reactions) == (True, "", {})


async def test_replies_reactions_edits_and_deletions_look_the_same_to_everyone(
    server: ServerProcess, user, tmp_path: Path
) -> None:
    alice, bob = await started_devices(user, tmp_path, "alice", "bob")
    conv = (await alice.client.direct(bob.username)).id
    first = await alice.send(conv, b"Lunch at noon?")
    typo = await alice.send(conv, b"At the usal place")
    oops = await alice.send(conv, b"wrong chat, sorry")
    await bob.sync_inbox()
    answer = await bob.send(conv, b"Yes!", reply_to=first.seq)
    await bob.react(conv, first.seq, "😂")
    await bob.react(conv, first.seq, "👍")  # one reaction a person: this one replaces it
    await alice.react(conv, answer.seq, "😂")
    await alice.react(conv, answer.seq, "😂", remove=True)
    await alice.react(conv, answer.seq, "❤️")
    await alice.edit(conv, typo.seq, "At the usual place")
    await alice.delete_for_everyone(conv, oops.seq)
    with pytest.raises(CannotChangeMessage, match="only its sender"):
        await bob.edit(conv, first.seq, "No lunch")
    # Sent anyway, by a client that does not check: every device ignores it.
    await bob.send(conv, timeline.event_body({"to": first.seq, "text": "forged"}), timeline.EDIT)
    for device in (alice, bob):
        entries = {e.message.seq: e for e in await device.timeline(conv)}
        assert sorted(entries) == [first.seq, typo.seq, oops.seq, answer.seq]
        assert entries[first.seq].text == "Lunch at noon?"
        assert entries[first.seq].reactions == {"👍": [bob.username]}
        assert (entries[typo.seq].text, entries[typo.seq].edited) == ("At the usual place", True)
        assert (entries[oops.seq].deleted, entries[oops.seq].text) == (True, "")
        assert entries[answer.seq].reply_to == first.seq
        assert entries[answer.seq].reactions == {"❤️": [alice.username]}
    stored = server.stored_data()  # all of it went as ciphertext
    for text in (b"usual place", b"wrong chat", b"forged", b"Lunch at noon"):
        assert text not in stored


async def test_search_on_the_device_as_the_browser_does(
    server: ServerProcess, user, tmp_path: Path
) -> None:
    alice, bob = await started_devices(user, tmp_path, "alice", "bob")
    conv = (await alice.client.direct(bob.username)).id
    budget = await alice.send(conv, b"The quarterly budget is due Friday")
    await alice.send(conv, "Lương tháng này về rồi".encode())
    gone = await alice.send(conv, b"a budget secret")
    await alice.edit(conv, budget.seq, "The quarterly report is due Friday")
    await alice.delete_for_everyone(conv, gone.seq)
    await bob.timeline(conv)  # bob's device reads the conversation
    assert [e.text for e in await bob.search("luong THANG")] == ["Lương tháng này về rồi"]
    assert [e.message.seq for e in await bob.search("quarterly rep")] == [budget.seq]
    assert await bob.search("budget") == []  # edited away, and the deleted one
    assert await bob.search("  ") == []
