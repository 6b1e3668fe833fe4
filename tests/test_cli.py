"""The ``secureconnect`` command as a person types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import run_cli, unique

pytestmark = pytest.mark.slow  # a CLI process per command


def cli(server, home, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(server.url, home, *args, check=ok, timeout=60)


def test_three_people_chat_from_the_terminal(server, tmp_path) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    for name in (alice, bob, carol):
        cli(server, tmp_path, "register", name, "--profile", name)
        assert "logged in" in cli(server, tmp_path, "login", name, "--profile", name).stdout
    assert (tmp_path / f"{alice}.json").stat().st_mode & 0o777 == 0o600
    created = cli(server, tmp_path, "chat", "new", bob, carol, "--name", "trip", "--profile", alice)
    assert "group" in created.stdout
    cli(server, tmp_path, "chat", "send", "trip", "who brings the tent?", "--profile", alice)
    cli(server, tmp_path, "chat", "send", f"@{alice}", "just us two", "--profile", bob)
    bob_sees = cli(server, tmp_path, "--profile", bob, "chat", "sync").stdout  # before, too
    assert "who brings the tent?" in bob_sees
    # Syncing again shows nothing new: each message once.
    assert (
        "who brings the tent?" not in cli(server, tmp_path, "chat", "sync", "--profile", bob).stdout
    )
    alice_sees = cli(server, tmp_path, "chat", "sync", "--profile", alice).stdout
    assert "just us two" in alice_sees and "who brings the tent?" in alice_sees
    listing = cli(server, tmp_path, "chat", "list", "--profile", carol).stdout
    assert "trip" in listing
    history = cli(server, tmp_path, "chat", "history", "trip", "--profile", carol).stdout
    assert "who brings the tent?" in history and f"{alice} started the conversation" in history
    # Everything above was end-to-end encrypted: the server's database never held the words.
    stored = server.stored_data()
    for said in (b"who brings the tent?", b"just us two"):
        assert said not in stored
        assert said.hex().encode() not in stored
    members = cli(server, tmp_path, "chat", "members", "trip", "--profile", bob).stdout.split()
    assert members[:2] == [alice, "(admin)"] and bob in members and carol in members


def test_a_message_request_is_shown_and_declined_with_a_block(server, tmp_path) -> None:
    stranger, me = unique("stranger"), unique("me")
    for name in (stranger, me):
        cli(server, tmp_path, "register", name, "--profile", name)
        cli(server, tmp_path, "login", name, "--profile", name)
    cli(server, tmp_path, "chat", "send", f"@{me}", "hello from nowhere", "--profile", stranger)
    listing = cli(server, tmp_path, "chat", "list", "--profile", me).stdout
    # A row to a line in a pipe, however wide (the CLI once folded this one over four lines).
    [row] = [line for line in listing.splitlines() if stranger in line]
    assert f"{stranger} (request from {stranger}: chat accept or chat decline)" in row
    declined = cli(server, tmp_path, "chat", "decline", f"@{stranger}", "--block", "--profile", me)
    assert f"declined; {stranger} is blocked" in declined.stdout
    assert stranger not in cli(server, tmp_path, "chat", "list", "--profile", me).stdout
    assert cli(server, tmp_path, "chat", "blocked", "--profile", me).stdout.split() == [stranger]
    again = cli(server, tmp_path, "chat", "new", me, "--profile", stranger, ok=False)
    assert again.returncode != 0 and f"no such user: {me}" in again.stderr
    unblocked = cli(server, tmp_path, "chat", "unblock", stranger, "--profile", me)
    assert f"{stranger} may ask you again" in unblocked.stdout
    assert cli(server, tmp_path, "chat", "blocked", "--profile", me).stdout.split() == []


def test_safety_numbers_match_and_can_be_confirmed(server, tmp_path) -> None:
    alice, bob = unique("alice"), unique("bob")
    for name in (alice, bob):
        cli(server, tmp_path, "register", name, "--profile", name)
        cli(server, tmp_path, "login", name, "--profile", name)
    cli(server, tmp_path, "chat", "send", f"@{bob}", "hi", "--profile", alice)

    def number(out: str) -> str:
        return "".join(ch for line in out.splitlines()[1:2] for ch in line if ch.isdigit())

    seen_by_alice = cli(server, tmp_path, "chat", "verify", bob, "--profile", alice).stdout
    seen_by_bob = cli(server, tmp_path, "chat", "verify", alice, "--profile", bob).stdout
    assert len(number(seen_by_alice)) == 60
    assert number(seen_by_alice) == number(seen_by_bob)
    assert "not verified" in seen_by_alice
    confirmed = cli(server, tmp_path, "chat", "verify", bob, "--confirm", "--profile", alice)
    assert f"{bob} is verified" in confirmed.stdout


def test_cli_errors_are_one_clear_line(server, tmp_path) -> None:
    name = unique("dave")
    cli(server, tmp_path, "register", name)
    failed = cli(server, tmp_path, "register", name, ok=False)
    assert failed.returncode == 1
    assert "already taken" in failed.stderr and "Traceback" not in failed.stderr
    not_logged_in = cli(server, tmp_path, "chat", "list", "--profile", "nobody", ok=False)
    assert not_logged_in.returncode == 1 and "log in first" in not_logged_in.stderr


def test_an_error_written_to_a_pipe_is_not_folded(tmp_path) -> None:
    """A script or a cron job's log gets each message on one line, whatever its length: an
    operator greps "does not match the manifest", a script reads the code at the end."""
    folder = tmp_path / ("backups-of-a-long-name-" * 6)
    # No server: restoring reads the folder; run_cli gives the CLI a pipe and no COLUMNS.
    failed = run_cli("http://127.0.0.1:9", tmp_path, "restore", str(folder), timeout=60)
    assert failed.returncode == 1
    [line] = failed.stderr.splitlines()
    assert line.startswith(f"error: {folder} is not a complete backup") and len(line) > 160
    assert line.endswith("(bad_backup)")


def test_config_show_masks_secrets(tmp_path) -> None:
    env = {
        **os.environ,
        "SECURECONNECT_DATABASE_URL": "postgresql+asyncpg://app:hunter2@db:5432/sc",
        "SECURECONNECT_REDIS_URL": "redis://:s3cret@redis:6379/0",
    }
    out = subprocess.run(
        [sys.executable, "-m", "secureconnect", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shown = json.loads(out)
    assert "hunter2" not in out and "s3cret" not in out
    assert shown["database_url"] == "postgresql+asyncpg://app:***@db:5432/sc"
    assert shown["redis_url"] == "redis://:***@redis:6379/0"


def test_list_settings_take_commas_or_json_and_a_bad_one_says_how(tmp_path) -> None:
    def show(admins: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "secureconnect", "config", "show"],
            env={**os.environ, "SECURECONNECT_ADMINS": admins},
            capture_output=True,
            text=True,
        )

    for given in ("alice, bob", '["alice", "bob"]'):
        assert json.loads(show(given).stdout)["admins"] == ["alice", "bob"]
    broken = show('["alice"')  # was a 138-line traceback
    assert broken.returncode == 2 and "Traceback" not in broken.stderr + broken.stdout
    assert 'give a JSON list, e.g. ["alice", "bob"], or names separated by commas' in " ".join(
        (broken.stdout + broken.stderr).split()
    )


def test_other_peoples_text_reaches_the_terminal_as_plain_text(server, tmp_path) -> None:
    """Rich markup, escape sequences and bidirectional overrides from a sender are shown, not
    obeyed: nobody can style a recipient's terminal, plant a hidden link or reorder a line."""
    alice, bob = unique("alice"), unique("bob")
    for name in (alice, bob):
        cli(server, tmp_path, "register", name, "--profile", name)
        cli(server, tmp_path, "login", name, "--profile", name)
    group = "[link=http://evil.test]pay here[/link]"
    cli(server, tmp_path, "chat", "new", bob, "--name", group, "--profile", alice)
    link = "\x1b]8;;http://evil.test\x1b\\click\x1b]8;;\x1b\\"  # OSC 8: a hidden link
    text = f"[bold red]URGENT[/] {link} \x1b[2J \u202efdp.exe"
    cli(server, tmp_path, "chat", "send", group, text, "--profile", alice)
    seen = cli(server, tmp_path, "chat", "sync", "--profile", bob).stdout
    assert "\x1b" not in seen and "\u202e" not in seen
    assert "[bold red]URGENT[/]" in seen  # the markup, as typed
    assert "\\x1b]8;;http://evil.test\\x1b\\click" in seen and "\\x1b[2J" in seen
    assert "\\u202efdp.exe" in seen
    listing = cli(server, tmp_path, "chat", "list", "--profile", bob).stdout
    assert "[link=http://evil.test]pay" in listing


