"""The HTTP half of the SDK."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx

from secureconnect.client.errors import ApiError
from secureconnect.client.events import EventStream
from secureconnect.client.types import (
    AttachmentUsage,
    Blob,
    Blocked,
    Call,
    CallJoined,
    CompromiseReport,
    Conversation,
    Deploy,
    Device,
    DeviceKeys,
    EmailState,
    InboxMessage,
    Incident,
    IncidentSummary,
    Lifted,
    Login,
    MailingProgress,
    Me,
    Member,
    Message,
    ModeSet,
    Page,
    PrekeyBundle,
    Profile,
    Receipt,
    SecurityReport,
    Session,
    StatusPageOut,
    StorePasswordChanged,
    StorePasswordChecked,
    StoreReport,
    Subscription,
    TotpEnrolment,
    TotpStatus,
    User,
)

RETRYABLE_STATUS = {502, 503, 504}
READ_ATTEMPTS = 4  # 0.5 + 1 + 2 s of waiting at most, unless the server asks for longer


class Client:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` as in httpx: ``httpx.ASGITransport(app)`` talks to an app in this
        process (the realtime stream still needs a real server)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.login_info: Login | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----- accounts ------------------------------------------------------------------------

    async def register(self, username: str, password: str) -> User:
        data = await self._call(
            "POST",
            "/v1/auth/register",
            json={"username": username, "password": password},
            auth=False,
        )
        return User.model_validate(data)

    async def login(
        self,
        username: str,
        password: str,
        *,
        device_name: str = "python-sdk",
        device_id: str | None = None,
        totp_code: str | None = None,
    ) -> Login:
        """Logs in; without ``device_id`` this makes a new device, with it reuses that one.
        With two-step verification on, a login without ``totp_code`` raises ``ApiError``
        ``totp_required``: ask the person for the code and log in again with it."""
        data = await self._call(
            "POST",
            "/v1/auth/login",
            auth=False,
            json={
                "username": username,
                "password": password,
                "device_name": device_name,
                "device_id": device_id,
                "totp_code": totp_code,
            },
        )
        self.login_info = Login(**data)
        self.token = self.login_info.token
        return self.login_info

    async def change_password(
        self, current: str, new: str, *, keep_other_sessions: bool = False
    ) -> int:
        """Changes the password; returns how many other sessions were logged out (all, unless
        kept). This session stays logged in."""
        data = await self._call(
            "POST",
            "/v1/auth/password",
            json={
                "current_password": current,
                "new_password": new,
                "keep_other_sessions": keep_other_sessions,
            },
        )
        return int(data["revoked_sessions"])

    async def email(self) -> EmailState:
        return EmailState.model_validate(await self._call("GET", "/v1/me/email"))

    async def set_email(self, address: str) -> EmailState:
        """Mails a code to ``address``; it receives security notices once :meth:`verify_email`
        has the code."""
        return EmailState.model_validate(
            await self._call("PUT", "/v1/me/email", json={"email": address})
        )

    async def verify_email(self, code: str) -> EmailState:
        return EmailState.model_validate(
            await self._call("POST", "/v1/me/email/verify", json={"code": code})
        )

    async def remove_email(self) -> None:
        await self._call("DELETE", "/v1/me/email")

    async def compromise(
        self, reason: str, usernames: list[str] | None = None, *, dry_run: bool = False
    ) -> CompromiseReport:
        """The breach procedure for the named users, or every user (admins only)."""
        body = {
            "all": usernames is None,
            "usernames": usernames or [],
            "reason": reason,
            "dry_run": dry_run,
        }
        return CompromiseReport.model_validate(
            await self._call("POST", "/v1/ops/compromise", json=body)
        )

    async def notify_users(
        self, subject: str, body: str, *, batch: int = 50, dry_run: bool = False
    ) -> MailingProgress:
        """Mails the next ``batch`` users who have not had this mail (admins only); call again
        until ``remaining`` is 0."""
        data = await self._call(
            "POST",
            "/v1/ops/notify-users",
            json={"subject": subject, "body": body, "batch": batch, "dry_run": dry_run},
        )
        return MailingProgress.model_validate(data)

    async def totp_status(self) -> TotpStatus:
        return TotpStatus.model_validate(await self._call("GET", "/v1/auth/totp"))

    async def totp_begin(self) -> TotpEnrolment:
        """A new secret for an authenticator app; in force once :meth:`totp_confirm` has seen
        a first code from it."""
        return TotpEnrolment.model_validate(await self._call("POST", "/v1/auth/totp"))

    async def totp_confirm(self, code: str) -> list[str]:
        """Turns two-step verification on; returns the ten recovery codes (shown once)."""
        data = await self._call("POST", "/v1/auth/totp/confirm", json={"code": code})
        return [str(c) for c in data["recovery_codes"]]

    async def totp_disable(self, password: str, code: str) -> None:
        await self._call("POST", "/v1/auth/totp/disable", json={"password": password, "code": code})

    async def logout(self) -> None:
        await self._call("POST", "/v1/auth/logout")
        self.token = None

    async def me(self) -> Me:
        return Me.model_validate(await self._call("GET", "/v1/me"))

    async def devices(self) -> list[Device]:
        return [Device.model_validate(d) for d in await self._call("GET", "/v1/devices")]

    async def revoke_device(self, device_id: str) -> None:
        await self._call("DELETE", f"/v1/devices/{device_id}")

    async def sessions(self) -> list[Session]:
        return [Session.model_validate(d) for d in await self._call("GET", "/v1/sessions")]

    async def revoke_session(self, session_id: str) -> None:
        await self._call("DELETE", f"/v1/sessions/{session_id}")

    # ----- conversations -------------------------------------------------------------------

    async def create_group(self, members: list[str], name: str | None = None) -> Conversation:
        data = await self._call(
            "POST", "/v1/conversations", json={"kind": "group", "members": members, "name": name}
        )
        return Conversation.from_json(data)

    async def direct(self, username: str) -> Conversation:
        """The 1:1 conversation with ``username``, created the first time."""
        data = await self._call(
            "POST", "/v1/conversations", json={"kind": "direct", "members": [username]}
        )
        return Conversation.from_json(data)

    async def accept(self, conversation_id: str) -> Conversation:
        """Accepts a message request (sending a message in it accepts it too)."""
        data = await self._call("POST", f"/v1/conversations/{conversation_id}/accept")
        return Conversation.from_json(data)

    async def decline(self, conversation_id: str, *, block: bool = False) -> None:
        """Declines a message request; ``block`` also stops its sender putting you anywhere."""
        await self._call(
            "POST", f"/v1/conversations/{conversation_id}/decline", json={"block": block}
        )

    async def blocked_users(self) -> list[str]:
        """The people you blocked (``decline(..., block=True)``)."""
        names: list[str] = await self._call("GET", "/v1/blocks")
        return names

    async def unblock_user(self, username: str) -> None:
        await self._call("DELETE", f"/v1/blocks/{username}")

    async def conversations(self) -> list[Conversation]:
        return [Conversation.from_json(c) for c in await self._call("GET", "/v1/conversations")]

    async def conversation(self, conversation_id: str) -> Conversation:
        return Conversation.from_json(
            await self._call("GET", f"/v1/conversations/{conversation_id}")
        )

    async def members(self, conversation_id: str) -> list[Member]:
        rows = await self._call("GET", f"/v1/conversations/{conversation_id}/members")
        return [Member.model_validate(m) for m in rows]

    async def add_member(self, conversation_id: str, username: str) -> Message:
        return Message.from_json(
            await self._call(
                "POST", f"/v1/conversations/{conversation_id}/members", json={"username": username}
            )
        )

    async def remove_member(self, conversation_id: str, username: str) -> Message:
        return Message.from_json(
            await self._call("DELETE", f"/v1/conversations/{conversation_id}/members/{username}")
        )

    # ----- messages ------------------------------------------------------------------------

    async def send(
        self,
        conversation_id: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        client_msg_id: str | None = None,
        attempts: int = 5,
    ) -> Message:
        """Sends and returns the stored message (with its ``seq``) once the server holds it
        durably. Network failures are retried with the same ``client_msg_id``, so a message is
        never stored twice."""
        msg_id = client_msg_id or uuid.uuid4().hex
        payload = {
            "client_msg_id": msg_id,
            "content_type": content_type,
            "body": base64.b64encode(body).decode(),
        }
        delay = 0.2
        for attempt in range(attempts):
            try:
                data = await self._call(
                    "POST", f"/v1/conversations/{conversation_id}/messages", json=payload
                )
                return Message.from_json(data)
            except (httpx.TransportError, ApiError) as error:
                retryable = isinstance(error, httpx.TransportError) or (
                    error.status in RETRYABLE_STATUS
                )
                if not retryable or attempt == attempts - 1:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
        raise AssertionError("unreachable")

    async def history(
        self,
        conversation_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> Page:
        params: dict[str, int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if before is not None:
            params["before"] = before
        data = await self._call(
            "GET", f"/v1/conversations/{conversation_id}/messages", params=params
        )
        return Page(
            [Message.from_json(e) for e in data["events"]],
            data["has_more"],
            data["last_seq"],
            data["joined_seq"],
        )

    async def all_messages(
        self, conversation_id: str, *, after: int = 0, page_size: int = 200
    ) -> AsyncIterator[Message]:
        """Every visible event after ``after``, oldest first, fetched page by page."""
        while True:
            page = await self.history(conversation_id, after=after, limit=page_size)
            for message in page.messages:
                yield message
                after = message.seq
            if not page.has_more:
                return

    async def mark(
        self, conversation_id: str, *, delivered: int | None = None, read: int | None = None
    ) -> Receipt:
        data = await self._call(
            "POST",
            f"/v1/conversations/{conversation_id}/receipts",
            json={"delivered_seq": delivered, "read_seq": read},
        )
        return Receipt(**{k: data[k] for k in Receipt.__dataclass_fields__})

    async def receipts(self, conversation_id: str) -> list[Receipt]:
        rows = await self._call("GET", f"/v1/conversations/{conversation_id}/receipts")
        return [Receipt(**r) for r in rows]

    async def typing(self, conversation_id: str, active: bool = True) -> None:
        await self._call(
            "POST", f"/v1/conversations/{conversation_id}/typing", json={"typing": active}
        )

    async def report_suggestions(
        self,
        pack_version: str,
        shown: int = 0,
        taken: list[int] | None = None,
        load_failures: int = 0,
    ) -> None:
        """Counts of suggested replies (rows shown, positions of chips taken, packs that failed
        to load), for the operators' metrics; never text, conversation or intent."""
        await self._call(
            "POST",
            "/v1/suggest/report",
            json={
                "pack_version": pack_version,
                "shown": shown,
                "taken": taken or [],
                "load_failures": load_failures,
            },
        )

    # ----- keys and inbox (used by SecureClient) -------------------------------------------

    async def publish_keys(self, keys: dict[str, Any]) -> None:
        await self._call("PUT", "/v1/keys/device", json=keys)

    async def upload_prekeys(self, prekeys: list[dict[str, Any]]) -> int:
        data = await self._call("POST", "/v1/keys/one-time", json={"prekeys": prekeys})
        return int(data["one_time_prekeys"])

    async def prekey_count(self) -> int:
        return int((await self._call("GET", "/v1/keys/count"))["one_time_prekeys"])

    async def user_devices(self, username: str) -> list[DeviceKeys]:
        rows = await self._call("GET", f"/v1/users/{username}/devices")
        return [DeviceKeys.model_validate(d) for d in rows]

    async def conversation_devices(self, conversation_id: str) -> list[DeviceKeys]:
        rows = await self._call("GET", f"/v1/conversations/{conversation_id}/devices")
        return [DeviceKeys.model_validate(d) for d in rows]

    async def claim(self, device_ids: list[str]) -> list[PrekeyBundle]:
        """A prekey bundle per device, each with a one-time prekey while any are left."""
        rows = await self._call("POST", "/v1/keys/claim", json={"device_ids": device_ids})
        return [PrekeyBundle.model_validate(b) for b in rows]

    async def send_inbox(self, messages: list[tuple[str, bytes]]) -> list[int]:
        data = await self._call(
            "POST",
            "/v1/inbox",
            json={
                "messages": [
                    {"device_id": d, "body": base64.b64encode(b).decode()} for d, b in messages
                ]
            },
        )
        return list(data["ids"])

    async def inbox(self, after: int = 0) -> list[InboxMessage]:
        rows = await self._call("GET", "/v1/inbox", params={"after": after})
        return [InboxMessage.from_json(r) for r in rows]

    async def ack_inbox(self, up_to: int) -> int:
        return int((await self._call("POST", "/v1/inbox/ack", json={"up_to": up_to}))["deleted"])

    # ----- on-call (admins) --------------------------------------------------------------

    async def incident_open(self, title: str, severity: str, text: str = "") -> Incident:
        return Incident.model_validate(
            await self._call(
                "POST",
                "/v1/ops/incidents",
                json={"title": title, "severity": severity, "text": text},
            )
        )

    async def incidents(self, include_closed: bool = False) -> list[IncidentSummary]:
        rows = await self._call(
            "GET", "/v1/ops/incidents", params={"all": str(include_closed).lower()}
        )
        return [IncidentSummary.model_validate(r) for r in rows]

    async def incident(self, ref: str) -> Incident:
        return Incident.model_validate(await self._call("GET", f"/v1/ops/incidents/{ref}"))

    async def incident_step(
        self,
        ref: str,
        to: str,
        text: str = "",
        *,
        users_affected: int | None = None,
        recent_deploy: bool | None = None,
    ) -> Incident:
        body = {
            "to": to,
            "text": text,
            "users_affected": users_affected,
            "recent_deploy": recent_deploy,
        }
        return Incident.model_validate(
            await self._call("POST", f"/v1/ops/incidents/{ref}/steps", json=body)
        )

    async def incident_update(self, ref: str, text: str, kind: str = "update") -> Incident:
        """A timeline entry; ``kind="action"`` for something done through the tooling."""
        return Incident.model_validate(
            await self._call(
                "POST", f"/v1/ops/incidents/{ref}/updates", json={"text": text, "kind": kind}
            )
        )

    async def incident_severity(self, ref: str, severity: str, text: str = "") -> Incident:
        return Incident.model_validate(
            await self._call(
                "POST",
                f"/v1/ops/incidents/{ref}/severity",
                json={"severity": severity, "text": text},
            )
        )

    async def incident_close(self, ref: str, override_reason: str | None = None) -> Incident:
        return Incident.model_validate(
            await self._call(
                "POST",
                f"/v1/ops/incidents/{ref}/close",
                json={"override_reason": override_reason},
            )
        )

    async def incident_public_update(
        self,
        ref: str,
        *,
        phase: str | None = None,
        text: str | None = None,
        components: dict[str, str] | None = None,
        template: str | None = None,
    ) -> StatusPageOut:
        """Posts to the status page; returns the page as it now stands."""
        data = await self._call(
            "POST",
            f"/v1/ops/incidents/{ref}/public",
            json={
                "phase": phase,
                "text": text,
                "components": components or {},
                "template": template,
            },
        )
        return StatusPageOut.model_validate(data)

    async def security_report(self, window_s: int = 900) -> SecurityReport:
        """Failed logins per address in the window, blocked networks, rate-limit mode."""
        return SecurityReport.model_validate(
            await self._call("GET", "/v1/ops/security", params={"window_s": window_s})
        )

    async def block(self, network: str, reason: str, expires_in_s: int | None = None) -> Blocked:
        return Blocked.model_validate(
            await self._call(
                "POST",
                "/v1/ops/blocks",
                json={"network": network, "reason": reason, "expires_in_s": expires_in_s},
            )
        )

    async def unblock(self, network: str) -> Lifted:
        return Lifted.model_validate(
            await self._call("POST", "/v1/ops/blocks/lift", json={"network": network})
        )

    async def set_rate_limit(self, mode: str) -> ModeSet:
        return ModeSet.model_validate(
            await self._call("PUT", "/v1/ops/rate-limit", json={"mode": mode})
        )

    async def store_report(self) -> StoreReport:
        """The database as the server sees it: round trip, role, durability, pool, errors."""
        return StoreReport.model_validate(await self._call("GET", "/v1/ops/store"))

    async def set_durability(self, mode: str) -> StoreReport:
        """``sync``: commits wait for a standby; ``local``: for the primary alone (runbook 23.7)."""
        data = await self._call("POST", "/v1/ops/store/durability", json={"mode": mode})
        return StoreReport.model_validate(data)

    async def change_store_password(self, verifier: str) -> StorePasswordChanged:
        """The service role's new PostgreSQL password, sent as its SCRAM verifier
        (``secureconnect.store.credentials.scram_verifier``), never as the password."""
        return StorePasswordChanged.model_validate(
            await self._call("POST", "/v1/ops/store/password", json={"verifier": verifier})
        )

    async def store_accepts_password(self, password: str) -> bool:
        """Whether PostgreSQL still lets the service role in with ``password``."""
        answer = await self._call(
            "POST", "/v1/ops/store/password/check", json={"password": password}
        )
        return StorePasswordChecked.model_validate(answer).accepted

    async def deploys(self, since_s: int = 3600) -> list[Deploy]:
        rows = await self._call("GET", "/v1/ops/deploys", params={"since_s": since_s})
        return [Deploy.model_validate(d) for d in rows]

    async def incident_postmortem(self, ref: str) -> str:
        if self.token is None:
            raise ApiError(401, "missing_token", "log in first")
        response = await self._http.get(
            f"/v1/ops/incidents/{ref}/postmortem", headers={"Authorization": f"Bearer {self.token}"}
        )
        if response.is_error:
            error = response.json().get("error", {})
            raise ApiError(
                response.status_code,
                error.get("code", "http_error"),
                error.get("message", response.text[:200]),
            )
        return response.text

    # ----- realtime ------------------------------------------------------------------------

    def events(
        self, cursors: dict[str, int] | None = None, *, reconnect: bool = True
    ) -> EventStream:
        """Live events for this device; see :class:`EventStream`."""
        if self.token is None:
            raise ApiError(401, "missing_token", "log in first")
        return EventStream(self.base_url, self.token, cursors or {}, reconnect=reconnect)

    # ----- plumbing ------------------------------------------------------------------------

    # ----- calls ---------------------------------------------------------------------------

    async def start_call(self, conversation_id: str, media: str = "video") -> Call:
        """Rings every member but a message request (which it accepts, if it is the caller's
        own); if a call is already open in the conversation, returns it."""
        data = await self._call(
            "POST", "/v1/calls", json={"conversation_id": conversation_id, "media": media}
        )
        return Call.model_validate(data)

    async def current_call(self, conversation_id: str) -> Call:
        return Call.model_validate(
            await self._call("GET", "/v1/calls", params={"conversation_id": conversation_id})
        )

    async def open_calls(self) -> list[Call]:
        """The calls going on in conversations you accepted: after accepting a message request
        (a call there did not ring), or when coming online during one."""
        data = await self._call("GET", "/v1/calls/open")
        return [Call.model_validate(c) for c in data]

    async def get_call(self, call_id: str) -> Call:
        return Call.model_validate(await self._call("GET", f"/v1/calls/{call_id}"))

    async def join_call(self, call_id: str) -> CallJoined:
        """Takes a seat (the TURN credentials come with it); media needs ``publish``."""
        return CallJoined.model_validate(await self._call("POST", f"/v1/calls/{call_id}/join"))

    async def decline_call(self, call_id: str) -> Call:
        return Call.model_validate(await self._call("POST", f"/v1/calls/{call_id}/decline"))

    async def leave_call(self, call_id: str) -> Call:
        return Call.model_validate(await self._call("POST", f"/v1/calls/{call_id}/leave"))

    async def call_heartbeat(self, call_id: str) -> None:
        """Says this device is still in the call (every 10 s; silent ones are dropped)."""
        await self._call("POST", f"/v1/calls/{call_id}/heartbeat")

    async def subscribe_call(
        self, call_id: str, feeds: list[int], *, restart: bool = False
    ) -> Subscription:
        """``restart``: for a new subscriber connection (see ``POST /v1/calls/{id}/subscribe``)."""
        body = {"feeds": feeds, "restart": restart}
        return Subscription.model_validate(
            await self._call("POST", f"/v1/calls/{call_id}/subscribe", json=body)
        )

    async def configure_call(
        self,
        call_id: str,
        *,
        audio: bool | None = None,
        video: bool | None = None,
        screen: bool | None = None,
    ) -> Call:
        body = {"audio": audio, "video": video, "screen": screen}
        data = await self._call(
            "POST",
            f"/v1/calls/{call_id}/configure",
            json={k: v for k, v in body.items() if v is not None},
        )
        return Call.model_validate(data)

    # ----- profiles: display names and pictures (not end-to-end encrypted: decision 0030) ----

    async def my_profile(self) -> Profile:
        return Profile.model_validate(await self._call("GET", "/v1/me/profile"))

    async def set_display_name(self, name: str | None) -> Profile:
        """Shown instead of one's username to those one shares a conversation with (each is
        told of the change in the timeline); ``None`` removes it."""
        data = await self._call("PUT", "/v1/me/profile", json={"display_name": name})
        return Profile.model_validate(data)

    async def set_avatar(self, image: bytes) -> Profile:
        """A JPEG, PNG, WebP or GIF: the server crops, resizes and strips its metadata."""
        data = await self._call("PUT", "/v1/me/avatar", content=image)
        return Profile.model_validate(data)

    async def remove_avatar(self) -> Profile:
        return Profile.model_validate(await self._call("DELETE", "/v1/me/avatar"))

    async def profiles(self, usernames: list[str]) -> list[Profile]:
        """Those of the named people one shares a conversation with (others are left out)."""
        data = await self._call("POST", "/v1/profiles", json={"usernames": usernames})
        return [Profile.model_validate(p) for p in data]

    async def avatar(self, username: str, size: int = 256) -> bytes:
        """A person's picture as JPEG, 64 or 256 pixels a side."""
        return await self._bytes(f"/v1/users/{username}/avatar?size={size}")

    async def rename_group(self, conversation_id: str, name: str) -> Conversation:
        data = await self._call(
            "PATCH", f"/v1/conversations/{conversation_id}", json={"name": name}
        )
        return Conversation.from_json(data)

    async def set_group_avatar(self, conversation_id: str, image: bytes) -> Conversation:
        data = await self._call("PUT", f"/v1/conversations/{conversation_id}/avatar", content=image)
        return Conversation.from_json(data)

    async def remove_group_avatar(self, conversation_id: str) -> Conversation:
        data = await self._call("DELETE", f"/v1/conversations/{conversation_id}/avatar")
        return Conversation.from_json(data)

    async def group_avatar(self, conversation_id: str, size: int = 256) -> bytes:
        return await self._bytes(f"/v1/conversations/{conversation_id}/avatar?size={size}")

    async def _bytes(self, path: str) -> bytes:
        """A GET whose answer is bytes, not JSON."""
        if self.token is None:
            raise ApiError(401, "missing_token", "log in first")
        response = await self._http.get(path, headers={"Authorization": f"Bearer {self.token}"})
        if response.is_error:
            raise _api_error(response)
        return response.content

    # ----- attachments (ciphertext only: client.attachments encrypts) -----------------------

    async def attachment_usage(self) -> AttachmentUsage:
        return AttachmentUsage.model_validate(await self._call("GET", "/v1/blobs"))

    async def create_blob(self, conversation_id: str, size: int, chunk_size: int) -> Blob:
        data = await self._call(
            "POST",
            "/v1/blobs",
            json={"conversation_id": conversation_id, "size": size, "chunk_size": chunk_size},
        )
        return Blob.model_validate(data)

    async def blob(self, blob_id: str) -> Blob:
        return Blob.model_validate(await self._call("GET", f"/v1/blobs/{blob_id}"))

    async def put_chunk(self, blob_id: str, n: int, data: bytes) -> None:
        """Sending a chunk again replaces it, so a chunk whose answer was lost is retried
        (the connection dropped, or the server or its storage was briefly away)."""
        for attempt in range(READ_ATTEMPTS):
            try:
                await self._call(
                    "PUT",
                    f"/v1/blobs/{blob_id}/chunks/{n}",
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
                return
            except httpx.TransportError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
            except ApiError as error:
                if error.status not in RETRYABLE_STATUS or attempt == READ_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.5 * 2**attempt)

    async def complete_blob(self, blob_id: str) -> Blob:
        return Blob.model_validate(await self._call("POST", f"/v1/blobs/{blob_id}/complete"))

    async def delete_blob(self, blob_id: str) -> None:
        await self._call("DELETE", f"/v1/blobs/{blob_id}")

    async def blob_content(self, blob_id: str) -> AsyncIterator[bytes]:
        """The ciphertext as it arrives, never all of it in memory."""
        if self.token is None:
            raise ApiError(401, "missing_token", "log in first")
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self._http.stream(
            "GET", f"/v1/blobs/{blob_id}/content", headers=headers
        ) as response:
            if response.is_error:
                await response.aread()
                raise _api_error(response)
            async for piece in response.aiter_bytes():
                yield piece

    async def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            if self.token is None:
                raise ApiError(401, "missing_token", "log in first")
            headers["Authorization"] = f"Bearer {self.token}"
        # A read is safe to repeat: one that meets a restarting server or database (502-504,
        # or the connection dropped) is tried again a few times, waiting as the server asks.
        tries = READ_ATTEMPTS if method == "GET" else 1
        for attempt in range(tries):
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            if response.status_code not in RETRYABLE_STATUS or attempt == tries - 1:
                break
            wait = response.headers.get("retry-after", "")
            await asyncio.sleep(min(float(wait), 5.0) if wait.isdigit() else 0.5 * 2**attempt)
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_error:
            raise _api_error(response)
        return data


def _api_error(response: httpx.Response) -> ApiError:
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        wait = response.headers.get("retry-after", "0")
        return ApiError(
            response.status_code,
            str(error.get("code")),
            str(error.get("message")),
            int(wait) if wait.isdigit() else 0,
        )
    return ApiError(response.status_code, "http_error", response.text[:200])
