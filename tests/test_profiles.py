"""Profiles through a real server: display names and pictures that people who share a
conversation see (and nobody else), re-encoded without their metadata; group names and pictures
that only admins change; every change told in the timeline."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from secureconnect.client import ApiError
from tests.helpers import listening


def jpeg_with_secrets(size: tuple[int, int] = (900, 600)) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"  # Make
    exif[0x9286] = "taken at home"  # UserComment
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "JPEG", exif=exif)
    return out.getvalue()


async def told(rx, conv_id: str, action: str) -> dict:
    """The latest timeline event of this action that reached the listening device."""

    def said(listener) -> list[dict]:
        changes = [json.loads(m.body) for m in listener.messages(conv_id, kind="membership")]
        return [c for c in changes if c["action"] == action]

    await rx.wait_for(lambda listener: said(listener))
    return said(rx)[-1]


async def refused(call) -> tuple[int, str]:
    with pytest.raises(ApiError) as error:
        await call
    return error.value.status, error.value.code


async def test_a_display_name_reaches_those_who_share_a_conversation_and_nobody_else(
    user,
) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    a, b, c = (x.login_info.username for x in (alice, bob, carol))
    chat = await alice.direct(b)
    await bob.accept(chat.id)
    async with listening(bob) as bob_rx:
        mine = await alice.set_display_name("  Alice \u202eLiddell\x1b[31m  ")
        assert mine.display_name == "Alice Liddell[31m"  # no direction or escape characters
        change = await told(bob_rx, chat.id, "profile")
    assert change == {"action": "profile", "actor": a, "display_name": "Alice Liddell[31m"}
    [seen] = await bob.profiles([a, c, "nobody-at-all"])
    assert (seen.username, seen.display_name, seen.avatar) == (a, "Alice Liddell[31m", None)
    assert await carol.profiles([a, b]) == []  # strangers learn nothing
    assert (await carol.profiles([c]))[0].display_name is None
    # Setting the same name again says nothing; removing it is told.
    before = (await bob.conversation(chat.id)).last_seq
    await alice.set_display_name("Alice Liddell[31m")
    assert (await bob.conversation(chat.id)).last_seq == before
    assert (await alice.set_display_name(None)).display_name is None
    assert (await bob.conversation(chat.id)).last_seq == before + 1


async def test_a_picture_is_resized_stripped_and_shown_only_to_contacts(user, server) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    a = alice.login_info.username
    await alice.direct(bob.login_info.username)
    original = jpeg_with_secrets()
    profile = await alice.set_avatar(original)
    assert profile.avatar is not None
    for size in (64, 256):
        image = await bob.avatar(a, size)
        assert b"SecretCameraMaker" not in image and b"taken at home" not in image
        with Image.open(io.BytesIO(image)) as shown:
            assert (shown.format, shown.size) == ("JPEG", (size, size))
            assert not shown.getexif()
    assert await refused(carol.avatar(a)) == (404, "user_not_found")
    assert await refused(bob.avatar(a, 100)) == (400, "bad_size")
    # The tag is the ETag: a client that has it gets 304, and a new picture a new tag.
    headers = {"Authorization": f"Bearer {bob.token}", "If-None-Match": f'"{profile.avatar}"'}
    again = httpx.get(f"{server.url}/v1/users/{a}/avatar", headers=headers)
    assert again.status_code == 304
    png = io.BytesIO()
    Image.new("RGBA", (300, 500), (200, 0, 0, 128)).save(png, "PNG")
    assert (await alice.set_avatar(png.getvalue())).avatar not in (None, profile.avatar)
    # What is not a picture, or one too big to decode safely, is refused; nothing changes.
    now = (await alice.my_profile()).avatar
    assert await refused(alice.set_avatar(b"<svg onload=alert(1)>")) == (400, "bad_image")
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, "PNG")  # 64 megapixels in a few kilobytes
    assert await refused(alice.set_avatar(bomb.getvalue())) == (400, "bad_image")
    assert await refused(alice.set_avatar(b"\xff" * (6 * 1024 * 1024))) == (413, "too_large")
    assert (await alice.my_profile()).avatar == now
    assert (await alice.remove_avatar()).avatar is None
    assert await refused(bob.avatar(a)) == (404, "avatar_not_found")


async def test_only_a_groups_admins_rename_it_or_change_its_picture(user) -> None:
    alice, bob, carol = await user("alice"), await user("bob"), await user("carol")
    b = bob.login_info.username
    group = await alice.create_group([b], name="book club")
    await bob.accept(group.id)
    async with listening(bob) as bob_rx:
        renamed = await alice.rename_group(group.id, "  Book   club 2027 ")
        assert renamed.name == "Book club 2027"
        change = await told(bob_rx, group.id, "rename")
    assert change == {
        "action": "rename",
        "actor": alice.login_info.username,
        "name": "Book club 2027",
    }
    assert (await bob.conversation(group.id)).name == "Book club 2027"
    assert await refused(bob.rename_group(group.id, "mine now")) == (403, "not_admin")
    assert await refused(carol.rename_group(group.id, "x")) == (404, "conversation_not_found")
    assert await refused(alice.rename_group(group.id, "   ")) == (400, "invalid_name")
    direct = await alice.direct(b)
    assert await refused(alice.rename_group(direct.id, "us")) == (400, "direct_conversation")
    # The picture: set by the admin, seen by members, not by others.
    assert await refused(bob.set_group_avatar(group.id, jpeg_with_secrets())) == (
        403,
        "not_admin",
    )
    pictured = await alice.set_group_avatar(group.id, jpeg_with_secrets((400, 400)))
    assert pictured.avatar is not None
    assert (await bob.conversation(group.id)).avatar == pictured.avatar
    image = await bob.group_avatar(group.id, 64)
    assert b"SecretCameraMaker" not in image
    assert await refused(carol.group_avatar(group.id)) == (404, "conversation_not_found")
    assert (await alice.remove_group_avatar(group.id)).avatar is None
    assert await refused(bob.group_avatar(group.id)) == (404, "avatar_not_found")