def test_suggested_replies_in_the_terminal_and_their_switch(server, tmp_path) -> None:
    """Computed on this machine from the decrypted text; off on the device or in one chat."""
    alice, bob = unique("alice"), unique("bob")
    for name in (alice, bob):
        cli(server, tmp_path, "register", name, "--profile", name)
        cli(server, tmp_path, "login", name, "--profile", name)
    cli(
        server,
        tmp_path,
        "chat",
        "send",
        f"@{bob}",
        "Thank you so much for the help!",
        "--profile",
        alice,
    )
    cli(server, tmp_path, "chat", "accept", f"@{alice}", "--profile", bob)
    shown = cli(server, tmp_path, "chat", "suggest", f"@{alice}", "--profile", bob).stdout
    lines = shown.strip().splitlines()
    assert 1 <= len(lines) <= 3 and lines[0].startswith("1. "), shown
    assert any(w in shown for w in ("You're welcome!", "No problem!", "Anytime!"))
    own = cli(server, tmp_path, "chat", "suggest", f"@{bob}", "--profile", alice).stdout
    assert "no suggestion: the last message is yours" in own
    off = cli(server, tmp_path, "chat", "suggestions", "off", f"@{alice}", "--profile", bob)
    assert "suggested replies off in" in off.stdout
    quiet = cli(server, tmp_path, "chat", "suggest", f"@{alice}", "--profile", bob).stdout
    assert "off in this conversation" in quiet
    cli(server, tmp_path, "chat", "suggestions", "on", f"@{alice}", "--profile", bob)
    cli(server, tmp_path, "chat", "suggestions", "off", "--profile", bob)
    quiet = cli(server, tmp_path, "chat", "suggest", f"@{alice}", "--profile", bob).stdout
    assert "off on this device" in quiet
    bad = cli(
        server, tmp_path, "chat", "suggest", f"@{alice}", "--lang", "fr", "--profile", bob, ok=False
    )
    assert bad.returncode == 2 and "en or vi" in bad.stderr


