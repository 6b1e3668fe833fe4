"""Replies, reactions, edits and deletions, as end-to-end encrypted messages that refer to
another by its ``seq`` (issue 14). The server relays them like any message and cannot tell
one from a text; every device folds them into the timeline by the same rules, which
``static/js/timeline.js`` repeats:

- a reply is a text message whose inner envelope names ``r``: the message it answers;
- an attachment (``attachments.ATTACHMENT``) is an entry like a text, its caption the text:
  it can be answered, reacted to, its caption edited, and deleted;
- a reaction (``REACTION``: ``{"to", "emoji", "remove"}``): one a person, as in Signal: each
  person's latest one to a message counts (a new emoji replaces theirs), ``remove`` takes it
  back;
- an edit (``EDIT``: ``{"to", "text"}``) and a deletion for everyone (``DELETE``: ``{"to"}``)
  count only from the message's own sender, within ``edit_window_s`` of the message (the
  server's setting, in ``/v1/me``); the latest edit wins, and a deletion hides it for good.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from secureconnect.client.attachments import ATTACHMENT, Attachment, parse

REACTION = "application/vnd.secureconnect.reaction+json"
EDIT = "application/vnd.secureconnect.edit+json"
DELETE = "application/vnd.secureconnect.delete+json"
EVENTS = (REACTION, EDIT, DELETE)
MAX_EMOJI = 16  # characters: one emoji, with its modifiers


@dataclass
class Entry:
    """A text message as people see it now: edited or deleted, with the reactions it got."""

    message: Any  # the PlainMessage
    text: str
    reply_to: int | None = None
    edited: bool = False
    deleted: bool = False
    reactions: dict[str, list[str]] = field(default_factory=dict)  # emoji -> who, in order
    attachment: Attachment | None = None  # a file, image or voice note; ``text``: its caption


def event_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def _payload(message: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(message.text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("to"), int):
        return None
    return data


def fold(messages: Iterable[Any], edit_window_s: int) -> list[Entry]:
    """The text and attachment messages of a timeline (``secure.PlainMessage``, oldest first;
    anything else, such as a message that did not decrypt, is left out) with every event
    applied."""
    window_ms = edit_window_s * 1000
    entries: dict[int, Entry] = {}
    reacted: dict[int, dict[str, tuple[int, str | None]]] = {}  # seq -> sender -> (at, emoji)
    for message in messages:
        if not hasattr(message, "content_type") or getattr(message, "kind", "") != "message":
            continue
        if message.content_type.startswith("text/"):
            entries[message.seq] = Entry(message, message.text, message.reply_to)
            continue
        if message.content_type == ATTACHMENT:
            pointer = parse(message.body)
            if pointer is not None:
                entries[message.seq] = Entry(
                    message, pointer.caption, message.reply_to, attachment=pointer
                )
            continue
        if message.content_type not in EVENTS:
            continue
        data = _payload(message)
        target = entries.get(data["to"]) if data else None
        if data is None or target is None:
            continue
        if message.content_type == REACTION:
            emoji = data.get("emoji")
            if not isinstance(emoji, str) or not 0 < len(emoji) <= MAX_EMOJI:
                continue
            gone = data.get("remove") is True
            reacted.setdefault(target.message.seq, {})[message.sender] = (
                message.seq,
                None if gone else emoji,
            )
            continue
        own = message.sender_id == target.message.sender_id
        timely = message.created_at - target.message.created_at <= window_ms
        if not own or not timely or target.deleted:
            continue
        if message.content_type == DELETE:
            target.deleted, target.text, target.edited = True, "", False
            target.attachment = None
        elif isinstance(data.get("text"), str) and data["text"]:
            target.text, target.edited = data["text"], True
    for seq, by_sender in reacted.items():
        entry = entries[seq]
        for who, (_, emoji) in sorted(by_sender.items(), key=lambda kv: kv[1][0]):
            if emoji is not None and not entry.deleted:
                entry.reactions.setdefault(emoji, []).append(who)
    return list(entries.values())
