"""The web client in real Chromium against a real server: what a person does, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from secureconnect.client import ApiError, Client, Conversation
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.secure import PlainMessage, SecureClient
from secureconnect.suggest.engine import Pack
from tests.browser import pages
from tests.helpers import PASSWORD, metric, signed_up, unique

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # Chromium


async def python_device(sdk: Client, name: str, tmp_path) -> SecureClient:
    """A person on the Python SDK, registered and logged in, with a started device."""
    await sdk.register(name, PASSWORD)
    await sdk.login(name, PASSWORD, device_name="python")
    device = SecureClient(sdk, DeviceStore(tmp_path / f"{name}.json"))
    await device.start()
    return device


PHONE = {"viewport": {"width": 390, "height": 780}, "is_mobile": True, "has_touch": True}


@pytest.mark.postgresql_too  # the whole path a deployment takes, on its database
async def test_two_browsers_chat_both_ways(browser, server) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = await pages.open_client(browser, server.url)
    await pages.shot(a, "01-login")
    b = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    await pages.register(b, bob, PASSWORD)
    await pages.start_conversation(a, bob)
    await pages.send(a, "Hi Bob, this never leaves our browsers unencrypted")
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "Hi Bob, this never leaves our browsers unencrypted")
    await pages.send(b, "Hi Alice! Lunch at noon?")
    await pages.wait_text(a, "Hi Alice! Lunch at noon?")
    # Bob has the conversation open, so Alice's message shows as read.
    await a.wait_for_selector(".msg.mine .meta:has-text('Read')", timeout=10000)
    await pages.shot(a, "02-chat")
    # The typing indicator reaches the other side.
    await b.type("#composer", "typing something")
    await a.wait_for_selector("#typing:has-text('is typing')", timeout=10000)
    assert a.errors == [] and b.errors == []
    # Both messages went on the browsers' sockets (a send frame), not as HTTP requests.
    posts = [
        e
        for e in server.logs()
        if e.get("route") == "/v1/conversations/{conversation_id}/messages"
        and e.get("method") == "POST"
        and e.get("user") in (alice, bob)
    ]
    assert posts == []
    await a.context.close()
    await b.context.close()


async def test_a_send_whose_answer_the_socket_lost_goes_once_over_http(browser, server) -> None:
    """The socket drops right after carrying a send frame, before its answer: the browser
    sends the same message over HTTP with the same id, and it is stored and shown once."""
    alice, bob = unique("alice"), unique("bob")
    a = await pages.open_client(browser, server.url)
    b = await pages.open_client(browser, server.url)
    cut: list[str] = []
    closing: list[asyncio.Future] = []

    def route(ws) -> None:
        upstream = ws.connect_to_server()

        def from_page(message) -> None:
            upstream.send(message)
            if not cut and isinstance(message, str) and '"type":"send"' in message:
                cut.append(message)
                closing.append(asyncio.ensure_future(ws.close(code=1012, reason="cut")))

        ws.on_message(from_page)

    await a.context.route_web_socket("**/v1/events", route)
    await pages.register(a, alice, PASSWORD)
    await pages.register(b, bob, PASSWORD)
    await pages.start_conversation(a, bob)
    await pages.send(a, "sent once, whatever the socket did")
    assert len(cut) == 1
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "sent once, whatever the socket did")
    await a.wait_for_selector("#status.online", timeout=20000)  # the socket is back
    await pages.send(a, "and the next one on the socket again")
    await pages.wait_text(b, "and the next one on the socket again")
    shown = b.locator(".msg:has-text('sent once, whatever the socket did')")
    assert await shown.count() == 1
    posts = [
        e
        for e in server.logs()
        if e.get("route") == "/v1/conversations/{conversation_id}/messages"
        and e.get("method") == "POST"
        and e.get("user") == alice
    ]
    assert [e["status"] in (200, 201) for e in posts] == [True]  # the retry, and only it
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


async def test_a_stranger_is_a_request_to_accept_or_block(browser, server) -> None:
    """Someone not in contact starts a chat: it shows as a request (what it says, who asks),
    the asker sees no "Read" until it is accepted; another is blocked, and then cannot start
    one again."""
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a = await pages.open_client(browser, server.url)
    b = await pages.open_client(browser, server.url)
    c = await pages.open_client(browser, server.url)
    for page, name in ((a, alice), (b, bob), (c, carol)):
        await pages.register(page, name, PASSWORD)
    await pages.start_conversation(a, bob)
    await pages.send(a, "Hello, we met at the conference")
    await b.wait_for_selector(f"#conversations li:has-text('{alice}') .request-tag", timeout=20000)
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "Hello, we met at the conference")
    assert f"{alice} wants to message you" in await b.locator("#request").inner_text()
    await pages.shot(b, "30-message-request")
    await a.wait_for_selector(".msg.mine .meta:has-text('Delivered')", timeout=10000)
    await asyncio.sleep(1.0)  # opening a request sends no read mark
    assert "Read" not in await a.locator(".msg.mine .meta").inner_text()
    await b.click("#request-accept")
    await b.wait_for_selector("#request", state="detached")
    await a.wait_for_selector(".msg.mine .meta:has-text('Read')", timeout=10000)
    await pages.send(b, "Nice to hear from you")
    await pages.wait_text(a, "Nice to hear from you")

    await pages.start_conversation(c, bob)
    await pages.send(c, "cheap watches")
    await b.wait_for_selector(f"#conversations li:has-text('{carol}') .request-tag", timeout=20000)
    await pages.open_conversation(b, carol)
    await b.click("#request-block")
    await b.wait_for_selector(f"#conversations li:has-text('{carol}')", state="detached")
    await c.click("#new-conversation")

    async def refusal(people: str) -> str:
        await c.fill("#new-people", people)
        await c.click("#new-start")
        error = "document.querySelector('#new-form .error').textContent.trim()"
        await c.wait_for_function(f"p => {error}.endsWith(p + '.')", arg=people)
        return await c.locator("#new-form .error").inner_text()

    unknown = await refusal(bob + "-and-friends")  # an unknown name, and the person who
    blocked = await refusal(bob)  # blocked carol, read the same
    assert blocked.replace(bob, "X") == unknown.replace(bob + "-and-friends", "X")
    assert "no such user" in blocked.lower()
    # Chromium logs the two refused requests (404) themselves; nothing else went wrong.
    assert [e for e in c.errors if "status of 404" not in e] == []
    assert a.errors == [] and b.errors == []
    for page in (a, b, c):
        await page.context.close()


async def test_ones_own_new_device_is_a_notice_about_ones_account(browser, server) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = await pages.open_client(browser, server.url)
    b = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    await pages.register(b, bob, PASSWORD)
    await pages.start_conversation(a, bob)
    await pages.send(a, "first")
    laptop = await pages.open_client(browser, server.url)  # alice on a second device
    await pages.login(laptop, alice, PASSWORD)
    await pages.send(a, "second")
    banner = await a.locator("#banner").inner_text()
    assert "A new device was added to your account" in banner
    assert "safety number" not in banner and alice not in banner
    assert a.errors == [] and laptop.errors == [] and b.errors == []
    for page in (a, b, laptop):
        await page.context.close()


async def test_a_text_too_long_is_counted_and_kept_not_sent(browser, server) -> None:
    """The limit is on ciphertext; the composer counts what the person typed, says how much is
    over, and a refused text stays in the box; nothing reaches the server."""
    alice, bob = unique("alice"), unique("bob")
    a = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    async with Client(server.url) as sdk:
        await sdk.register(bob, PASSWORD)
    await pages.start_conversation(a, bob)
    await pages.send(a, "short and sweet")
    long_text = "x" * 40_000
    await a.fill("#composer", long_text)
    assert "characters too many" in await a.locator("#length").inner_text()
    await a.press("#composer", "Enter")
    await a.wait_for_selector("#send-error:has-text('too long')")
    assert await a.input_value("#composer") == long_text  # nothing typed is lost
    await pages.shot(a, "31-too-long")
    over = int(re.search(r"\d+", await a.locator("#send-error").inner_text()).group())
    counted = await a.locator("#length").inner_text()
    assert counted == f"{over} characters too many"  # the counter and the refusal agree
    await a.fill("#composer", long_text[:-over])  # what it said to take out is enough
    assert "characters too many" not in await a.locator("#length").inner_text()
    await a.press("#composer", "Enter")
    await a.wait_for_selector(".msg.mine >> nth=1")  # sent: the second of alice's messages
    assert await a.locator("#send-error").inner_text() == ""
    async with Client(server.url) as sdk:
        await sdk.login(bob, PASSWORD)
        conv = (await sdk.conversations())[0]
        page = await sdk.history(conv.id)
        lengths = [len(m.body) for m in page.messages if m.kind == "message"]
    assert len(lengths) == 2 and max(lengths) <= 64 * 1024  # the short one and the long one
    # Too long for a message, it goes as a text file when the person says so.
    await a.fill("#composer", "y" * 70_000)
    await a.press("#composer", "Enter")
    await a.click("#send-as-file")
    await a.wait_for_selector(".msg.mine .attachment.file .file-name:text-is('message.txt')")
    assert await a.input_value("#composer") == ""
    assert a.errors == []
    await a.context.close()


async def test_browser_and_python_devices_share_a_group(browser, server, tmp_path) -> None:
    alice, carol, bob = unique("alice"), unique("carol"), unique("bob")
    a = await pages.open_client(browser, server.url)
    c = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    await pages.register(c, carol, PASSWORD)
    async with Client(server.url) as sdk:
        python = await python_device(sdk, bob, tmp_path)
        await pages.start_conversation(a, f"{bob}, {carol}", name="interop")
        await pages.send(a, "from alice's browser")
        await pages.open_conversation(c, "interop")
        await pages.wait_text(c, "from alice's browser")
        await pages.send(c, "from carol's browser")
        conv = next(x for x in await sdk.conversations() if x.name == "interop")
        await python.sync_inbox()
        await python.send(conv.id, b"from bob's python")
        for page in (a, c):
            await pages.wait_text(page, "from bob's python")
        await pages.wait_text(a, "from carol's browser")
        await python.sync_inbox()
        seen = [
            m.text
            for m in await python.history(conv.id)
            if isinstance(m, PlainMessage) and m.kind == "message"
        ]
        assert seen == ["from alice's browser", "from carol's browser", "from bob's python"]
    await pages.shot(a, "03-group-interop")
    assert a.errors == [] and c.errors == []
    await a.context.close()
    await c.context.close()


async def test_an_admin_removes_and_adds_back_a_member(browser, server, tmp_path) -> None:
    """Removing someone from the browser: they get nothing sent after, and the new messages are
    under a sender key they never received, so even the ciphertext is unreadable to them."""
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    async with Client(server.url) as bob_sdk, Client(server.url) as carol_sdk:
        devices = {
            bob: await python_device(bob_sdk, bob, tmp_path),
            carol: await python_device(carol_sdk, carol, tmp_path),
        }
        await pages.start_conversation(a, f"{bob}, {carol}", name="book club")
        await pages.send(a, "before: chapter one")
        conv = next(x for x in await bob_sdk.conversations() if x.name == "book club")

        async def texts(name: str) -> list[str]:
            await devices[name].sync_inbox()
            return [
                m.text
                for m in await devices[name].history(conv.id)
                if isinstance(m, PlainMessage) and m.kind == "message"
            ]

        assert await texts(carol) == ["before: chapter one"]

        await a.click("#members-button")
        await a.wait_for_selector(f"#member-list li[data-member='{carol}']")
        assert await a.locator("#member-list li").count() == 3
        await pages.shot(a, "07-members")
        await a.click(f"button[data-remove='{carol}']")
        await a.wait_for_selector(f"#member-list li[data-member='{carol}']", state="detached")
        await a.click("#members-dialog button:has-text('Close')")
        await a.wait_for_selector(f".system:has-text('{alice} removed {carol}')")
        await pages.send(a, "after: carol is out")
        assert await texts(bob) == ["before: chapter one", "after: carol is out"]
        assert await texts(carol) == ["before: chapter one"]
        # Suppose carol got the ciphertext anyway (a copy of the server's disk): no key opens it.
        page = await bob_sdk.history(conv.id)
        leaked = max(page.messages, key=lambda m: m.seq)
        assert leaked.kind == "message"
        refused = await devices[carol].decrypt(leaked)
        assert not isinstance(refused, PlainMessage)

        await a.click("#members-button")
        await a.fill("#add-member", carol)
        await a.click("#add-member-button")
        await a.wait_for_selector(f"#member-list li[data-member='{carol}']")
        await a.click("#members-dialog button:has-text('Close')")
        await pages.send(a, "welcome back, carol")
        # Added again, carol sees from her new joining on (decision 0005), never the gap.
        assert await texts(carol) == ["welcome back, carol"]

        # Leaving asks first: the first press only says what it means.
        await a.click("#members-button")
        await a.click("#leave-group")
        assert "Really leave?" in await a.locator("#leave-group").inner_text()
        assert alice in [m.username for m in await bob_sdk.members(conv.id)]
        await a.click("#leave-group")
        await a.wait_for_selector("#members-dialog", state="detached")
        assert alice not in [m.username for m in await bob_sdk.members(conv.id)]
    assert a.errors == []
    await a.context.close()


async def test_lost_sender_keys_are_asked_for_and_answered_both_ways(
    browser, server, tmp_path
) -> None:
    """A device that lost a sender key asks the sender's device for it, pairwise; the answer
    restores the message. Browser and Python each ask the other, and each answer."""
    alice, bob = unique("alice"), unique("bob")
    a = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    async with Client(server.url) as sdk:
        python = await python_device(sdk, bob, tmp_path)
        await pages.start_conversation(a, bob)
        await pages.send(a, "can you read this, bob?")
        conv = (await sdk.conversations())[0]

        # Bob's device loses the key distribution (acknowledged unread, as if lost).
        pending = await sdk.inbox()
        await sdk.ack_inbox(pending[-1].id)
        message = [m async for m in sdk.all_messages(conv.id)][-1]
        lost = await python.decrypt(message)
        assert not isinstance(lost, PlainMessage)  # ... and asks alice's browser for it

        async def bob_reads(text: str) -> None:
            for _ in range(100):
                for event in await python.sync_inbox():
                    if isinstance(event, PlainMessage) and event.text == text:
                        return
                await asyncio.sleep(0.2)
            raise AssertionError(f"bob never recovered {text!r}")

        await bob_reads("can you read this, bob?")

        # Now alice's browser loses one: it is closed while bob writes, and what bob's device
        # sent it is dropped unread.
        token = await a.evaluate(
            "async () => (await import('/static/js/store.js')).load('session').then((s) => s.token)"
        )
        ctx = a.context
        await a.close()
        await python.send(conv.id, b"and can you read this, alice?")
        async with Client(server.url, token) as alice_device:
            for item in await alice_device.inbox():
                await alice_device.ack_inbox(item.id)
        a = await ctx.new_page()
        a.errors = []
        a.on("pageerror", lambda e: a.errors.append(str(e)))
        await a.goto(server.url)
        await a.wait_for_selector("#status.online", timeout=20000)
        await pages.open_conversation(a, bob)
        await a.wait_for_selector(".msg.failed", timeout=20000)
        await python.sync_inbox()  # bob's device answers the browser's request
        await pages.wait_text(a, "and can you read this, alice?")
    assert a.errors == []
    await ctx.close()


async def test_history_still_reads_after_a_reload(browser, server) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = await pages.first_message_read(
        browser, server.url, alice, bob, "remember this after a reload"
    )
    await b.reload()
    await b.wait_for_selector("#status.online", timeout=20000)  # still logged in
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "remember this after a reload")
    assert await b.locator(".msg.failed").count() == 0
    assert b.errors == []
    await a.context.close()
    await b.context.close()


@pytest.mark.postgresql_too  # what was committed there before the restart, read back
async def test_both_browsers_reconnect_after_a_server_restart(browser, own_server) -> None:
    own_server.start()
    a, b = await pages.first_message_read(
        browser, own_server.url, "alice", "bob", "before the restart"
    )
    await b.reload()  # Bob's page has shown nothing yet; his device keeps what it read
    await b.wait_for_selector("#status.online", timeout=20000)
    # Alice is halfway through a sentence when the server dies.
    await a.fill("#composer", "half a sentence")
    own_server.kill()
    # Bob opens the conversation while the server is down: what his device kept shows.
    await b.wait_for_selector("#status:not(.online)", timeout=10000)
    await b.click("#conversations li:has-text('alice')")
    await pages.wait_text(b, "before the restart")
    own_server.start()  # same port and data
    for page in (a, b):
        await page.wait_for_selector("#status.online", timeout=30000)
    # Reconnecting re-renders the page; the draft must survive it.
    await a.wait_for_timeout(1000)
    assert await a.input_value("#composer") == "half a sentence"
    await a.fill("#composer", "")
    await pages.send(b, "after the restart")
    await pages.wait_text(a, "after the restart")
    await pages.send(a, "still here")
    await pages.wait_text(b, "still here")
    for page in (a, b):
        for text in ("before the restart", "after the restart", "still here"):
            assert await page.locator(f".msg:has-text('{text}')").count() == 1  # no duplicates
    network = [e for e in a.errors + b.errors if "WebSocket" not in e and "Failed to load" not in e]
    assert network == []
    await a.context.close()
    await b.context.close()


async def test_vietnamese_on_a_phone(browser, server) -> None:
    name, friend = unique("lan"), unique("minh")
    async with Client(server.url) as sdk:
        await sdk.register(friend, PASSWORD)
    page = await pages.open_client(browser, server.url, locale="vi-VN", **PHONE)
    assert await page.locator("#login").inner_text() == "Đăng nhập"
    await pages.shot(page, "04-phone-login-vi")
    # The server's refusals reach a Vietnamese reader in Vietnamese, with the rule itself.
    for bad in ("ab", "n" * 70):
        await page.fill("#username", bad)
        await page.fill("#password", PASSWORD)
        await page.click("#register")
        await page.wait_for_selector(".auth .error:has-text('Tên người dùng dài 3-32 ký tự')")
    await page.fill("#username", friend)
    await page.fill("#password", "wrong password here")
    await page.click("#login")
    await page.wait_for_selector(".auth .error:has-text('Sai tên người dùng hoặc mật khẩu')")
    await pages.register(page, name, PASSWORD)
    await pages.start_conversation(page, friend)
    await pages.send(page, "Xin chào! Tin nhắn này được mã hóa đầu cuối.")
    assert await page.locator("#send").inner_text() == "Gửi"
    assert await page.locator("#sidebar").is_hidden()  # one pane at a time on a phone
    # Nothing is wider than the phone (else Chromium zooms the whole page out).
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await pages.shot(page, "05-phone-chat-vi")
    await page.click(".back")
    await page.wait_for_selector("#conversations")
    await page.select_option("#language", "en")
    assert await page.locator("#new-conversation").inner_text() == "New conversation"
    # Chromium logs the three refused requests (400, 400, 401) themselves; nothing else.
    assert [e for e in page.errors if "Failed to load resource" not in e] == []
    await page.context.close()


async def test_safety_numbers_match_between_browsers(browser, server) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = await pages.first_message_read(browser, server.url, alice, bob, "let's verify")
    numbers = []
    for page in (a, b):
        await page.click("#safety-button")
        await page.wait_for_selector("#safety-number")
        numbers.append(await page.locator("#safety-number").inner_text())
    assert numbers[0] == numbers[1]
    assert len(numbers[0].replace(" ", "")) == 60
    await a.click("#mark-verified")
    await a.wait_for_selector("#verified-state:has-text('Verified')")
    await pages.shot(a, "06-safety-number")
    await a.context.close()
    await b.context.close()


async def test_keyboard_only_login_and_send(browser, server) -> None:
    name, friend = unique("kai"), unique("lee")
    async with Client(server.url) as sdk:
        await sdk.register(friend, PASSWORD)
    page = await pages.open_client(browser, server.url)
    await pages.register(page, name, PASSWORD)
    await page.keyboard.press("Tab")
    await page.focus("#new-conversation")
    await page.keyboard.press("Enter")
    await page.keyboard.type(friend)
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => document.activeElement?.id === 'composer'")
    await page.keyboard.type("typed without a mouse")
    await page.keyboard.press("Enter")
    await pages.wait_text(page, "typed without a mouse")
    # Enter on a conversation in the list opens it, and types nothing into its composer.
    await page.focus(f"#conversations li:has-text('{friend}')")
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => document.activeElement?.id === 'composer'")
    await asyncio.sleep(0.2)
    assert await page.input_value("#composer") == ""
    assert page.errors == []
    await page.context.close()


async def test_device_identity_keys_cannot_be_read_by_script(browser, server) -> None:
    name = unique("ivy")
    page = await pages.open_client(browser, server.url)
    await pages.register(page, name, PASSWORD)
    found = await page.evaluate(
        """async (name) => {
        const store = await import('/static/js/store.js');
        const state = await store.load('device:' + name);
        const keys = [state.identity.dh, state.identity.sig];
        return keys.map((k) => [k instanceof CryptoKey, k.extractable, k.type]);
    }""",
        name,
    )
    assert found == [[True, False, "private"], [True, False, "private"]]
    await page.context.close()


async def test_keys_a_server_swapped_stop_the_message_until_the_person_accepts_them(
    browser, server
) -> None:
    """A server that shows other keys for a contact's device (its own, to read what follows)
    is caught before anything is encrypted to them: the message is not sent, the banner says
    whose keys changed, the typed text stays, and the safety-number screen offers to accept."""
    _, bob, a, b = await pages.two_people(browser, server.url)
    await pages.start_conversation(a, bob)
    await pages.send(a, "before the swap")
    (bob_id,) = server.query("SELECT id FROM users WHERE username = $1", bob)[0]
    server.tamper(
        "UPDATE device_keys SET identity_key = $1, signing_key = $2 WHERE user_id = $3",
        os.urandom(32),
        os.urandom(32),
        bob_id,
    )
    secret = "meet at the north gate at nine"
    await a.fill("#composer", secret)
    await a.press("#composer", "Enter")
    banner = await a.wait_for_selector("#banner .banner", timeout=10000)
    assert f"{bob}'s security keys changed. Messages were not sent." in (
        await banner.text_content() or ""
    )
    assert await a.input_value("#composer") == secret
    assert await a.query_selector(f".msg.mine:has-text('{secret}')") is None
    await a.click("#banner-review")
    await a.wait_for_selector("#safety #accept-keys")
    assert await a.text_content("#safety #accept-keys") == "Accept new keys"
    await pages.shot(a, "27-keys-changed")
    await a.click("#safety #accept-keys")
    await a.wait_for_selector("#banner .banner", state="detached")
    assert secret.encode() not in server.held()
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


async def test_a_missed_call_shows_in_the_conversation(browser, calls_server) -> None:
    """A call that rang out shows in the timeline, in the user's language, from the server's
    clear record of it (who, when): never as a message that could not be decrypted."""
    alice = unique("alice")
    a = await pages.open_client(browser, calls_server.url)
    await pages.register(a, alice, PASSWORD)
    bob = await signed_up(Client(calls_server.url), unique("bob"))
    try:
        conv = await bob.direct(alice)
        call = await bob.start_call(conv.id, "video")
        await bob.join_call(call.id)
        assert bob.login_info is not None
        await pages.open_conversation(a, bob.login_info.username)
        await a.wait_for_selector(
            f".system.call:has-text('Missed video call from {bob.login_info.username}')",
            timeout=20000,
        )
        await pages.shot(a, "20-missed-call")
        assert a.errors == []
    finally:
        await bob.aclose()
        await a.context.close()


@contextlib.asynccontextmanager
async def beating(call_id: str, *clients: Client) -> AsyncIterator[asyncio.Task[None]]:
    """SDK devices in a call send heartbeats as the web client does (a silent device is
    dropped), for at most a minute, until the block ends or the task is cancelled."""

    async def beat() -> None:
        for _ in range(120):
            for client in clients:
                await client.call_heartbeat(call_id)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(beat())
    try:
        yield task
    finally:
        task.cancel()


@contextlib.asynccontextmanager
async def group_of_a_browser_and_two_sdk_people(
    browser: Any, server: Any, name: str
) -> AsyncIterator[tuple[Any, Client, Client, Conversation]]:
    """Alice in a browser, and Bob and Carol as SDK devices, all three in Bob's group ``name``
    (a message request for Alice and Carol): (Alice's page, Bob, Carol, the group)."""
    alice = unique("alice")
    a = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    bob = await signed_up(Client(server.url), unique("bob"))
    carol = await signed_up(Client(server.url), unique("carol"))
    try:
        assert carol.login_info is not None
        yield a, bob, carol, await bob.create_group([alice, carol.login_info.username], name)
    finally:
        await bob.aclose()
        await carol.aclose()
        await a.context.close()


async def test_a_strangers_call_rings_only_once_the_request_is_accepted(
    browser, calls_server
) -> None:
    """A group call from people not yet accepted waits as their message request does (Signal's
    rule): no ring, no call to join. Accepting the request shows the call going on."""
    async with group_of_a_browser_and_two_sdk_people(browser, calls_server, "Offsite") as (
        a,
        bob,
        carol,
        conv,
    ):
        call = await bob.start_call(conv.id, "video")
        await bob.join_call(call.id)
        await carol.join_call(call.id)  # joining answers Carol's request
        async with beating(call.id, bob, carol):
            await a.wait_for_selector("#conversations li:has-text('Offsite') .request-tag")
            await pages.open_conversation(a, "Offsite")
            await asyncio.sleep(1.5)  # what would have rung has had its chance
            assert await a.query_selector("#incoming-call") is None
            assert await a.query_selector("#join-call") is None
            await a.click("#request-accept")
            await a.wait_for_selector("#join-call", timeout=10000)
            await a.wait_for_selector("#incoming-call", timeout=10000)
            await pages.shot(a, "26-call-after-request-accepted")
        assert a.errors == []


async def test_a_call_shows_after_a_reload_and_goes_if_it_ended_while_offline(
    browser, calls_server
) -> None:
    """Call changes are not kept for a device that missed them. A page reloaded during a group
    call offers to join it (without ringing as if it had just started); a page that was offline
    when the call ended stops offering it once back."""
    async with group_of_a_browser_and_two_sdk_people(browser, calls_server, "Retro") as (
        a,
        bob,
        carol,
        conv,
    ):
        await pages.accept_request(a, "Retro")
        call = await bob.start_call(conv.id, "audio")
        for client in (bob, carol):
            await client.join_call(call.id)
        async with beating(call.id, bob, carol):  # until the page is cut off
            await a.wait_for_selector("#join-call", timeout=10000)
            # The page's event stream goes through the test, which can cut it (a network drop).
            streams: list[Any] = []
            cut = False

            async def stream(ws: Any) -> None:
                if cut:
                    await ws.close()
                else:
                    ws.connect_to_server()
                    streams.append(ws)

            await a.route_web_socket(re.compile(r".*/v1/events.*"), stream)
            await a.reload()
            await a.wait_for_selector("#status.online", timeout=20000)
            tag = "#conversations li:has-text('Retro') .call-tag"
            await a.wait_for_selector(tag, timeout=10000)
            await pages.open_conversation(a, "Retro")
            await a.wait_for_selector("#join-call", timeout=10000)
            await asyncio.sleep(1.0)
            assert await a.query_selector("#incoming-call") is None
            await pages.shot(a, "28-call-after-reload")
            cut = True
            for ws in streams:
                await ws.close()
            await a.wait_for_selector("#status:not(.online)", timeout=20000)
        for client in (bob, carol):
            await client.leave_call(call.id)
        assert (await bob.get_call(call.id)).state == "ended"
        cut = False
        await a.wait_for_selector("#status.online", timeout=30000)
        await a.wait_for_selector("#join-call", state="detached", timeout=10000)
        await a.wait_for_selector("#call-voice")
        assert await a.query_selector("#conversations .call-tag") is None
        assert a.errors == []


async def test_a_browser_that_cannot_encrypt_calls_gets_no_call(browser, calls_server) -> None:
    """Without RTCRtpScriptTransform a call could only be unencrypted: there is none, and the
    person is told why, in their language."""
    a = await pages.open_client(browser, calls_server.url)
    await a.add_init_script("delete window.RTCRtpScriptTransform")
    await a.reload()
    await pages.register(a, unique("alice"), PASSWORD)
    bob = await signed_up(Client(calls_server.url), unique("bob"))
    try:
        assert bob.login_info is not None
        await pages.start_conversation(a, bob.login_info.username)
        await a.click("#call-video")
        notice = await a.wait_for_selector("#call-error", timeout=10000)
        assert "cannot encrypt calls end to end" in (await notice.text_content() or "")
        assert await a.query_selector("#call-screen") is None
        with pytest.raises(ApiError) as none:
            await bob.current_call((await bob.conversations())[0].id)
        assert none.value.code == "no_call"  # nothing was started, nothing rings
    finally:
        await bob.aclose()
        await a.context.close()


async def test_too_many_wrong_passwords_make_the_login_wait_then_it_works(
    browser, own_server
) -> None:
    own_server.extra_env.update(
        {"SECURECONNECT_LOGIN_FREE_FAILURES": "1", "SECURECONNECT_LOGIN_MAX_WAIT_S": "3"}
    )
    srv = own_server.start()
    async with Client(srv.url) as sdk:
        await sdk.register("forgetful", PASSWORD)
    page = await pages.open_client(browser, srv.url)
    await page.fill("#username", "forgetful")
    await page.fill("#password", "not my password")
    alert = page.locator(".auth .error")
    for _ in range(6):  # 1 free failure, then waits of 1, 2, 3 s: the buttons rest meanwhile
        await page.wait_for_selector("#login:enabled")
        await page.click("#login")
        await page.wait_for_function(
            "() => document.querySelector('.auth .error').textContent.match(/password|Try again/)"
        )
        if "Try again" in await alert.inner_text():
            break
    assert await page.locator("#login").is_disabled()
    assert "Too many failed attempts. Try again in" in await alert.inner_text()
    await pages.shot(page, "27-login-throttled")
    await page.wait_for_selector("#login:enabled", timeout=10000)
    await pages.login(page, "forgetful", PASSWORD)
    assert page.errors == [] or all("429" in e or "401" in e for e in page.errors)
    await page.context.close()


async def test_two_step_verification_on_from_the_browser_then_a_login_asks_for_the_code(
    browser, server
) -> None:
    import pyotp

    name = unique("erin")
    page = await pages.open_client(browser, server.url)
    await pages.register(page, name, PASSWORD)
    await page.click("#security")
    await page.click("#totp-begin")
    await page.wait_for_selector("#totp-qr")
    # The QR code is a real picture of the otpauth URI (Chromium drew it).
    await page.wait_for_function("() => document.getElementById('totp-qr').complete")
    assert await page.evaluate("document.getElementById('totp-qr').naturalWidth") > 100
    secret = await page.locator("#totp-secret").inner_text()
    await pages.shot(page, "28-totp-scan")
    await page.fill("#totp-confirm-code", pyotp.TOTP(secret).now())
    await page.click("#totp-confirm")
    await page.wait_for_selector("#recovery-codes li")
    assert await page.locator("#recovery-codes li").count() == 10
    await pages.shot(page, "29-totp-recovery-codes")
    await page.click("#security-close")

    await page.click("#logout")
    await page.click("#confirm-logout")
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("#totp-code:visible")
    assert "authenticator app" in await page.locator(".auth .error").inner_text()
    await pages.shot(page, "30-login-asks-for-code")
    # The code that turned it on is used up; the next one (a phone 30 s ahead) works.
    await page.fill("#totp-code", pyotp.TOTP(secret).at(time.time() + 30))
    await page.click("#login")
    await page.wait_for_selector("#status.online", timeout=20000)
    await page.click("#security")
    await page.wait_for_selector("#totp-disable")
    assert "10 recovery codes left" in await page.locator("#totp-state").inner_text()
    assert page.errors == [] or all("401" in e for e in page.errors)
    await page.context.close()


async def test_changing_the_password_in_the_browser_logs_out_the_other_session(
    browser, server
) -> None:
    name, new = unique("jon"), "another long passphrase"
    async with Client(server.url) as elsewhere:
        page = await pages.open_client(browser, server.url)
        await pages.register(page, name, PASSWORD)
        await elsewhere.login(name, PASSWORD, device_name="phone")
        await page.click("#security")
        await page.fill("#password-current", PASSWORD)
        await page.fill("#password-new", new)
        await page.fill("#password-again", new + "typo")
        await page.click("#password-change")
        result = page.locator("#password-result")
        await result.filter(has_text="The two new passwords differ.").wait_for()
        await page.fill("#password-again", new)
        await page.click("#password-change")
        done = "Password changed. 1 other session(s) were logged out."
        await result.filter(has_text=done).wait_for()
        await pages.shot(page, "31-password-changed")
        with pytest.raises(ApiError) as revoked:
            await elsewhere.me()
        assert revoked.value.code == "token_revoked"
        await elsewhere.login(name, new)
    assert page.errors == []
    await page.context.close()


async def test_after_the_breach_procedure_the_browser_guides_to_a_new_password(
    browser, own_server
) -> None:
    own_server.extra_env["SECURECONNECT_ADMINS"] = '["oncall"]'
    srv = own_server.start()
    page = await pages.open_client(browser, srv.url)
    await pages.register(page, "mira", PASSWORD)
    async with Client(srv.url) as oncall:
        await signed_up(oncall, "oncall")
        report = await oncall.compromise("a laptop with saved passwords was stolen", ["mira"])
        assert (report.users, report.sessions_revoked) == (1, 1)
    # Her open tab is logged out at once; logging in again asks for a new password first.
    await page.wait_for_selector("#login", timeout=20000)
    await page.fill("#username", "mira")
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("#must-change")
    assert "logged out every device" in await page.locator("#must-change").inner_text()
    await pages.shot(page, "32-must-change-password")
    new = "a fresh passphrase after the theft"
    await page.fill("#password-current", PASSWORD)
    await page.fill("#password-new", new)
    await page.fill("#password-again", new)
    await page.click("#password-change")
    await page.wait_for_selector("#status.online", timeout=20000)
    async with Client(srv.url) as check:
        await check.login("mira", new)
        assert len([d for d in await check.devices() if d.revoked_at is None]) == 2
    await page.context.close()


async def test_an_email_address_for_security_notices_is_set_from_the_browser(
    browser, own_server
) -> None:
    import re

    from aiosmtpd.controller import Controller

    from tests.server import free_port
    from tests.test_compromise import Mailbox

    box, port = Mailbox(), free_port()
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    own_server.extra_env.update(
        {"SECURECONNECT_NOTIFY_SMTP_HOST": "127.0.0.1", "SECURECONNECT_NOTIFY_SMTP_PORT": str(port)}
    )
    srv = own_server.start()
    try:
        page = await pages.open_client(browser, srv.url)
        await pages.register(page, "nadia", PASSWORD)
        await page.click("#security")
        await page.locator("#email-state").filter(has_text="No address").wait_for()
        await page.fill("#email-address", "nadia@example.org")
        await page.click("#email-send")
        [mail] = await box.wait("nadia@example.org", 1)
        await page.fill("#email-code", re.search(r"your code is (\d{6})", mail).group(1))
        await page.click("#email-verify")
        await page.locator("#email-state").filter(has_text="nadia@example.org").wait_for()
        await page.locator("#email-form").scroll_into_view_if_needed()
        await pages.shot(page, "33-email-for-notices")
        assert page.errors == []
        await page.context.close()
    finally:
        smtp.stop()


async def test_suggested_replies_fill_the_composer_in_the_language_one_writes(
    browser, server
) -> None:
    """Chips for the last message received, computed in the browser: tapping one fills the
    composer (sending stays the person's act); none after one's own message; Vietnamese once
    one writes Vietnamese to that person; leaning towards how one answers that person, but
    nothing cheerful after bad news or a "no" to one's question; off for a conversation from
    Settings; the server gets counts, never the text."""
    before = await asyncio.to_thread(_metrics, server.url)
    alice, bob, a, b = await pages.two_people(browser, server.url)

    async def chip_intents() -> list[str]:
        intents: list[str] = await b.eval_on_selector_all(
            "#suggestions .chip", "els => els.map(e => e.dataset.intent)"
        )
        return intents

    await pages.start_conversation(a, bob)
    await pages.send(a, "Thank you so much for your help yesterday!")
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "Thank you so much for your help yesterday!")
    assert await b.locator("#suggestions .chip").count() == 0  # not on a message request
    await b.click("#request-accept")
    await b.wait_for_selector("#suggestions .chip", timeout=10000)
    chips = await b.locator("#suggestions .chip").all_inner_texts()
    intents = await chip_intents()
    assert 1 <= len(chips) <= 3 and "welcome" in intents, (chips, intents)
    await pages.shot(b, "31-suggested-replies")
    await b.locator("#suggestions .chip").first.click()
    assert await b.input_value("#composer") == chips[0]
    await b.press("#composer", "Enter")
    await b.wait_for_selector(f".msg.mine:has-text({json.dumps(chips[0])})")
    await b.wait_for_selector("#suggestions", state="hidden")  # the last message is bob's
    # Bob writes Vietnamese to alice: her Vietnamese thanks is answered in Vietnamese.
    await pages.send(b, "Chị ơi mai em gửi báo cáo nhé")
    await pages.wait_text(a, "Chị ơi mai em gửi báo cáo nhé")
    await pages.send(a, "Cảm ơn em nhiều nhé")
    await pages.wait_text(b, "Cảm ơn em nhiều nhé")
    await b.wait_for_selector("#suggestions .chip", timeout=10000)
    vietnamese = await b.locator("#suggestions .chip").all_inner_texts()
    assert any(c in ("Không có gì!", "Có gì đâu!", "Không có gì đâu nhé!") for c in vietnamese)
    # Bob answers alice with a laugh, often: her news gets one among his chips, after the
    # "Cool!" the message itself calls for.
    for text in ("lol", "haha yes", "lol that's funny"):
        await pages.send(b, text)
    await pages.wait_text(a, "lol that's funny")
    await pages.send(a, "my dog learned a new trick")
    await pages.wait_text(b, "my dog learned a new trick")
    await b.wait_for_selector("#suggestions .chip", timeout=10000)
    leaning = await chip_intents()
    assert leaning[0] == "cool" and "laugh" in leaning, leaning
    await pages.shot(b, "31-suggested-replies-leaning")
    # Bad news: sympathy first, and nothing cheerful, however often bob laughs with alice and
    # though her cheerful news is in the same run of messages.
    await pages.send(a, "my cat is sick")
    await pages.wait_text(b, "my cat is sick")
    await b.wait_for_function(
        """() => {
            const chip = document.querySelector('#suggestions .chip');
            return chip !== null && chip.dataset.intent !== 'cool';
        }"""
    )
    sympathy = await chip_intents()
    cheerful = {i.id for i in Pack.packaged().intents if i.mood == "+"}
    assert sympathy[0] in ("get_well", "sorry_to_hear"), sympathy
    assert not cheerful & set(sympathy), sympathy
    await b.wait_for_selector('#conversations .preview:has-text("my cat is sick")')
    await pages.shot(b, "31-suggested-replies-bad-news")
    # A "nope" to bob's own question: nothing cheerful under it either, laugh as he may (pack
    # 1.9.0; 1.8.0 offered "I see / Cool! / Glad to hear that!").
    await pages.send(b, "did it work?")
    await b.wait_for_selector("#suggestions", state="hidden")
    await pages.wait_text(a, "did it work?")
    await pages.send(a, "nope")
    await pages.wait_text(b, "nope")
    await b.wait_for_selector("#suggestions .chip", timeout=10000)
    said_no = await chip_intents()
    assert said_no and not cheerful & set(said_no), said_no
    await b.wait_for_selector('#conversations .preview:has-text("nope")')
    await pages.shot(b, "31-suggested-replies-said-no")
    # Off for this conversation, from Settings, which says where suggestions come from.
    await b.click("#settings")
    assert "computed on this device" in await b.locator("#suggest-where").inner_text()
    await b.locator("#suggest-where").scroll_into_view_if_needed()  # below the profile
    await pages.shot(b, "32-suggestion-settings")
    await b.uncheck("#suggest-here")
    await b.click("#settings-close")
    await b.wait_for_selector("#suggestions", state="hidden")
    await b.click("#settings")
    await b.check("#suggest-here")
    await b.click("#settings-close")
    await b.wait_for_selector("#suggestions .chip")
    # Counts reach the server's metrics; no text does.
    assert await b.evaluate("() => window.secureconnect.flushSuggestStats()") is True
    after = await asyncio.to_thread(_metrics, server.url)
    assert metric(after, 'secureconnect_suggest_taken_total{position="1"}') >= 1 + metric(
        before, 'secureconnect_suggest_taken_total{position="1"}'
    )
    assert metric(after, "secureconnect_suggest_shown_total") >= 2 + metric(
        before, "secureconnect_suggest_shown_total"
    )
    reports = [e for e in server.logs() if e.get("route") == "/v1/suggest/report"]
    assert reports and all("Cảm ơn" not in json.dumps(e) for e in server.logs())
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


