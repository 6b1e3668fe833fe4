"""Profiles in real Chromium: a display name and a picture set in Settings reach the other
person everywhere a name is shown; an admin renames a group and gives it a picture; two people
with the same first letter do not look alike."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from secureconnect.client import Client
from tests.browser import pages
from tests.helpers import PASSWORD, unique

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # Chromium


def picture(path, colour) -> str:
    Image.new("RGB", (640, 480), colour).save(path, "JPEG")
    return str(path)


async def test_names_and_pictures_reach_the_other_person(browser, server, tmp_path) -> None:
    alice, bob, a, b = await pages.two_people(browser, server.url)
    await pages.start_conversation(a, bob)
    await pages.send(a, "hello from the garden")
    await pages.open_conversation(b, alice)
    await b.click("#request-accept")
    # Alice names herself and picks a picture, in Settings.
    await a.click("#settings")
    # An empty field says what it is for (its full label is read out by a screen reader).
    assert await a.get_attribute("#display-name", "placeholder") == "Display name"
    await a.fill("#display-name", "Alice Liddell")
    await a.click("#save-profile")
    await a.wait_for_selector("#profile-note:text-is('Saved.')")
    await a.set_input_files("#my-picture", picture(tmp_path / "me.jpg", (220, 40, 90)))
    await a.wait_for_selector("#my-avatar .avatar img")
    await pages.shot(a, "40-profile-settings")
    await a.click("#settings-close")
    # Bob sees her name in the list, the chat's title and the timeline, and her picture.
    await b.wait_for_selector("#conversations .name:text-is('Alice Liddell')")
    await b.wait_for_selector("#chat-title:text-is('Alice Liddell')")
    await b.wait_for_selector(f".system:text-is('{alice} changed their name to Alice Liddell')")
    await b.wait_for_selector("#conversations li .avatar img")
    await b.wait_for_selector(".msg .who:text-is('Alice Liddell')", state="attached")
    pixel = await b.evaluate(
        "async () => { const img = document.querySelector('#conversations li .avatar img');"
        " await img.decode(); const c = new OffscreenCanvas(1, 1); const x = c.getContext('2d');"
        " x.drawImage(img, 0, 0, 1, 1); return Array.from(x.getImageData(0, 0, 1, 1).data); }"
    )
    assert pixel[0] > 180 and pixel[1] < 90  # her red picture, decoded in Bob's browser
    await pages.shot(b, "41-profile-seen")
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


async def test_an_admin_renames_the_group_and_gives_it_a_picture(browser, server, tmp_path) -> None:
    anna, andy = unique("anna"), unique("andy")
    page = await pages.open_client(browser, server.url)
    await pages.register(page, anna, PASSWORD)
    async with Client(server.url) as sdk:
        await sdk.register(andy, PASSWORD)
        await sdk.login(andy, PASSWORD)
        await sdk.set_display_name("Andy Jones")
        await pages.start_conversation(page, andy, name="book club")
        await page.click("#members-button")
        await page.fill("#group-name", "Book club 2027")
        await page.click("#rename-group")
        await page.wait_for_selector("#conversations .name:text-is('Book club 2027')")
        await page.set_input_files("#group-picture", picture(tmp_path / "g.jpg", (30, 160, 60)))
        await page.wait_for_selector("#conversations li .avatar img")
        # Two people whose names start alike: different letters, different colours.
        faces = await page.eval_on_selector_all(
            "#member-list li .avatar",
            "els => els.map((e) => [e.textContent, getComputedStyle(e).backgroundColor])",
        )
        assert len(faces) == 2 and faces[0] != faces[1]
        assert [text for text, _ in faces if text == "AJ"] == ["AJ"]
        await pages.shot(page, "42-group-members-and-picture")
        await page.click("#members-dialog button:text-is('Close')")
        await page.wait_for_selector(".system:has-text('renamed the group to Book club 2027')")
        await page.wait_for_selector('.system:has-text("changed the group\'s picture")')
        convs = await sdk.conversations()
        assert [(c.name, c.avatar is not None) for c in convs] == [("Book club 2027", True)]
        image = await sdk.group_avatar(convs[0].id, 64)
        with Image.open(io.BytesIO(image)) as shown:
            assert shown.size == (64, 64)
    assert page.errors == []
    await page.context.close()
