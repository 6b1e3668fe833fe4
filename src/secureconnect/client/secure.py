"""End-to-end encryption for the SDK: every message this client sends is encrypted on this device
and every message it receives is decrypted here. The server sees ciphertext and public keys only.

    secure = SecureClient(client, DeviceStore(path, passphrase))
    await secure.start()                      # creates and publishes this device's keys once
    await secure.send(conversation_id, b"hi") # sender key, shared over pairwise sessions
    async for event in secure.events(): ...   # PlainMessage, DecryptionFailed, IdentityChanged...

What happens on send: the conversation's current member devices are fetched from the key
directory; any device that has not yet got this device's sender key gets it, pairwise-encrypted
(X3DH then Double Ratchet), through its inbox; then the message is encrypted once with the sender
key and posted. The sender key is replaced when a device that had it is no longer in the
conversation (a member left, a device was revoked), and every 100 messages or 7 days.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secureconnect.client import attachments, search, timeline
from secureconnect.client.api import Client
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.errors import ApiError
from secureconnect.client.events import EventStream
from secureconnect.client.timeline import Entry
from secureconnect.client.types import (
    Call,
    CallChanged,
    DeviceKeys,
    InboxMessage,
    Me,
    Message,
    PrekeysLow,
    Ready,
    Receipt,
    Typing,
    membership_of,
)
from secureconnect.crypto import pairwise, safety, senderkeys
from secureconnect.crypto.attachment import DEFAULT_CHUNK
from secureconnect.crypto.primitives import (
    CryptoError,
    DHKeyPair,
    Random,
    SigningKeyPair,
    b64,
    system_random,
    unb64,
)
from secureconnect.crypto.ratchet import Ratchet
from secureconnect.crypto.x3dh import (
    Bundle,
    DeviceIdentity,
    InitialHeader,
    initiate,
    respond,
)
from secureconnect.errors import SecureConnectError
from secureconnect.suggest.engine import Pack, Verdict

PREKEY_STOCK = 100
PREKEY_REFILL_BELOW = 50
SPK_ROTATE_S = 7 * 24 * 3600
SESSIONS_KEPT = 3
SEND_ATTEMPTS = 8  # 0.2 s doubling to 3 s between them: about 12 s


@dataclass(frozen=True)
class PlainMessage:
    conversation_id: str
    seq: int
    kind: str  # "message" or "membership"
    sender: str
    sender_id: str
    sender_device_id: str | None
    content_type: str
    body: bytes
    created_at: int
    reply_to: int | None = None  # a reply: the seq of the message it answers

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def membership(self) -> dict[str, Any] | None:
        return membership_of(self.kind, self.body)


def _cached_message(record: dict[str, Any]) -> PlainMessage:
    """A message as ``_remember`` keeps it in the device file."""
    return PlainMessage(**{**record, "body": unb64(record["body"])})


@dataclass(frozen=True)
class DecryptionFailed:
    """A message that could not be read. ``code``: unknown_sender_key (a key was requested from
    the sender), bad_signature, bad_tag, replay, not_encrypted, sender_mismatch, bad_envelope."""

    conversation_id: str
    seq: int
    sender: str
    sender_device_id: str | None
    code: str
    reason: str
    # Sent before this device existed: its keys never came here (not a fault; say so plainly).
    before_this_device: bool = False


@dataclass(frozen=True)
class IdentityChanged:
    """A contact's devices changed: ``new_device``, ``device_removed`` or ``key_changed`` (the
    last is never accepted silently: sending to that device stops until accept_identity); or
    ``own_new_device``: another device of one's own account appeared (a security notice)."""

    username: str
    device_id: str
    change: str


@dataclass(frozen=True)
class CallKey:
    """A media key another device sent this one for a call (over the pairwise session)."""

    call_id: str
    sender_id: str
    sender_device_id: str
    key_id: int
    key: bytes


SecureEvent = (
    PlainMessage
    | DecryptionFailed
    | IdentityChanged
    | Receipt
    | Typing
    | Ready
    | CallChanged
    | CallKey
)