def _metrics(url: str) -> str:
    import httpx

    return httpx.get(url + "/metrics").text


SPY = """
window.__notes = [];
window.__hidden = false;
Object.defineProperty(Document.prototype, "visibilityState", {
  configurable: true, get() { return window.__hidden ? "hidden" : "visible"; } });
const RealNotification = window.Notification;
window.Notification = class {
  constructor(title, options) { window.__notes.push({ title, body: options && options.body }); }
  close() {}
  static get permission() { return RealNotification.permission; }
  static requestPermission() { return RealNotification.requestPermission(); }
};
"""


async def test_the_list_shows_what_is_new_and_links_mute_and_notifications_behave(
    browser, server, tmp_path
) -> None:
    """Previews and times, newest activity first, the unread count in the tab's title; links
    that open safely; date separators and one sender's run grouped; a multi-line composer;
    muting; desktop notifications in the background with the text hidden on request."""
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a = await pages.open_client(browser, server.url, permissions=["notifications"])
    await a.context.add_init_script(SPY)
    await a.reload()
    await pages.register(a, alice, PASSWORD)
    async with Client(server.url) as bob_sdk, Client(server.url) as carol_sdk:
        b = await python_device(bob_sdk, bob, tmp_path)
        c = await python_device(carol_sdk, carol, tmp_path)
        await pages.start_conversation(a, bob)
        await pages.send(a, "hi bob")
        await pages.start_conversation(a, carol)
        await pages.send(a, "hi carol")
        with_bob = (await bob_sdk.conversations())[0].id
        with_carol = (await carol_sdk.conversations())[0].id
        await b.send(with_bob, b"see https://example.org/a?b=1, and javascript:alert(1)")
        await a.wait_for_function("() => document.title === '(1) SecureConnect'")
        names = await a.locator("#conversations li .name").all_inner_texts()
        assert names[:2] == [bob, carol]  # newest activity first
        first = a.locator("#conversations li").first
        assert "see https://example.org/a?b=1" in await first.locator(".preview").inner_text()
        assert await first.locator(".when").inner_text()
        await pages.open_conversation(a, bob)
        await pages.wait_text(a, "javascript:alert(1)")
        link = a.locator(".msg a")
        assert await link.count() == 1
        assert await link.get_attribute("href") == "https://example.org/a?b=1"
        assert await link.get_attribute("rel") == "noopener noreferrer"
        assert await link.get_attribute("target") == "_blank"
        assert await a.locator(".day").first.inner_text() == "Today"
        await b.send(with_bob, b"and another thing")
        await pages.wait_text(a, "and another thing")
        last = a.locator(".msg").last
        assert "cont" in (await last.get_attribute("class") or "")
        assert await last.locator(".who").count() == 0  # grouped under bob's name above
        # Several lines: the box grows, and the message keeps them.
        await a.fill("#composer", "")
        await a.type("#composer", "line one")
        await a.keyboard.press("Shift+Enter")
        await a.type("#composer", "line two")
        assert (await a.eval_on_selector("#composer", "e => e.offsetHeight")) > 48
        await a.press("#composer", "Enter")
        await a.wait_for_selector(".msg.mine:has-text('line two')")
        assert "line one\nline two" in await a.locator(".msg.mine").last.inner_text()
        # Mute bob: his messages no longer count in the title, or notify.
        await a.click("#mute-button")
        await a.wait_for_selector("#mute-button:has-text('Unmute')")
        await pages.open_conversation(a, carol)
        await b.send(with_bob, b"muted news")
        await a.wait_for_selector("#conversations li.muted .preview:has-text('muted news')")
        await a.wait_for_selector("#conversations li.muted .badge")
        assert await a.title() == "SecureConnect"
        await pages.shot(a, "34-conversation-list")
        # Notifications, on in Settings, while the tab is in the background.

        async def setting(box: str, on: bool) -> None:
            await a.evaluate("() => { window.__hidden = false; }")
            await a.click("#settings")
            await (a.check if on else a.uncheck)(box)
            await a.click("#settings-close")
            await a.evaluate("() => { window.__hidden = true; }")

        async def heard(n: int) -> Any:
            await a.wait_for_function(f"() => window.__notes.length === {n}")
            return await a.evaluate(f"() => window.__notes[{n - 1}]")

        await setting("#notify-on", True)
        await c.send(with_carol, b"dinner at 7?")
        assert await heard(1) == {"title": carol, "body": "dinner at 7?"}
        await b.send(with_bob, b"still muted")  # read by the device, and not announced
        await a.wait_for_selector("#conversations li.muted .preview:has-text('still muted')")
        await setting("#notify-text", False)
        await c.send(with_carol, b"bring wine")
        assert await heard(2) == {"title": carol, "body": "New message"}
        assert a.errors == []
    await a.context.close()


