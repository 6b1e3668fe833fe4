"""Driving the web client as a person would: through its visible controls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import PASSWORD

ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "screenshots"


async def open_client(browser: Any, url: str, **context: Any) -> Any:
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    page.errors = []
    # An uncaught error with where it was thrown: a rare one in CI must name its source.
    page.on("pageerror", lambda e: page.errors.append(f"{e} | {e.stack or ''}".strip(" |")))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    await page.goto(url)
    return page


async def register(page: Any, username: str, password: str) -> None:
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#register")
    await page.wait_for_selector("#status.online", timeout=20000)


async def login(page: Any, username: str, password: str) -> None:
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login")
    await page.wait_for_selector("#status.online", timeout=20000)


async def two_people(browser: Any, url: str) -> tuple[str, str, Any, Any]:
    """alice and bob, each registered in a browser of their own: (alice, bob, a, b)."""
    from tests.helpers import unique

    alice, bob = unique("alice"), unique("bob")
    a = await open_client(browser, url)
    b = await open_client(browser, url)
    await register(a, alice, PASSWORD)
    await register(b, bob, PASSWORD)
    return alice, bob, a, b


async def start_conversation(page: Any, people: str, name: str = "") -> None:
    await page.click("#new-conversation")
    await page.fill("#new-people", people)
    if name:
        await page.fill("#new-name", name)
    await page.click("#new-start")
    # The new conversation's own pane: another one's composer may still be on the page.
    expected = name or (people if "," not in people else "")
    await page.wait_for_function(
        "t => { const e = document.getElementById('chat-title');"
        " return e && (!t || e.textContent === t) && document.getElementById('composer'); }",
        arg=expected,
    )


async def open_conversation(page: Any, label: str) -> None:
    await page.click(f"#conversations li:has-text({json.dumps(label, ensure_ascii=False)})")
    await page.wait_for_selector("#composer")


async def accept_request(page: Any, label: str) -> None:
    """Opens the message request named ``label`` (once it arrives) and accepts it: a stranger's
    call rings only after that."""
    await page.wait_for_selector(
        f"#conversations li:has-text({json.dumps(label, ensure_ascii=False)}) .request-tag",
        timeout=20000,
    )
    await open_conversation(page, label)
    await page.click("#request-accept")
    await page.wait_for_selector("#request", state="detached")


async def send(page: Any, text: str) -> None:
    await page.fill("#composer", text)
    await page.press("#composer", "Enter")
    try:
        await page.wait_for_selector(f".msg.mine:has-text({json.dumps(text, ensure_ascii=False)})")
    except Exception as error:  # say what the person would have seen, and the console
        shown = await page.locator("#send-error").text_content()
        raise AssertionError(f"not sent: {shown!r}; console: {page.errors}") from error


async def wait_text(page: Any, text: str, timeout: float = 20000) -> None:
    await page.wait_for_selector(
        f".msg:has-text({json.dumps(text, ensure_ascii=False)})", timeout=timeout
    )


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def first_message_read(browser: Any, url: str, alice: str, bob: str, text: str) -> Any:
    """Two people in their own browsers: alice starts a 1:1 with bob and writes ``text``; bob
    opens it and reads it. Returns (alice's page, bob's page)."""
    a = await open_client(browser, url)
    b = await open_client(browser, url)
    await register(a, alice, PASSWORD)
    await register(b, bob, PASSWORD)
    await start_conversation(a, bob)
    await send(a, text)
    await open_conversation(b, alice)
    await wait_text(b, text)
    return a, b