def test_reply_react_edit_and_delete_from_the_terminal(server, tmp_path) -> None:
    alice, bob = unique("alice"), unique("bob")
    for name in (alice, bob):
        cli(server, tmp_path, "register", name, "--profile", name)
        cli(server, tmp_path, "login", name, "--profile", name)
    sent = cli(server, tmp_path, "chat", "send", f"@{bob}", "See you at 6?", "--profile", alice)
    first = sent.stdout.split("#")[1].split()[0]
    typo = cli(server, tmp_path, "chat", "send", f"@{bob}", "At the usal cafe", "--profile", alice)
    second = typo.stdout.split("#")[1].split()[0]
    cli(server, tmp_path, "chat", "reply", f"@{alice}", first, "Yes, see you", "--profile", bob)
    cli(server, tmp_path, "chat", "react", f"@{alice}", first, "👍", "--profile", bob)
    cli(
        server, tmp_path, "chat", "edit", f"@{bob}", second, "At the usual cafe", "--profile", alice
    )
    refused = cli(
        server, tmp_path, "chat", "edit", f"@{alice}", first, "no", "--profile", bob, ok=False
    )
    assert refused.returncode == 1 and "only its sender may change it" in refused.stderr
    cli(server, tmp_path, "chat", "delete", f"@{bob}", first, "--yes", "--profile", alice)
    history = cli(server, tmp_path, "chat", "history", f"@{alice}", "--profile", bob).stdout
    assert "At the usual cafe (edited)" in history and "usal" not in history
    assert "this message was deleted" in history and "See you at 6?" not in history
    assert f"↪ #{first} Yes, see you" in history
    found = cli(server, tmp_path, "chat", "search", "USUAL caf", "--profile", bob).stdout
    assert f"#{second} {alice}: At the usual cafe" in " ".join(found.split())
    missing = cli(server, tmp_path, "chat", "search", "see you at 6", "--profile", bob).stdout
    assert "nothing on this device matches" in missing  # deleted for everyone


def test_names_and_pictures_from_the_terminal(server, tmp_path) -> None:
    from PIL import Image

    alice, bob = unique("alice"), unique("bob")
    for name in (alice, bob):
        cli(server, tmp_path, "register", name, "--profile", name)
        cli(server, tmp_path, "login", name, "--profile", name)
    cli(server, tmp_path, "chat", "new", bob, "--name", "plans", "--profile", alice)
    assert (
        "Alice Liddell"
        in cli(server, tmp_path, "profile", "name", "Alice Liddell", "--profile", alice).stdout
    )
    picture = tmp_path / "me.png"
    Image.new("RGB", (50, 80), (0, 90, 160)).save(picture)
    assert (
        "picture set"
        in cli(server, tmp_path, "profile", "picture", str(picture), "--profile", alice).stdout
    )
    shown = cli(server, tmp_path, "profile", "show", alice, "nobody", "--profile", bob)
    assert f"{alice}: Alice Liddell, a picture" in shown.stdout
    assert "not shown (no conversation with you): nobody" in shown.stderr
    cli(server, tmp_path, "chat", "rename", "plans", "Summer plans", "--profile", alice)
    refused = cli(
        server, tmp_path, "chat", "rename", "Summer plans", "mine", "--profile", bob, ok=False
    )
    assert refused.returncode == 1 and "only a group admin" in refused.stderr
    not_a_picture = tmp_path / "notes.txt"
    not_a_picture.write_text("hello")
    bad = cli(
        server, tmp_path, "profile", "picture", str(not_a_picture), "--profile", bob, ok=False
    )
    assert bad.returncode == 1 and "not a picture" in bad.stderr
    history = " ".join(
        cli(server, tmp_path, "chat", "history", "Summer plans", "--profile", bob).stdout.split()
    )
    assert f"{alice} changed their name to Alice Liddell" in history
    assert f"{alice} changed their picture" in history
    assert f"{alice} renamed the group to Summer plans" in history