async def test_dark_mode_follows_the_system_and_the_switch(browser, server) -> None:
    friend = unique("owl")
    async with Client(server.url) as sdk:
        await sdk.register(friend, PASSWORD)
    page = await pages.open_client(browser, server.url, color_scheme="dark")
    await pages.register(page, unique("night"), PASSWORD)
    background = "() => getComputedStyle(document.body).backgroundColor"
    assert await page.evaluate(background) == "rgb(15, 20, 29)"
    await pages.start_conversation(page, friend)
    await pages.send(page, "Late shift notes: https://example.org/notes")
    await pages.shot(page, "33-dark-mode")
    await page.click("#settings")
    await page.select_option("#theme", "light")
    assert await page.evaluate(background) == "rgb(244, 246, 251)"
    await page.reload()  # the choice is kept on this device
    await page.wait_for_selector("#status.online")
    assert await page.evaluate(background) == "rgb(244, 246, 251)"
    assert page.errors == []
    await page.context.close()


async def test_reply_react_edit_and_delete_for_everyone(browser, server) -> None:
    alice, bob, a, b = await pages.two_people(browser, server.url)
    await pages.start_conversation(a, bob)
    await pages.send(a, "Lunch at noon?")
    await pages.send(a, "At the usal place")
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "At the usal place")
    await b.click("#request-accept")

    def bubble(page: Any, text: str) -> Any:  # by its own text, not a quote of it
        return page.locator(".msg", has=page.locator(".body", has_text=text))

    async def act(page: Any, text: str, action: str) -> None:
        """Points at the message and clicks one of its actions, as a person would; again if a
        message arriving meanwhile redrew the timeline under the pointer."""
        for _ in range(5):
            await bubble(page, text).hover()
            try:
                await bubble(page, text).locator(action).click(timeout=2000)
                return
            except Exception:  # redrawn: point again
                continue
        raise AssertionError(f"could not {action} on {text!r}")

    # Bob replies to the first message: a quote above his answer, on both sides.
    assert await bubble(b, "Lunch at noon?").locator(".act-edit").count() == 0  # not his
    await act(b, "Lunch at noon?", ".act-reply")
    assert "Replying to " + alice in await b.locator("#compose-context").inner_text()
    await pages.send(b, "Yes!")
    for page in (a, b):
        await page.wait_for_selector(".msg:has-text('Yes!') .quote:has-text('Lunch at noon?')")
    await b.wait_for_selector("#compose-context", state="hidden")
    # Alice reacts to it; bob sees her reaction.
    await act(a, "Yes!", ".act-react[data-emoji='👍']")
    for page in (a, b):
        await page.wait_for_selector(".msg:has-text('Yes!') .reactions button:has-text('👍 1')")
    # Alice edits her typo: the same message, its new text, marked edited, for both.
    await act(a, "At the usal place", ".act-edit")
    assert await a.input_value("#composer") == "At the usal place"
    await a.fill("#composer", "At the usual place")
    await a.press("#composer", "Enter")
    for page in (a, b):
        await page.wait_for_selector(".msg:has-text('At the usual place') .meta:has-text('edited')")
        assert await page.locator(".msg:has-text('usal place')").count() == 0
    # And deletes the first one for everyone, after saying yes.
    await act(a, "Lunch at noon?", ".act-delete")
    await a.click("#delete-confirm")
    for page in (a, b):
        await page.wait_for_selector(".msg.deleted:has-text('This message was deleted.')")
        await page.wait_for_selector(
            ".msg:has-text('Yes!') .quote:has-text('This message was deleted.')"
        )
        assert await page.locator(".msg:has-text('Lunch at noon?')").count() == 0
    await b.wait_for_selector("#conversations .preview:text-is('You: Yes!')")
    await pages.shot(b, "35-reply-react-edit-delete")
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


