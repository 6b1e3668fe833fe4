"""Email addresses, security notices and the breach procedure (runbook 23.8), through a real
server and a real SMTP receiver (aiosmtpd), on both backends."""

from __future__ import annotations

import asyncio
import email
import json
import re
from collections.abc import Iterator

import pyotp
import pytest
import websockets
from aiosmtpd.controller import Controller

from secureconnect.client import ApiError, Client, ConnectionLost
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.secure import SecureClient
from tests.helpers import PASSWORD, run_cli, signed_up
from tests.server import free_port

NEW_PASSWORD = "the new passphrase after a breach"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        message["X-Rcpt"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[email.message.Message]:
        return [m for m in self.messages if m["X-Rcpt"] == address]

    async def wait(self, address: str, count: int, timeout: float = 10) -> list[str]:
        """The bodies of the first ``count`` mails to ``address``, waiting for them."""
        for _ in range(int(timeout * 20)):
            if len(self.to(address)) >= count:
                break
            await asyncio.sleep(0.05)
        mails = self.to(address)
        assert len(mails) >= count, [m["Subject"] for m in mails]
        return [f"{m['Subject']}\n{m.get_payload(decode=True).decode()}" for m in mails]


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    yield box, port
    smtp.stop()


@pytest.fixture
def mail_server(own_server, mailbox):
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_NOTIFY_SMTP_HOST": "127.0.0.1",
            "SECURECONNECT_NOTIFY_SMTP_PORT": str(mailbox[1]),
        }
    )
    return own_server.start()


async def with_address(client: Client, box: Mailbox, address: str) -> None:
    await client.set_email(address)
    [mail] = await box.wait(address, 1)
    code = re.search(r"your code is (\d{6})", mail).group(1)
    await client.verify_email(code)


async def test_an_address_is_proven_by_a_code_then_gets_security_notices(mail_server, mailbox):
    box, _ = mailbox
    async with await signed_up(Client(mail_server.url), "alice") as alice:
        with pytest.raises(ApiError) as bad:
            await alice.set_email("not an address")
        assert (bad.value.status, bad.value.code) == (400, "invalid_email")
        state = await alice.set_email("alice@example.org")
        assert (state.email, state.pending) == (None, "alice@example.org")
        [mail] = await box.wait("alice@example.org", 1)
        code = re.search(r"your code is (\d{6})", mail).group(1)
        with pytest.raises(ApiError) as wrong:
            await alice.verify_email("000000" if code != "000000" else "111111")
        assert wrong.value.code == "invalid_email_code"
        assert (await alice.verify_email(code)).email == "alice@example.org"
        assert code.encode() not in mail_server.stored_data()  # kept only as a hash

        # What happens to the account is told to its owner, in plain words.
        async with Client(mail_server.url) as phone:
            await phone.login("alice", PASSWORD, device_name="new phone")
        notices = await box.wait("alice@example.org", 2)
        assert 'A new device, "new phone", logged in' in notices[1]
        await alice.change_password(PASSWORD, NEW_PASSWORD)
        notices = await box.wait("alice@example.org", 3)
        assert "your password was changed" in notices[2] and "1 other session(s)" in notices[2]
        secret = (await alice.totp_begin()).secret
        await alice.totp_confirm(pyotp.TOTP(secret).now())
        notices = await box.wait("alice@example.org", 4)
        assert "two-step verification is on" in notices[3]
        # Another user's notices do not go there.
        async with await signed_up(Client(mail_server.url), "bob") as bob:
            assert (await bob.email()).email is None
    await asyncio.sleep(0.3)
    assert len(box.messages) == 4
    assert not any("alice@example.org" in str(line) for line in mail_server.logs())


async def test_without_a_mail_server_an_address_cannot_be_set(own_server) -> None:
    srv = own_server.start()
    async with await signed_up(Client(srv.url), "carl") as carl:
        with pytest.raises(ApiError) as refused:
            await carl.set_email("carl@example.org")
        assert (refused.value.status, refused.value.code) == (503, "mail_unavailable")