class MessageTooLong(SecureConnectError):
    """Refused before sending: encrypted, it would be over the server's limit. ``over`` is how
    many characters of the text to take out (a long text belongs in a file)."""

    def __init__(self, over: int, size: int, limit: int) -> None:
        self.over = over
        self.limit = limit
        super().__init__(
            f"message too long: {over} characters over the limit "
            f"({size} bytes once encrypted; the server takes {limit})"
        )


def chars_over(text: str, fits: Callable[[str], bool]) -> int:
    """The fewest characters to take off the end of ``text`` for what is left to fit. Found on
    the exact size rather than by the 16/9 of base64'ing twice: each base64 rounds to whole
    groups, so a ratio can be a few bytes short, and then "take out N" would not be enough."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high) // 2
        if fits(text[:-middle]):
            high = middle
        else:
            low = middle + 1
    return low


class CannotChangeMessage(SecureConnectError):
    """An edit or a deletion for everyone that would not count: not one's own message, or
    older than the server's ``edit_window_s``. Refused here rather than sent to be ignored."""


class IdentityChangedError(SecureConnectError):
    def __init__(self, username: str) -> None:
        super().__init__(f"{username}'s keys changed; compare safety numbers, then accept them")
        self.username = username


class SecureClient:
    def __init__(self, client: Client, store: DeviceStore, rng: Random = system_random) -> None:
        self.client = client
        self.store = store
        self.duplicates_dropped = 0  # events the server sent again and this device had shown
        self.rng = rng
        self.state: dict[str, Any] = {}
        self._failed: list[Message] = []  # waiting for a sender key that was requested
        self.max_message_bytes = 64 * 1024  # the server's, once started
        self.edit_window_s = 24 * 3600  # likewise
        self.notices: list[IdentityChanged] = []  # contacts' device changes seen while sending
        self.stream: EventStream | None = None  # the open event stream, for its cursors
        # While reading history, the message cache is written once at the end rather than the
        # whole (possibly encrypted) device file once per message.
        self._cache_deferred = False
        self._cache_dirty = False

    # ----- device set-up ---------------------------------------------------------------------

    async def start(self) -> None:
        me = await self.client.me()
        self.max_message_bytes = me.max_message_bytes
        self.edit_window_s = me.edit_window_s
        loaded = self.store.load()
        if loaded is None or loaded.get("device_id") != me.device_id:
            self.state = self._new_device(me)
        else:
            self.state = loaded
        self._rotate_spk_if_due()
        await self.client.publish_keys(self._public_keys())
        await self._top_up_prekeys()
        self._save()

    def _new_device(self, me: Me) -> dict[str, Any]:
        identity = DeviceIdentity.generate(self.rng)
        return {
            "device_id": me.device_id,
            "user_id": me.user_id,
            "username": me.username,
            "created_at": int(time.time() * 1000),
            "identity": {"dh": b64(identity.dh.private), "sig": b64(identity.signing.private)},
            "spks": {},
            "spk_current": 0,
            "opks": {},
            "next_opk_id": 1,
            "sessions": {},
            "outbound": {},
            "inbound": {},
            "contacts": {},
            "messages": {},
            "requested": [],
        }

    @property
    def device_id(self) -> str:
        return str(self.state["device_id"])

    @property
    def username(self) -> str:
        return str(self.state["username"])

    def _identity(self) -> DeviceIdentity:
        ident = self.state["identity"]
        return DeviceIdentity(
            DHKeyPair.from_private(unb64(ident["dh"])),
            SigningKeyPair.from_private(unb64(ident["sig"])),
        )

    def _rotate_spk_if_due(self) -> None:
        spks = self.state["spks"]
        current = spks.get(str(self.state["spk_current"]))
        if current is not None and time.time() - current["created"] < SPK_ROTATE_S:
            return
        spk_id = self.state["spk_current"] + 1
        spks[str(spk_id)] = {
            "priv": b64(DHKeyPair.generate(self.rng).private),
            "created": time.time(),
        }
        self.state["spk_current"] = spk_id
        for old in sorted(spks, key=int)[:-3]:  # keep a few for messages still in flight
            del spks[old]

    def _public_keys(self) -> dict[str, Any]:
        identity = self._identity()
        spk_id = self.state["spk_current"]
        spk = DHKeyPair.from_private(unb64(self.state["spks"][str(spk_id)]["priv"]))
        return {
            "identity_key": b64(identity.dh.public),
            "signing_key": b64(identity.signing.public),
            "identity_sig": b64(identity.identity_sig),
            "signed_prekey": {
                "id": spk_id,
                "key": b64(spk.public),
                "signature": b64(identity.sign_prekey(spk_id, spk)),
            },
        }

    async def _top_up_prekeys(self) -> None:
        stock = await self.client.prekey_count()
        if stock >= PREKEY_REFILL_BELOW:
            return
        fresh = []
        for _ in range(PREKEY_STOCK - stock):
            key_id = self.state["next_opk_id"]
            self.state["next_opk_id"] += 1
            pair = DHKeyPair.generate(self.rng)
            self.state["opks"][str(key_id)] = b64(pair.private)
            fresh.append({"id": key_id, "key": b64(pair.public)})
        self._save()  # the private halves must exist before the public ones are handed out
        for i in range(0, len(fresh), 100):
            await self.client.upload_prekeys(fresh[i : i + 100])

    def _save(self) -> None:
        self.store.save(self.state)

    # ----- sending ---------------------------------------------------------------------------

    async def send(
        self,
        conversation_id: str,
        plaintext: bytes,
        content_type: str = "text/plain",
        reply_to: int | None = None,
    ) -> PlainMessage:
        """``reply_to``: the seq of the message this one answers (a quote, in every client)."""
        key = await self._outbound_key(conversation_id)

        def inner_of(plaintext: bytes) -> bytes:
            envelope: dict[str, Any] = {"t": content_type, "b": b64(plaintext)}
            if reply_to is not None:
                envelope["r"] = reply_to
            return json.dumps(envelope).encode()

        def size_of(plaintext: bytes) -> int:
            return key.envelope_size(self.device_id, len(inner_of(plaintext)))

        inner = inner_of(plaintext)
        size = key.envelope_size(self.device_id, len(inner))
        if size > self.max_message_bytes:
            text = plaintext.decode("utf-8", errors="replace")
            over = chars_over(text, lambda t: size_of(t.encode()) <= self.max_message_bytes)
            raise MessageTooLong(over, size, self.max_message_bytes)
        body = key.encrypt(conversation_id, self.device_id, inner)
        self.state["outbound"][conversation_id] = key.to_json()
        self._save()  # the ratchet moved: never reuse a message key, even after a crash
        # The same ciphertext and message id on every retry: a server restarting or a database
        # failing over (about 12 s of retries) never makes a second copy.
        sent = await self.client.send(
            conversation_id, body, content_type=senderkeys.CONTENT_TYPE, attempts=SEND_ATTEMPTS
        )
        plain = PlainMessage(
            conversation_id,
            sent.seq,
            "message",
            self.username,
            self.state["user_id"],
            self.device_id,
            content_type,
            plaintext,
            sent.created_at,
            reply_to,
        )
        self._remember(plain)
        return plain

    async def _outbound_key(self, conversation_id: str) -> senderkeys.OutboundSenderKey:
        devices = await self.client.conversation_devices(conversation_id)
        self._check_identities(devices)
        targets = {d.device_id: d for d in devices if d.device_id != self.device_id}
        stored = self.state["outbound"].get(conversation_id)
        key = senderkeys.OutboundSenderKey.from_json(stored) if stored else None
        fresh = key is None or key.due_for_rotation() or not key.shared_with <= set(targets)
        if fresh:
            # Someone who had the key is gone (or it is old): a fresh key they never get.
            key = senderkeys.OutboundSenderKey.generate(self.rng)
        assert key is not None
        missing = [d for device_id, d in targets.items() if device_id not in key.shared_with]
        if missing:
            share = {"type": "sender_key", "conversation_id": conversation_id, **key.share()}
            batch = [(d.device_id, await self._pairwise_encrypt(d, share)) for d in missing]
            self._save()
            await self.client.send_inbox(batch)
            key.shared_with.update(d.device_id for d in missing)
        if fresh or missing:
            # Kept now, not once a message goes with it: the others hold it already, and a
            # message refused as too long is cut to fit this key (its id's length counts), not
            # to fit the next one a retry would make and share again.
            self.state["outbound"][conversation_id] = key.to_json()
            self._save()
        return key

    async def _pairwise_encrypt(self, device: DeviceKeys, payload: dict[str, Any]) -> bytes:
        device_id = device.device_id
        sessions = self.state["sessions"].get(device_id)
        if not sessions:
            bundle_json = (await self.client.claim([device_id]))[0]
            bundle = Bundle(
                unb64(bundle_json.identity_key),
                unb64(bundle_json.signing_key),
                unb64(bundle_json.identity_sig),
                bundle_json.spk_id,
                unb64(bundle_json.spk),
                unb64(bundle_json.spk_sig),
                bundle_json.opk_id,
                unb64(bundle_json.opk) if bundle_json.opk else None,
            )
            self._check_identities([bundle_json])
            secret, ad, header = initiate(self._identity(), bundle, self.rng)
            ratchet = Ratchet.for_initiator(secret, ad, bundle.spk, self.rng)
            sessions = [
                {
                    "ratchet": ratchet.to_json(),
                    "pending": {
                        "ik": b64(header.identity_key),
                        "sk": b64(header.signing_key),
                        "ek": b64(header.ephemeral_key),
                        "spk": header.spk_id,
                        "opk": header.opk_id,
                    },
                    "base_ek": None,
                }
            ]
            self.state["sessions"][device_id] = sessions
        session = sessions[0]
        ratchet = Ratchet.from_json(session["ratchet"])
        header_bytes, ct = ratchet.encrypt(json.dumps(payload).encode())
        session["ratchet"] = ratchet.to_json()
        pending = session["pending"]
        initial = None
        if pending is not None:
            initial = InitialHeader(
                unb64(pending["ik"]),
                unb64(pending["sk"]),
                unb64(pending["ek"]),
                pending["spk"],
                pending["opk"],
            )
        return pairwise.encode(initial, header_bytes, ct)

    # ----- receiving -------------------------------------------------------------------------

    async def events(self, cursors: dict[str, int] | None = None) -> AsyncIterator[SecureEvent]:
        """Decrypted events for this device, reconnecting by itself. Each timeline event comes
        once per device, even across restarts of either side: after a server crash the server
        may resume from acks it had not yet written and send a few again, which are dropped
        here by sequence number (``duplicates_dropped`` counts them)."""
        stream = self.stream = self.client.events(cursors)
        seen: dict[str, int] = self.state.setdefault("seen", {})
        async for event in stream:
            if isinstance(event, InboxMessage):
                for produced in await self.handle_inbox(event):
                    yield produced
                await stream.ack_inbox(event.id)
            elif isinstance(event, Message):
                if event.seq <= seen.get(event.conversation_id, 0):
                    self.duplicates_dropped += 1
                    continue
                seen[event.conversation_id] = event.seq
                fresh = str(event.seq) not in self.state["messages"].get(event.conversation_id, {})
                plain = await self.decrypt(event)
                if not (fresh and isinstance(plain, PlainMessage) and plain.kind == "message"):
                    self._save()  # a newly read message was saved with its text already
                yield plain
            elif isinstance(event, PrekeysLow):
                await self._top_up_prekeys()
            else:
                yield event

    async def sync_inbox(self) -> list[SecureEvent]:
        """Processes pending pairwise messages over HTTP (when no event stream is open)."""
        produced: list[SecureEvent] = []
        for item in await self.client.inbox():
            produced.extend(await self.handle_inbox(item))
            await self.client.ack_inbox(item.id)
        return produced

    async def handle_inbox(self, item: InboxMessage) -> list[SecureEvent]:
        try:
            payload = self._pairwise_decrypt(item)
        except CryptoError:
            return []  # a pairwise message we cannot read carries no conversation content
        finally:
            self._save()
        produced: list[SecureEvent] = []
        if payload.get("type") == "sender_key":
            conv = payload["conversation_id"]
            record = senderkeys.InboundSenderKey.from_share(payload)
            self.state["inbound"][f"{conv}|{item.sender_device_id}|{record.key_id}"] = {
                **record.to_json(),
                "owner": item.sender_id,
            }
            self._save()
            waiting, self._failed = self._failed, []
            for message in waiting:
                produced.append(await self.decrypt(message))
        elif payload.get("type") == "key_request":
            await self._answer_key_request(item, payload)
        elif payload.get("type") == "call_key":
            produced.append(
                CallKey(
                    payload["call_id"],
                    item.sender_id,
                    item.sender_device_id,
                    int(payload["kid"]),
                    unb64(payload["key"]),
                )
            )
        return produced

    async def send_call_key(self, call: Call, key_id: int, key: bytes) -> list[str]:
        """Sends this device's media key to exactly the other devices in the call, each over
        its pairwise session: never through the conversation's sender key, which members
        outside the call hold too. Returns the devices it went to."""
        in_call = {p.device_id for p in call.participants} - {self.device_id}
        devices = await self.client.conversation_devices(call.conversation_id)
        self._check_identities(devices)
        payload = {"type": "call_key", "call_id": call.id, "kid": key_id, "key": b64(key)}
        items = [
            (d.device_id, await self._pairwise_encrypt(d, payload))
            for d in devices
            if d.device_id in in_call
        ]
        self._save()
        if items:
            await self.client.send_inbox(items)
        return [device_id for device_id, _ in items]

    def _pairwise_decrypt(self, item: InboxMessage) -> dict[str, Any]:
        initial, header, ct = pairwise.decode(item.body)
        sessions = self.state["sessions"].setdefault(item.sender_device_id, [])
        if initial is not None:
            known = next((s for s in sessions if s["base_ek"] == b64(initial.ephemeral_key)), None)
            if known is None:
                spk_record = self.state["spks"].get(str(initial.spk_id))
                if spk_record is None:
                    raise CryptoError("unknown_prekey", "signed prekey no longer held")
                spk = DHKeyPair.from_private(unb64(spk_record["priv"]))
                opk = None
                if initial.opk_id is not None:
                    opk_priv = self.state["opks"].pop(str(initial.opk_id), None)
                    if opk_priv is None:
                        raise CryptoError("unknown_prekey", "one-time prekey already used")
                    opk = DHKeyPair.from_private(unb64(opk_priv))
                secret, ad = respond(self._identity(), spk, opk, initial)
                known = {
                    "ratchet": Ratchet.for_responder(secret, ad, spk).to_json(),
                    "pending": None,
                    "base_ek": b64(initial.ephemeral_key),
                }
                sessions.insert(0, known)
                del sessions[SESSIONS_KEPT:]
            candidates = [known]
        else:
            candidates = list(sessions)
        for session in candidates:
            ratchet = Ratchet.from_json(session["ratchet"])
            try:
                plaintext = ratchet.decrypt(header, ct, self.rng)
            except CryptoError:
                continue
            session["ratchet"] = ratchet.to_json()
            session["pending"] = None  # the peer has our session now
            parsed: dict[str, Any] = json.loads(plaintext)
            return parsed
        raise CryptoError("no_session", "no session decrypts this pairwise message")

    async def decrypt(self, message: Message) -> PlainMessage | DecryptionFailed:
        cached = self.state["messages"].get(message.conversation_id, {}).get(str(message.seq))
        if cached is not None:
            return _cached_message(cached)
        if message.kind in ("call", "membership"):
            # Written by the server, in the clear: who joined or left; a call's who, when and
            # how long.
            return self._clear(message)
        try:
            plain = self._decrypt_message(message)
        except CryptoError as error:
            if error.code == "unknown_sender_key":
                self._failed.append(message)
                await self._request_key(message)
            born = self.state.get("created_at", 0)
            return DecryptionFailed(
                message.conversation_id,
                message.seq,
                message.sender,
                message.sender_device_id,
                error.code,
                str(error),
                # No key for it, or a key that starts after it (the sender shares its current
                # iteration with a new device, which reads as a replay of anything older).
                before_this_device=error.code in ("unknown_sender_key", "replay")
                and message.created_at < born,
            )
        self._remember(plain)
        return plain

    def _clear(self, message: Message) -> PlainMessage:
        change = message.membership or {}
        if change.get("action") in ("remove", "leave"):
            # Whoever left must not read on: start a new sender key for what follows.
            self.state["outbound"].pop(message.conversation_id, None)
            self._save()
        return PlainMessage(
            message.conversation_id,
            message.seq,
            message.kind,
            message.sender,
            message.sender_id,
            message.sender_device_id,
            message.content_type,
            message.body,
            message.created_at,
        )

    def _decrypt_message(self, message: Message) -> PlainMessage:
        if message.content_type != senderkeys.CONTENT_TYPE:
            raise CryptoError("not_encrypted", "this message was not end-to-end encrypted")
        envelope = senderkeys.decode(message.body)
        if envelope["dev"] != message.sender_device_id:
            raise CryptoError("sender_mismatch", "the envelope names another sending device")
        slot = f"{message.conversation_id}|{envelope['dev']}|{envelope['kid']}"
        stored = self.state["inbound"].get(slot)
        if stored is None:
            raise CryptoError("unknown_sender_key", "no key for this sender yet; asked for it")
        if stored["owner"] != message.sender_id:
            raise CryptoError("sender_mismatch", "this key belongs to another user")
        record = senderkeys.InboundSenderKey.from_json(stored)
        inner = json.loads(record.decrypt(message.conversation_id, envelope))
        self.state["inbound"][slot] = {**record.to_json(), "owner": stored["owner"]}
        return PlainMessage(
            message.conversation_id,
            message.seq,
            "message",
            message.sender,
            message.sender_id,
            message.sender_device_id,
            inner["t"],
            unb64(inner["b"]),
            message.created_at,
            inner["r"] if isinstance(inner.get("r"), int) else None,
        )

    def _remember(self, plain: PlainMessage) -> None:
        """Keeps what was read: a message key works once, so history is read from here."""
        record = {**plain.__dict__, "body": b64(plain.body)}
        self.state["messages"].setdefault(plain.conversation_id, {})[str(plain.seq)] = record
        if self._cache_deferred:
            self._cache_dirty = True
        else:
            self._save()

    # ----- replies, reactions, edits, deletions (client/timeline.py) -------------------------

    async def react(
        self, conversation_id: str, seq: int, emoji: str, remove: bool = False
    ) -> PlainMessage:
        """One's reaction to a message (the latest one counts); ``remove`` takes it back."""
        payload = {"to": seq, "emoji": emoji, "remove": remove}
        return await self.send(conversation_id, timeline.event_body(payload), timeline.REACTION)

    async def edit(self, conversation_id: str, seq: int, text: str) -> PlainMessage:
        """A new text for one's own message, within the server's ``edit_window_s``."""
        await self._changeable(conversation_id, seq)
        payload = {"to": seq, "text": text}
        return await self.send(conversation_id, timeline.event_body(payload), timeline.EDIT)

    async def delete_for_everyone(self, conversation_id: str, seq: int) -> PlainMessage:
        """Hides one's own message on every device, within the server's ``edit_window_s``."""
        target = await self._changeable(conversation_id, seq)
        sent = await self.send(conversation_id, timeline.event_body({"to": seq}), timeline.DELETE)
        pointer = (
            attachments.parse(target.body)
            if target.content_type == attachments.ATTACHMENT
            else None
        )
        if pointer is not None:  # its file goes too: nobody will be shown it again
            await attachments.forget(self.client, pointer.blob)
        return sent

    # ----- attachments (client/attachments.py) ----------------------------------------------

    async def send_file(
        self,
        conversation_id: str,
        path: Path,
        *,
        name: str | None = None,
        content_type: str | None = None,
        caption: str = "",
        reply_to: int | None = None,
        progress: attachments.Progress | None = None,
    ) -> PlainMessage:
        """Encrypts the file with a key of its own, uploads the ciphertext a chunk at a time,
        then sends the key, SHA-256, size, type, name and an image's thumbnail in an end-to-end
        encrypted message. Refused first if it is over the server's limit or one's quota."""
        size, kind, thumb, width, height = attachments.describe(path, content_type)
        with path.open("rb") as source:
            blob, key, sha256 = await attachments.upload(
                self.client, conversation_id, source, size, progress=progress
            )
        pointer = attachments.Attachment(
            blob,
            key,
            sha256,
            size,
            DEFAULT_CHUNK,
            kind,
            attachments.safe_name(name or path.name),
            caption,
            thumb,
            width,
            height,
        )
        try:
            return await self.send(
                conversation_id, pointer.body(), attachments.ATTACHMENT, reply_to
            )
        except BaseException:  # nobody will ever be told where it is: do not keep it
            await attachments.forget(self.client, blob)
            raise

    async def save_attachment(
        self, entry: Entry, dest: Path, progress: attachments.Progress | None = None
    ) -> Path:
        """Downloads and decrypts the entry's attachment into ``dest`` (a folder: under its
        sender's file name, made safe; else the file itself), checked against its SHA-256."""
        if entry.attachment is None:
            raise attachments.AttachmentCorrupt(f"#{entry.message.seq} has no attachment")
        target = attachments.target(dest, entry.attachment.name)
        return await attachments.download(self.client, entry.attachment, target, progress)

    async def timeline(self, conversation_id: str) -> list[Entry]:
        """The conversation's text messages as people see them: edits, deletions, reactions
        and what each reply answers applied (every client folds by the same rules)."""
        await self.sync_inbox()  # the sender keys that may have come with the newest messages
        return timeline.fold(await self.history(conversation_id), self.edit_window_s)

    async def search(self, query: str) -> list[Entry]:
        """Messages this device has read whose current text (as edited; not deleted ones)
        holds every word of ``query``, newest first (client/search.py). Nothing is sent."""
        if not search.words(query):
            return []
        found: list[Entry] = []
        for records in self.state.get("messages", {}).values():
            said = sorted(
                (_cached_message(r) for r in records.values()),
                key=lambda m: m.seq,
            )
            found += [
                e
                for e in timeline.fold(said, self.edit_window_s)
                if not e.deleted and search.matches(e.text, query)
            ]
        return sorted(found, key=lambda e: e.message.created_at, reverse=True)

    async def _changeable(self, conversation_id: str, seq: int) -> PlainMessage:
        await self.sync_inbox()
        target = next((m for m in await self.history(conversation_id) if m.seq == seq), None)
        if not isinstance(target, PlainMessage) or not (
            target.content_type.startswith("text/") or target.content_type == attachments.ATTACHMENT
        ):
            raise CannotChangeMessage(f"#{seq} is not a message that can change here")
        if target.sender != self.username:
            raise CannotChangeMessage(f"#{seq} is {target.sender}'s: only its sender may change it")
        if time.time() * 1000 - target.created_at > self.edit_window_s * 1000:
            raise CannotChangeMessage(
                f"#{seq} is older than {self.edit_window_s // 3600} h: it can no longer change"
            )
        return target

    async def suggest_replies(
        self, conversation_id: str, fallback_lang: str = "en", pack: Pack | None = None
    ) -> Verdict:
        """Up to three replies to the conversation's last message, computed here from the
        decrypted text (nothing about it is sent anywhere). Silent ("own") when the last
        message is this person's, ("nothing") when there is none to answer. The reply language
        follows what this person writes to them, then ``fallback_lang``; the chips lean towards
        how they have answered lately."""
        pack = pack or Pack.packaged()
        await self.sync_inbox()  # the sender keys that may have come with the newest messages
        history = await self.history(conversation_id)
        said = [
            m
            for m in history
            if isinstance(m, PlainMessage)
            and m.kind == "message"
            and m.content_type.startswith("text/")
        ]
        if not said:
            return Verdict((), "nothing")
        if any(
            isinstance(m, PlainMessage)
            and m.seq > said[-1].seq
            and m.content_type == attachments.ATTACHMENT
            for m in history
        ):  # a file came after the last text: the pack reads words only
            return Verdict((), "attachment")
        if said[-1].sender == self.username:
            return Verdict((), "own")
        own = [m.text for m in said if m.sender == self.username]
        earlier: list[str] = []  # what they wrote just before, nothing of ours between
        for m in reversed(said[:-1]):
            if m.sender != said[-1].sender or len(earlier) == 4:
                break
            earlier.insert(0, m.text)
        return pack.decide(said[-1].text, pack.language(own[-5:], fallback_lang), earlier, own)

    async def history(self, conversation_id: str) -> list[PlainMessage | DecryptionFailed]:
        # Deferring only the cache is safe: a receiving chain that is not saved just decrypts
        # again later. Saves that guard a ratchet before sending stay immediate.
        self._cache_deferred, self._cache_dirty = True, False
        try:
            return [await self.decrypt(m) async for m in self.client.all_messages(conversation_id)]
        finally:
            self._cache_deferred = False
            if self._cache_dirty:
                self._save()

    # ----- lost keys -------------------------------------------------------------------------

    async def _request_key(self, message: Message) -> None:
        try:
            envelope = senderkeys.decode(message.body)
        except CryptoError:
            return
        marker = f"{message.conversation_id}|{envelope['dev']}|{envelope['kid']}"
        if marker in self.state["requested"] or message.sender_device_id is None:
            return
        try:
            devices = await self.client.conversation_devices(message.conversation_id)
        except ApiError:
            return  # no longer a member: there is no one to ask
        target = next((d for d in devices if d.device_id == message.sender_device_id), None)
        if target is None:
            return
        request = {
            "type": "key_request",
            "conversation_id": message.conversation_id,
            "kid": envelope["kid"],
            "i": envelope["i"],
            "seq": message.seq,
        }
        body = await self._pairwise_encrypt(target, request)
        self.state["requested"].append(marker)
        self._save()
        await self.client.send_inbox([(target.device_id, body)])

    async def _answer_key_request(self, item: InboxMessage, request: dict[str, Any]) -> None:
        """Re-shares a sender key from the message asked about, if the asker was a member when
        it was sent: never earlier than their joining."""
        conv = request["conversation_id"]
        stored = self.state["outbound"].get(conv)
        if stored is None or stored["kid"] != request["kid"]:
            return
        try:
            members = {m.user_id: m for m in await self.client.members(conv)}
        except ApiError:
            return
        asker = members.get(item.sender_id)
        if asker is None or request["seq"] <= asker.joined_seq:
            return
        key = senderkeys.OutboundSenderKey.from_json(stored)
        try:
            share = {"type": "sender_key", "conversation_id": conv, **key.share_from(request["i"])}
        except CryptoError:
            return
        devices = await self.client.conversation_devices(conv)
        target = next((d for d in devices if d.device_id == item.sender_device_id), None)
        if target is not None:
            body = await self._pairwise_encrypt(target, share)
            self._save()
            await self.client.send_inbox([(target.device_id, body)])

    # ----- identities ------------------------------------------------------------------------

    def _check_identities(self, devices: list[DeviceKeys]) -> list[IdentityChanged]:
        """Remembers contacts' device keys; a known device whose keys changed stops sending."""
        changes = []
        # Whom this device had looked at before: a first look finds nothing "new" (the order of
        # the list must not decide what is announced).
        looked = {
            name: bool(c["devices"]) or c["verified"] for name, c in self.state["contacts"].items()
        }
        for d in devices:
            contact = self.state["contacts"].setdefault(
                d.username, {"devices": {}, "verified": False}
            )
            keys = [d.signing_key, d.identity_key]
            known = contact["devices"].get(d.device_id)
            if d.device_id == self.device_id:
                contact["devices"][d.device_id] = keys  # this very device: nothing to tell
                continue
            if known is None:
                if looked.get(d.username, False):
                    # One of one's own: a security notice for oneself, not a contact's change.
                    kind = "own_new_device" if d.username == self.username else "new_device"
                    change = IdentityChanged(d.username, d.device_id, kind)
                    changes.append(change)
                    self.notices.append(change)
                    contact["verified"] = False
                contact["devices"][d.device_id] = keys
            elif known != keys:
                contact["verified"] = False
                contact.setdefault("changed", []).append(d.device_id)
                self._save()
                raise IdentityChangedError(d.username)
        return changes

    def accept_identity(self, username: str, devices: list[DeviceKeys]) -> None:
        """After the user compared safety numbers: trust ``username``'s devices as they are now."""
        self.state["contacts"][username] = {
            "devices": {d.device_id: [d.signing_key, d.identity_key] for d in devices},
            "verified": False,
        }
        self._save()

    async def safety_number(self, username: str) -> str:
        mine = await self.client.user_devices(self.username)
        theirs = await self.client.user_devices(username)

        def key(devices: list[DeviceKeys]) -> bytes:
            return safety.party_key(
                [(d.device_id, unb64(d.signing_key), unb64(d.identity_key)) for d in devices]
            )

        return safety.safety_number(self.username, key(mine), username, key(theirs))

    def mark_verified(self, username: str) -> None:
        self.state["contacts"].setdefault(username, {"devices": {}, "verified": False})[
            "verified"
        ] = True
        self._save()

    def is_verified(self, username: str) -> bool:
        return bool(self.state["contacts"].get(username, {}).get("verified"))