async def test_a_device_is_signed_out_from_another_in_the_browser(browser, server) -> None:
    alice = unique("alice")
    laptop = await pages.open_client(browser, server.url)
    await pages.register(laptop, alice, PASSWORD)
    phone = await pages.open_client(browser, server.url, **PHONE)
    await pages.login(phone, alice, PASSWORD)
    await laptop.click("#security")
    await laptop.wait_for_function(
        "() => document.querySelectorAll('#device-list li').length === 2"
    )
    rows = await laptop.locator("#device-list li").all_inner_texts()
    assert sum("this device" in r for r in rows) == 1
    assert sum("last seen Today" in r for r in rows) == 1  # the phone
    laptop.once("dialog", lambda d: d.accept())  # "Sign out web browser? ..."
    await laptop.locator("#device-list li", has_text="last seen").locator(".sign-out").click()
    await laptop.wait_for_function(
        "() => document.querySelectorAll('#device-list li').length === 1"
    )
    await phone.wait_for_selector("#login", timeout=20000)  # the phone is back at the login
    assert laptop.errors == []
    assert [e for e in phone.errors if "status of 401" not in e and "WebSocket" not in e] == []
    await laptop.context.close()
    await phone.context.close()


async def test_search_finds_what_this_browser_decrypted_without_asking_the_server(
    browser, server, tmp_path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = await pages.open_client(browser, server.url)
    await pages.register(a, alice, PASSWORD)
    async with Client(server.url) as bob_sdk:
        b = await python_device(bob_sdk, bob, tmp_path)
        await pages.start_conversation(a, bob)
        await pages.send(a, "hello")
        conv = (await bob_sdk.conversations())[0].id
        budget = await b.send(conv, b"The quarterly budget is due Friday")
        await b.send(conv, "Lương tháng này về rồi".encode())
        gone = await b.send(conv, b"a budget secret, deleted soon")
        await pages.wait_text(a, "Lương tháng này về rồi")
        await pages.open_conversation(a, bob)
        asked: list[str] = []
        a.on("request", lambda r: asked.append(r.url))
        await b.delete_for_everyone(conv, gone.seq)
        await a.wait_for_selector(".msg.deleted")
        asked.clear()
        await a.fill("#search", "budg")
        await a.wait_for_selector("#search-results li")
        found = await a.locator("#search-results li .preview").all_inner_texts()
        assert found == [f"{bob}: The quarterly budget is due Friday"]  # not the deleted one
        await a.fill("#search", "luong thang")  # without diacritics
        await a.wait_for_selector("#search-results li:has-text('Lương tháng này về rồi')")
        assert asked == []  # nothing went to the server while searching
        # An edit changes what is found.
        await b.edit(conv, budget.seq, "The quarterly report is due Friday")
        await pages.wait_text(a, "The quarterly report is due Friday")
        await a.fill("#search", "budget")
        await a.wait_for_selector("#no-results")
        await a.fill("#search", "quarterly report")
        await a.click("#search-results li")
        await a.wait_for_selector(f".msg.found[data-seq='{budget.seq}']")
        await pages.shot(a, "36-search")
        assert a.errors == []
    await a.context.close()


async def test_the_api_viewer_works_offline_under_the_strict_policy(browser, server) -> None:
    page = await pages.open_client(browser, server.url + "/docs")
    outside: list[str] = []
    page.on(
        "request", lambda r: outside.append(r.url) if not r.url.startswith(server.url) else None
    )
    await page.reload()
    await page.wait_for_selector(".opblock-tag:has-text('attachments')", timeout=20000)
    await page.wait_for_selector(".opblock-summary-path:has-text('/v1/blobs/{blob_id}/content')")
    await pages.shot(page, "43-api-docs")
    assert outside == []  # nothing from a CDN
    assert [e for e in page.errors if "Content Security Policy" in e] == []
    await page.context.close()


async def test_a_browser_resuming_from_an_old_position_shows_nothing_twice(browser, server) -> None:
    """After a server crash the server resumes a device from the acks it had written, and a
    tab may close before saving its newest position: either way events come again. The
    browser has them (by sequence number) and shows each once, without a decryption error."""
    alice, bob, a, b = await pages.two_people(browser, server.url)
    await pages.start_conversation(a, bob)
    for text in ("one", "two", "three"):
        await pages.send(a, text)
    await pages.open_conversation(b, alice)
    await pages.wait_text(b, "three")
    await b.evaluate(
        "async () => { const s = await import('/static/js/store.js');"
        " const session = await s.load('session');"
        " const id = document.querySelector('#conversations li').dataset.id;"
        " session.cursors = { [id]: 1 }; await s.save('session', session); }"
    )
    await b.reload()
    await b.wait_for_selector("#status.online")
    await pages.open_conversation(b, alice)
    await pages.send(a, "four")
    await pages.wait_text(b, "four")
    for text in ("one", "two", "three", "four"):
        assert await b.locator(f".msg .body:text-is('{text}')").count() == 1
    assert await b.locator(".msg.failed").count() == 0
    assert await b.evaluate("() => window.secureconnect.duplicatesDropped()") >= 3
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()