async def test_compromise_logs_out_revokes_devices_mails_once_and_forces_a_new_password(
    mail_server, mailbox, tmp_path
) -> None:
    box, _ = mailbox
    url = mail_server.url
    oncall = await signed_up(Client(url), "oncall")
    alice, bob, carol = [await signed_up(Client(url), n) for n in ("alice", "bob", "carol")]
    await with_address(alice, box, "alice@example.org")
    # Carol talks to Alice end to end, from the Python SDK.
    alice_secure = SecureClient(alice, DeviceStore(tmp_path / "alice-1.json"))
    carol_secure = SecureClient(carol, DeviceStore(tmp_path / "carol.json"))
    await alice_secure.start()
    await carol_secure.start()
    conv = await carol.direct("alice")
    await carol_secure.send(conv.id, b"before")
    number = await carol_secure.safety_number("alice")
    stream = aiter(alice.events())
    await asyncio.wait_for(anext(stream), 10)

    # Only admins, and a dry run changes nothing.
    with pytest.raises(ApiError) as not_admin:
        await carol.compromise("leaked laptop", ["alice"])
    assert (not_admin.value.status, not_admin.value.code) == (403, "not_admin")
    with pytest.raises(ApiError) as unknown:
        await oncall.compromise("leaked laptop", ["alice", "nobody-here"])
    assert (unknown.value.status, unknown.value.code) == (404, "user_not_found")
    with pytest.raises(ApiError) as nul:  # PostgreSQL cannot hold one: refused, not a 500
        await oncall.compromise("leaked\x00laptop", ["alice\x00"])
    assert (nul.value.status, nul.value.code) == (422, "invalid_request")
    assert "NUL" in nul.value.message
    preview = await oncall.compromise("leaked laptop", ["alice", "bob"], dry_run=True)
    assert (preview.users, preview.sessions_revoked, preview.devices_revoked) == (2, 2, 2)
    assert (preview.mailed, preview.no_address, preview.dry_run) == (0, 1, True)
    assert (await alice.me()).username == "alice"

    report = await oncall.compromise("leaked laptop", ["alice", "bob"])
    assert (report.users, report.already, report.sessions_revoked) == (2, 0, 2)
    assert (report.devices_revoked, report.mailed, report.no_address) == (2, 1, 1)
    with pytest.raises(ConnectionLost) as lost:
        while True:
            await asyncio.wait_for(anext(stream), 10)
    assert lost.value.code == 4401
    for victim in (alice, bob):
        with pytest.raises(ApiError) as revoked:
            await victim.me()
        assert revoked.value.code == "token_revoked"
    assert (await carol.me()).username == "carol"  # not named: untouched
    [_, breach] = await box.wait("alice@example.org", 2)
    assert "action needed on your account" in breach and "leaked laptop" in breach
    # The same command again: nothing twice.
    again = await oncall.compromise("leaked laptop", ["alice", "bob"])
    assert (again.users, again.already, again.sessions_revoked, again.mailed) == (0, 2, 0, 0)
    await asyncio.sleep(0.3)
    assert len(box.to("alice@example.org")) == 2

    # Alice logs in again: nothing but a new password until she has one.
    relogin = Client(url)
    with pytest.raises(ApiError) as gone:  # the old device is revoked
        await relogin.login("alice", PASSWORD, device_id=alice.login_info.device_id)
    assert gone.value.code == "device_not_found"
    info = await relogin.login("alice", PASSWORD)
    assert info.must_change_password and info.new_device
    with pytest.raises(ApiError) as must:
        await relogin.conversations()
    assert (must.value.status, must.value.code) == (403, "must_change_password")
    ws_url = url.replace("http", "ws") + "/v1/events"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": relogin.token}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4403
    await relogin.change_password(PASSWORD, NEW_PASSWORD)
    assert await relogin.conversations()
    # New keys on the new device; Carol's client sees the change and the safety number moves.
    await SecureClient(relogin, DeviceStore(tmp_path / "alice-2.json")).start()
    await carol_secure.send(conv.id, b"after")
    assert [(n.username, n.change) for n in carol_secure.notices] == [("alice", "new_device")]
    assert await carol_secure.safety_number("alice") != number

    # The CLI's dry run says what it would do; the real one asks first.
    home = tmp_path / "cli"
    run_cli(url, home, "login", "oncall", check=True)
    dry = run_cli(
        url, home, "oncall", "compromise", "--all", "--reason", "db dump", "--dry-run", check=True
    )
    assert "dry run, nothing changed: would affect 3 user(s)" in dry.stdout
    refused = run_cli(
        url, home, "oncall", "compromise", "--all", "--reason", "db dump", stdin="n\n"
    )
    assert refused.returncode == 1 and "nothing changed" in refused.stdout
    assert (await carol.me()).username == "carol"
    for client in (oncall, alice, bob, carol, relogin):
        await client.aclose()


async def test_notify_users_mails_everyone_once_and_resumes_after_an_interruption(
    mail_server, mailbox, tmp_path
) -> None:
    box, _ = mailbox
    url = mail_server.url
    oncall = await signed_up(Client(url), "oncall")
    people = [await signed_up(Client(url), f"user{i}") for i in range(4)]
    for i, person in enumerate(people[:3]):
        await with_address(person, box, f"user{i}@example.org")
    codes = len(box.messages)
    body = "We detected unusual activity; please change your password."
    with pytest.raises(ApiError) as not_admin:
        await people[0].notify_users("Unusual activity", body)
    assert not_admin.value.code == "not_admin"
    dry = await oncall.notify_users("Unusual activity", body, dry_run=True)
    assert (dry.remaining, dry.sent, dry.no_address) == (3, 0, 2)  # oncall and user3: none

    first = await oncall.notify_users("Unusual activity", body, batch=2)
    assert (first.sent_now, first.sent, first.remaining) == (2, 2, 1)
    # The command is cut off here; run again, it goes on with the one left.
    path = tmp_path / "body.txt"
    path.write_text(body)
    home = tmp_path / "cli"
    run_cli(url, home, "login", "oncall", check=True)
    args = ("oncall", "notify-users", "--subject", "Unusual activity", "--body-file", str(path))
    done = run_cli(url, home, *args, "--yes", check=True)
    assert "3 user(s) mailed, 2 without an address" in done.stdout
    again = run_cli(url, home, *args, "--yes", check=True)
    assert "3 user(s) mailed" in again.stdout
    await asyncio.sleep(0.3)
    mails = box.messages[codes:]
    assert sorted(m["X-Rcpt"] for m in mails) == [f"user{i}@example.org" for i in range(3)]
    assert all(body in m.get_payload(decode=True).decode() for m in mails)
    for client in (oncall, *people):
        await client.aclose()
