"""Attachments in real Chromium, with the CLI on the other side: an image sent from the browser
opens in the CLI with the same SHA-256 and in the other browser's lightbox; a file from the CLI
downloads in the browser byte for byte; a voice note recorded in the browser plays; the server
keeps none of the files' bytes in clear."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.browser import pages
from tests.helpers import run_cli, unique

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # Chromium


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def picture(marker: str) -> bytes:
    """A 1200x800 PNG carrying the marker in a text chunk (metadata a thumbnail must drop)."""
    image = Image.new("RGB", (1200, 800))
    for x in range(0, 1200, 40):  # stripes, so that the thumbnail shows something
        image.paste((30 + x % 200, 90, 200 - x % 150), (x, 0, x + 20, 800))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


@pytest.mark.postgresql_too  # uploads recorded in its database
async def test_files_cross_between_browsers_and_the_cli_end_to_end_encrypted(
    browser, server, tmp_path
) -> None:
    _alice, bob, a, b = await pages.two_people(browser, server.url)
    carol = unique("carol")
    cli_home = tmp_path / "cli"
    run_cli(server.url, cli_home, "register", carol, check=True)
    run_cli(server.url, cli_home, "login", carol, check=True)
    group = f"files-{unique('g')}"[:40]
    await pages.start_conversation(a, f"{bob}, {carol}", name=group)
    await pages.send(a, "the photos from Friday")
    marker = f"zebra-{unique('img')}-umbrella"
    photo = tmp_path / "friday.png"
    photo.write_bytes(picture(marker))
    # Alice attaches it: a progress line while it goes, then her own bubble with the thumbnail.
    await a.evaluate(
        "() => { window.sawProgress = false; new MutationObserver(() => {"
        " if (document.getElementById('upload-progress')) window.sawProgress = true; })"
        ".observe(document.body, { subtree: true, childList: true }); }"
    )
    await a.set_input_files("#file-input", str(photo))
    await a.wait_for_selector(".msg.mine .attachment.image img.thumb")
    assert await a.evaluate("() => window.sawProgress")
    await a.wait_for_selector("#upload", state="hidden")
    # Bob sees it; the thumbnail opens the full image, decrypted, in a lightbox.
    await pages.open_conversation(b, group)
    await b.click("#request-accept")
    await b.click(".attachment.image img.thumb")
    await b.wait_for_selector("#lightbox img")
    await b.wait_for_function("() => document.querySelector('#lightbox img').naturalWidth > 0")
    width = await b.evaluate("() => document.querySelector('#lightbox img').naturalWidth")
    assert width == 1200
    await pages.shot(b, "36-image-lightbox")
    await b.click("#lightbox-close")
    await b.wait_for_selector("#conversations .preview:has-text('Photo')")
    await pages.shot(b, "37-image-in-timeline")
    # Carol's CLI: the same bytes, by their SHA-256.
    run_cli(server.url, cli_home, "chat", "accept", group, check=True)
    history = run_cli(server.url, cli_home, "chat", "history", group, check=True).stdout
    assert "friday.png, image/png" in history, history
    seq = re.search(r"chat save \w+ (\d+)", history)
    assert seq is not None, history
    saved = run_cli(
        server.url,
        cli_home,
        "chat",
        "save",
        group,
        seq.group(1),
        "--out",
        str(tmp_path),
        check=True,
    ).stdout
    assert f"sha256 {hashlib.sha256(photo.read_bytes()).hexdigest()}" in saved
    assert (tmp_path / "friday.png").read_bytes() == photo.read_bytes()
    # Carol sends a file from the CLI; alice downloads it in the browser, byte for byte.
    notes = tmp_path / "minutes.txt"
    notes.write_text(f"minutes of the meeting {marker}\n" * 200)
    sent = run_cli(
        server.url, cli_home, "chat", "send", group, "our minutes", "--file", str(notes), check=True
    )
    assert "sent #" in sent.stdout
    await a.wait_for_selector(".attachment.file .file-name:text-is('minutes.txt')")
    await a.wait_for_selector(".msg:has-text('our minutes')")
    async with a.expect_download() as download_info:
        await a.click(".attachment.file .file-download")
    download = await download_info.value
    assert download.suggested_filename == "minutes.txt"
    assert read(await download.path()) == notes.read_bytes()
    await pages.shot(a, "38-file-card")
    # Nothing of either file is in clear on the server.
    held = server.held()
    assert marker.encode() not in held
    assert photo.read_bytes()[:256] not in held
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


async def test_a_voice_note_recorded_in_the_browser_plays_for_the_other(
    browser_with_microphone, server
) -> None:
    alice, bob, a, b = await pages.two_people(browser_with_microphone, server.url)
    await pages.start_conversation(a, bob)
    await pages.send(a, "listen to this")
    await a.click("#record")
    await a.wait_for_selector("#record.recording")
    await a.wait_for_timeout(1500)
    await a.click("#record")
    await a.wait_for_selector(".msg.mine .attachment.audio")
    await pages.open_conversation(b, alice)
    await b.click("#request-accept")
    await b.click(".attachment.audio .play")
    await b.wait_for_selector(".attachment.audio audio")
    duration = await b.evaluate(
        "async () => { const au = document.querySelector('.attachment.audio audio');"
        " if (au.readyState < 1)"
        " await new Promise((r) => au.addEventListener('loadedmetadata', r));"
        " return au.src.startsWith('blob:') ? au.duration : -1; }"
    )
    assert duration != -1  # decrypted here into a blob: URL
    # A message arriving while it plays redraws the timeline; the player stays, not a new
    # "play" button.
    await b.evaluate("window.playing = document.querySelector('.attachment.audio audio')")
    await pages.send(a, "did you hear it?")
    await b.wait_for_selector(".msg:has-text('did you hear it?')")
    assert await b.evaluate(
        "document.querySelector('.attachment.audio audio') === window.playing"
    ), "the voice note's player was replaced by a redraw"
    await pages.shot(b, "39-voice-note")
    assert a.errors == [] and b.errors == []
    await a.context.close()
    await b.context.close()


async def test_a_file_over_the_limit_is_refused_in_the_browser_before_uploading(
    browser, own_server, tmp_path
) -> None:
    own_server.extra_env["SECURECONNECT_MAX_ATTACHMENT_BYTES"] = str(64 * 1024)
    own_server.start()
    _alice, bob, a, b = await pages.two_people(browser, own_server.url)
    await pages.start_conversation(a, bob)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (100 * 1024))
    await a.set_input_files("#file-input", str(big))
    await a.wait_for_selector("#upload:has-text('big.bin is 100.0 KB: the limit is 64.0 KB.')")
    assert (
        list((own_server.data_dir / "blobs").rglob("*")) == []
        or not (own_server.data_dir / "blobs").exists()
    )
    await a.context.close()
    await b.context.close()
