"""``secureconnect``: run the server, and use it from a terminal.

Server commands (serve, migrate, config) read the same settings as the server. Client commands
(register, login, chat ...) go through the Python SDK and keep their login in a profile file.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import segno
import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from secureconnect.cli.common import (
    PasswordOpt,
    ProfileChoice,
    ProfileOpt,
    ServerOpt,
    choose_profile,
    client_command,
    err,
    hoist_profile_options,
    out,
    profile_choice,
    run,
    shown,
    when,
)
from secureconnect.cli.oncall import oncall_app
from secureconnect.cli.profile import Profile, home
from secureconnect.client import (
    ApiError,
    Client,
    Message,
    Ready,
    Receipt,
    Typing,
    attachments,
    timeline,
)
from secureconnect.client.attachments import AttachmentCorrupt
from secureconnect.client.devicestore import DeviceStore, DeviceStoreError
from secureconnect.client.secure import (
    CannotChangeMessage,
    DecryptionFailed,
    IdentityChangedError,
    MessageTooLong,
    PlainMessage,
    SecureClient,
)
from secureconnect.config import Settings
from secureconnect.crypto.safety import display
from secureconnect.suggest.engine import LANGUAGES, Pack, PackError

app = typer.Typer(no_args_is_help=True)
config_app = typer.Typer(help="Inspect the server's settings.", no_args_is_help=True)
chat_app = typer.Typer(help="Conversations and messages.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(chat_app, name="chat")
app.add_typer(oncall_app, name="oncall")
totp_app = typer.Typer(
    help="Two-step verification with an authenticator app.", no_args_is_help=True
)
app.add_typer(totp_app, name="totp")
CodeOpt = Annotated[
    str | None,
    typer.Option("--code", help="the authenticator app's current code, or a recovery code"),
]


def main() -> None:
    app(args=hoist_profile_options(sys.argv[1:]))


@app.callback()
def root(profile: ProfileOpt = "default", server: ServerOpt = None) -> None:
    """SecureConnect: end-to-end encrypted chat and calls.

    --profile and --server may stand before or after the subcommand.
    """
    choose_profile(ProfileChoice(profile, server))


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        err.print(f"[red]invalid configuration:[/red] {error}")
        raise typer.Exit(2) from error


# ----- server ---------------------------------------------------------------------------------


@app.command()
def serve(
    role: Annotated[
        str | None, typer.Option(help="all | api-gateway | chat-service | video-service")
    ] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on (0: any free port)")] = None,
    data_dir: Annotated[str | None, typer.Option(help="where the embedded database lives")] = None,
) -> None:
    """Start the server (every role in one process unless --role says otherwise)."""
    from secureconnect.cli.serve import serve as run_server

    run_server(_settings(role=role, host=host, port=port, data_dir=data_dir))


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest (safe to run repeatedly)."""
    from secureconnect.store import Database
    from secureconnect.store.migrate import current_revision, head_revision, upgrade

    settings = _settings()

    async def go() -> None:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        try:
            before = await current_revision(db)
            await upgrade(db)
            after = await current_revision(db)
        finally:
            await db.close()
        out.print(f"schema at {after} (was {before or 'empty'}; newest {head_revision()})")

    asyncio.run(go())


@app.command()
def backup(
    to: Annotated[
        str | None, typer.Option(help="folder for backups (SECURECONNECT_BACKUP_DIR)")
    ] = None,
    keep: Annotated[int | None, typer.Option(help="complete backups to keep")] = None,
) -> None:
    """A consistent snapshot of the database while the platform serves, with a manifest (schema
    revision, rows per table, checksums); older backups beyond --keep are removed."""
    from secureconnect.store.backup import backup as take

    settings = _settings()
    root = Path(to) if to else (settings.backup_dir or settings.data_dir / "backups")

    async def go() -> None:
        folder, manifest = await take(settings, root, keep or settings.backup_keep)
        chunks = sum(1 for name in manifest.files if name.startswith("blobs/"))
        blobs = (
            f"{chunks} attachment chunks"
            if manifest.blob_store == "local"
            else f"attachments stay in {manifest.blob_store} (not copied)"
        )
        out.print(
            f"backed up {manifest.total_rows} rows in {len(manifest.tables)} tables and "
            f"{blobs} ({manifest.backend}, schema {manifest.schema_revision}) to {folder}"
        )

    run(go())


@app.command()
def restore(
    folder: Annotated[str, typer.Argument(help="a backup folder (with manifest.json)")],
) -> None:
    """Restore a backup into an empty instance (this data folder, or an empty PostgreSQL
    database) and check every file and table against its manifest."""
    from secureconnect.store.backup import restore as bring_back

    settings = _settings()

    async def go() -> None:
        manifest = await bring_back(settings, Path(folder))
        out.print(
            f"restored and verified {manifest.total_rows} rows in {len(manifest.tables)} tables "
            f"(schema {manifest.schema_revision}); start the platform on it"
        )

    run(go())


@config_app.command("show")
def config_show() -> None:
    """Print the settings `secureconnect serve` would start with from this shell (its
    SECURECONNECT_* variables and the SECURECONNECT_CONFIG file), secrets masked. A server
    already running has the ones it was started with."""
    out.print_json(json.dumps(_settings().masked(), default=str))


# ----- accounts -------------------------------------------------------------------------------


def _password(given: str | None, confirm: bool = False, prompt: str = "Password") -> str:
    if given:
        return given
    if not sys.stdin.isatty():
        err.print(f"[red]error:[/red] no {prompt.lower()}: see --help for its option")
        raise typer.Exit(2)
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


@app.command()
def register(
    username: str,
    password: PasswordOpt = None,
) -> None:
    """Create an account."""
    secret = _password(password, confirm=True)

    async def go(client: Client, state: Profile) -> None:
        user = await client.register(username, secret)
        out.print(
            f"registered [bold]{user.username}[/bold]; now run: secureconnect login {user.username}"
        )

    client_command(go)()


@app.command()
def login(
    username: str,
    password: PasswordOpt = None,
    device_name: Annotated[str, typer.Option(help="how this device is listed")] = "cli",
    code: CodeOpt = None,
) -> None:
    """Log in; this terminal becomes one of your devices."""
    secret = _password(password)

    async def go(client: Client, state: Profile) -> None:
        reuse = state.device_id if state.username == username.lower() else None
        totp = code
        for _ in range(3):
            try:
                info = await client.login(
                    username, secret, device_name=device_name, device_id=reuse, totp_code=totp
                )
                break
            except ApiError as error:
                if error.code == "device_not_found":
                    reuse = None
                elif error.code == "totp_required" and totp is None:
                    totp = _code()
                else:
                    raise
        else:  # pragma: no cover - each refusal above is answered once
            raise typer.Exit(1)
        if info.new_device:
            state.cursors = {}
        state.token, state.username = info.token, info.username
        state.user_id, state.device_id = info.user_id, info.device_id
        if info.must_change_password:
            out.print(
                "your administrator asks you to choose a new password before anything else: "
                "run secureconnect password"
            )
            return
        await _secure(client)  # this device's keys: made here, public halves published
        out.print(f"logged in as [bold]{info.username}[/bold] on device {info.device_id[:8]}")

    client_command(go)()


@app.command()
def password(
    current: PasswordOpt = None,
    new: Annotated[
        str | None,
        typer.Option(
            "--new-password", envvar="SECURECONNECT_NEW_PASSWORD", help="asked for if not given"
        ),
    ] = None,
    keep_other_sessions: Annotated[
        bool, typer.Option(help="leave your other sessions logged in")
    ] = False,
) -> None:
    """Change your password; your other sessions are logged out unless you keep them."""
    old = _password(current, prompt="Current password")
    fresh = _password(new, confirm=True, prompt="New password")

    async def go(client: Client, state: Profile) -> None:
        revoked = await client.change_password(old, fresh, keep_other_sessions=keep_other_sessions)
        out.print(f"password changed; {revoked} other session(s) logged out")
        await _secure(client)  # after the breach procedure, this device has no keys yet

    client_command(go)()


profile_app = typer.Typer(
    help="Your display name and picture, as people you share a conversation with see them.",
    no_args_is_help=True,
)
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
def profile_show(
    usernames: Annotated[list[str] | None, typer.Argument(help="others (default: you)")] = None,
) -> None:
    """Display names and whether there is a picture (others: only people you share a
    conversation with)."""

    async def go(client: Client, state: Profile) -> None:
        found = await client.profiles(usernames) if usernames else [await client.my_profile()]
        for p in found:
            picture = "a picture" if p.avatar else "no picture"
            out.print(
                f"{shown(p.username)}: {shown(p.display_name or '(no display name)')}, {picture}"
            )
        missing = set(usernames or []) - {p.username for p in found}
        if missing:
            err.print(f"not shown (no conversation with you): {shown(', '.join(sorted(missing)))}")

    client_command(go)()


@profile_app.command("name")
def profile_name(
    name: Annotated[str | None, typer.Argument(help="shown instead of your username")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="have none")] = False,
) -> None:
    """Set your display name; every conversation you are in is told of the change."""
    if (name is None) == (not remove):
        err.print("[red]error:[/red] give a NAME, or --remove")
        raise typer.Exit(2)

    async def go(client: Client, state: Profile) -> None:
        p = await client.set_display_name(None if remove else name)
        out.print(f"display name: {shown(p.display_name or '(none)')}")

    client_command(go)()


@profile_app.command("picture")
def profile_picture(
    path: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False)] = None,
    remove: Annotated[bool, typer.Option("--remove", help="have none")] = False,
) -> None:
    """Set your picture (JPEG, PNG, WebP or GIF): the server crops it square and strips its
    metadata (location, camera)."""
    if (path is None) == (not remove):
        err.print("[red]error:[/red] give a PATH to a picture, or --remove")
        raise typer.Exit(2)

    async def go(client: Client, state: Profile) -> None:
        if path is None:
            await client.remove_avatar()
            out.print("picture removed")
        else:
            await client.set_avatar(path.read_bytes())
            out.print("picture set")

    client_command(go)()


email_app = typer.Typer(help="The address your security notices go to.", no_args_is_help=True)
app.add_typer(email_app, name="email")


@email_app.command("show")
def email_show() -> None:
    """The verified address, and one waiting for its code."""

    async def go(client: Client, state: Profile) -> None:
        state_ = await client.email()
        out.print(f"address: {state_.email or 'none'}", markup=False)
        if state_.pending:
            out.print(f"waiting for the code sent to {state_.pending}", markup=False)

    client_command(go)()


@email_app.command("set")
def email_set(address: str) -> None:
    """Mail a code to ADDRESS; then run: secureconnect email verify CODE."""

    async def go(client: Client, state: Profile) -> None:
        await client.set_email(address)
        out.print(
            f"a code was mailed to {address}; run: secureconnect email verify CODE", markup=False
        )

    client_command(go)()


@email_app.command("verify")
def email_verify(code: str) -> None:
    """Prove the address with the mailed code."""

    async def go(client: Client, state: Profile) -> None:
        done = await client.verify_email(code)
        out.print(f"security notices now go to {done.email}", markup=False)

    client_command(go)()


def _code() -> str:
    if not sys.stdin.isatty():
        err.print("[red]error:[/red] two-step verification is on: pass --code")
        raise typer.Exit(2)
    value: str = typer.prompt("Code from your authenticator app (or a recovery code)")
    return value


@totp_app.command("status")
def totp_status() -> None:
    """Whether two-step verification is on, and how many recovery codes are left."""

    async def go(client: Client, state: Profile) -> None:
        status = await client.totp_status()
        if status.enabled:
            left = status.recovery_codes_left
            out.print(f"two-step verification is on; {left} recovery codes left")
        else:
            out.print("two-step verification is off; turn it on with: secureconnect totp enable")

    client_command(go)()


@totp_app.command("enable")
def totp_enable() -> None:
    """Show a QR code for your authenticator app; then confirm with its first code."""

    async def go(client: Client, state: Profile) -> None:
        enrolment = await client.totp_begin()
        qr = io.StringIO()
        segno.make(enrolment.otpauth_uri, error="m").terminal(out=qr, compact=True)
        out.print(qr.getvalue(), markup=False, highlight=False)
        out.print(f"or add this URI: {enrolment.otpauth_uri}", markup=False)
        out.print(f"or type the key: {enrolment.secret}", markup=False)
        out.print("then run: secureconnect totp confirm CODE")

    client_command(go)()


@totp_app.command("confirm")
def totp_confirm(code: str) -> None:
    """Turn two-step verification on with the app's first code; shows the recovery codes."""

    async def go(client: Client, state: Profile) -> None:
        codes = await client.totp_confirm(code)
        out.print("two-step verification is on. Keep these recovery codes somewhere safe;")
        out.print("each logs you in once without the app, and they are shown only now:")
        for recovery in codes:
            out.print(f"  {recovery}", markup=False)

    client_command(go)()


@totp_app.command("disable")
def totp_disable(password: PasswordOpt = None, code: CodeOpt = None) -> None:
    """Turn two-step verification off (needs your password and a code)."""
    secret = _password(password)
    totp = code if code is not None else _code()

    async def go(client: Client, state: Profile) -> None:
        await client.totp_disable(secret, totp)
        out.print("two-step verification is off")

    client_command(go)()


@app.command()
def logout() -> None:
    """End this device's session."""

    async def go(client: Client, state: Profile) -> None:
        await client.logout()
        state.token = None
        out.print("logged out")

    client_command(go)()


@app.command()
def whoami() -> None:
    """Show who this profile is logged in as."""

    async def go(client: Client, state: Profile) -> None:
        me = await client.me()
        out.print(f"{me.username} (device {me.device_id[:8]}) on {state.server}")

    client_command(go)()


@app.command()
def devices() -> None:
    """List your devices."""

    async def go(client: Client, state: Profile) -> None:
        table = Table("device", "name", "last seen", "status")
        for d in await client.devices():
            status = "revoked" if d.revoked_at else ("this device" if d.current else "")
            table.add_row(d.id[:8], shown(d.name), when(d.last_seen_at), status)
        out.print(table)

    client_command(go)()


# ----- chat -----------------------------------------------------------------------------------


async def _resolve(client: Client, ref: str, *, start: bool = True) -> str:
    """A conversation named by ``@username`` (the 1:1), its id or id prefix, or its group name.
    ``start``: a 1:1 named by ``@username`` is started (or, if it was a request, accepted);
    without it, only an existing one is found."""
    if ref.startswith("@") and start:
        return (await client.direct(ref[1:])).id
    convs = await client.conversations()
    if ref.startswith("@"):
        matches = [c for c in convs if c.kind == "direct" and ref[1:].lower() in c.members]
    else:
        matches = [c for c in convs if c.id.startswith(ref) or c.name == ref]
    if len(matches) == 1:
        return matches[0].id
    reason = "matches several conversations" if matches else "matches no conversation"
    raise ApiError(404, "conversation_not_found", f"'{ref}' {reason}")


def _device_store() -> DeviceStore:
    """This profile's device keys; encrypted at rest when SECURECONNECT_PASSPHRASE is set."""
    return DeviceStore(
        home() / f"{profile_choice().profile}.device.json",
        os.environ.get("SECURECONNECT_PASSPHRASE") or None,
    )


async def _secure(client: Client) -> SecureClient:
    secure = SecureClient(client, _device_store())
    try:
        await secure.start()
    except DeviceStoreError as error:
        err.print(f"[red]error:[/red] {shown(str(error))}")
        raise typer.Exit(1) from error
    return secure


def _event_line(message: PlainMessage, who: str) -> str | None:
    """A reaction, an edit or a deletion, as a line of the live stream."""
    if message.content_type not in timeline.EVENTS:
        return None
    try:
        data = json.loads(message.text)
        target = f"#{int(data['to'])}"
    except (ValueError, KeyError, TypeError):
        return f"{who} sent an event this client cannot read"
    if message.content_type == timeline.REACTION:
        verb = "took back" if data.get("remove") else "reacted"
        return f"{who} {verb} {shown(str(data.get('emoji', '')))} to {target}"
    if message.content_type == timeline.EDIT:
        return f"{who} edited {target}: {shown(str(data.get('text', '')))}"
    return f"{who} deleted {target} for everyone"


PROFILE_ACTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "rename": lambda c: f"renamed the group to {shown(str(c.get('name', '')))}",
    "profile": lambda c: (
        f"changed their name to {shown(str(c['display_name']))}"
        if c.get("display_name")
        else "removed their display name"
    ),
    "avatar": lambda c: "removed their picture" if c.get("removed") else "changed their picture",
    "group_avatar": lambda c: (
        "removed the group's picture" if c.get("removed") else "changed the group's picture"
    ),
}


def _render(
    message: Message | PlainMessage | DecryptionFailed,
    me: str | None,
    entry: timeline.Entry | None = None,
) -> str:
    """One line of history; ``entry``: the message as folded (edits, deletion, reactions)."""
    who = "you" if message.sender == me else shown(message.sender)
    if isinstance(message, DecryptionFailed):
        if message.before_this_device:
            return (
                f"[dim]{message.conversation_id[:8]} #{message.seq}[/dim] [italic]a message from "
                f"{who} sent before this device was added: it is not on this device[/italic]"
            )
        return (
            f"[dim]{message.conversation_id[:8]} #{message.seq}[/dim] [red]could not "
            f"decrypt a message from {who} ({message.code})[/red]"
        )
    stamp = datetime.fromtimestamp(message.created_at / 1000, UTC).astimezone().strftime("%H:%M")
    head = f"[dim]{message.conversation_id[:8]} #{message.seq} {stamp}[/dim]"
    change = message.membership
    if change is not None:
        action = change["action"]
        if action == "create":
            return (
                f"{head} [italic]{shown(change['actor'])} started the conversation with "
                f"{shown(', '.join(m for m in change['members'] if m != change['actor']))}[/italic]"
            )
        actor = shown(change["actor"])
        if action in PROFILE_ACTIONS:
            return f"{head} [italic]{actor} {PROFILE_ACTIONS[action](change)}[/italic]"
        verb = {"add": "added", "remove": "removed", "leave": "left"}.get(action, action)
        target = "" if action == "leave" else f" {shown(change.get('user', ''))}"
        return f"{head} [italic]{actor} {shown(verb)}{target}[/italic]"
    if isinstance(message, PlainMessage) and (line := _event_line(message, who)) is not None:
        return f"{head} [italic]{line}[/italic]"
    pointer = (
        attachments.parse(message.body) if message.content_type == attachments.ATTACHMENT else None
    )
    if message.content_type.startswith("text/"):
        text = shown(message.body.decode("utf-8", errors="replace"))
    elif pointer is not None:
        text = _file_line(pointer, pointer.caption, message.conversation_id, message.seq)
    else:
        text = shown(f"<{message.content_type}, {len(message.body)} bytes>")
    if entry is not None:
        text = "[italic]this message was deleted[/italic]" if entry.deleted else shown(entry.text)
        if entry.attachment is not None and not entry.deleted:
            text = _file_line(entry.attachment, entry.text, message.conversation_id, message.seq)
        if entry.edited:
            text += " [dim](edited)[/dim]"
        if entry.reactions:
            listed = "; ".join(f"{e} {', '.join(who)}" for e, who in entry.reactions.items())
            text += f" [dim][{shown(listed)}][/dim]"
    answers = getattr(message, "reply_to", None)
    quote = f"[dim]↪ #{answers}[/dim] " if answers is not None else ""
    return f"{head} [bold]{who}[/bold]: {quote}{text}"


def _file_line(pointer: attachments.Attachment, caption: str, conv: str, seq: int) -> str:
    kind = "voice note" if pointer.type.startswith("audio/") else "file"
    line = (
        f"[{kind} {shown(pointer.name)}, {shown(pointer.type)}, {pointer.size} bytes: "
        f"secureconnect chat save {conv[:8]} {seq}]"
    ).replace("[", "\\[", 1)
    return f"{line} {shown(caption)}" if caption else line


@chat_app.command("new")
def chat_new(
    usernames: Annotated[list[str], typer.Argument(help="the other people")],
    name: Annotated[str | None, typer.Option(help="group name (makes it a group)")] = None,
    group: Annotated[
        bool, typer.Option("--group", help="a group even with one other person")
    ] = False,
) -> None:
    """Start a conversation: 1:1 with one person, a group with several (or --group/--name)."""

    async def go(client: Client, state: Profile) -> None:
        if len(usernames) == 1 and not group and name is None:
            conv = await client.direct(usernames[0])
        else:
            conv = await client.create_group(usernames, name)
        out.print(f"{conv.id} {conv.kind} with {shown(', '.join(conv.members))}")

    client_command(go)()


@chat_app.command("list")
def chat_list() -> None:
    """Your conversations, with unread counts."""

    async def go(client: Client, state: Profile) -> None:
        table = Table("id", "kind", "name / members", "unread", "last")
        for c in await client.conversations():
            label = c.name or ", ".join(m for m in c.members if m != state.username)
            if c.left:
                label += " (left)"
            if c.request:
                label += f" (request from {c.requested_by}: chat accept or chat decline)"
            table.add_row(
                c.id[:8], c.kind, shown(label), str(c.unread) if c.unread else "", f"#{c.last_seq}"
            )
        out.print(table)

    client_command(go)()


@chat_app.command("send")
def chat_send(
    conversation: Annotated[str, typer.Argument(help="@username, conversation id or group name")],
    text: Annotated[str, typer.Argument(help="the message (with --file: its caption)")] = "",
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            readable=True,
            help="send this file, image or voice note (encrypted here; its key goes inside)",
        ),
    ] = None,
) -> None:
    """Send a message or a file; returns once the server has stored it."""
    if not text and file is None:
        err.print("[red]error:[/red] give the message's text, or --file PATH")
        raise typer.Exit(2)

    async def go(client: Client, state: Profile) -> None:
        conv = await _resolve(client, conversation)
        secure = await _secure(client)
        try:
            if file is None:
                sent = await secure.send(conv, text.encode())
            else:
                with _progress(file.name) as progress:
                    sent = await secure.send_file(conv, file, caption=text, progress=progress)
        except IdentityChangedError as error:
            err.print(
                f"[red]not sent:[/red] {shown(str(error))}. Run: secureconnect chat verify "
                f"{shown(error.username)}"
            )
            raise typer.Exit(1) from error
        except MessageTooLong as error:
            err.print(
                f"[red]not sent:[/red] {shown(str(error))}; shorten it, or save it in a file "
                "and send that: secureconnect chat send CONVERSATION --file message.txt"
            )
            raise typer.Exit(1) from error
        for notice in secure.notices:
            if notice.change == "own_new_device":
                err.print(
                    f"[yellow]a new device ({notice.device_id[:8]}) was added to your account; "
                    "if it was not you: secureconnect password, then log it out "
                    "(secureconnect devices)[/yellow]"
                )
                continue
            err.print(
                f"[yellow]{shown(notice.username)} has a new device "
                f"({notice.device_id[:8]}); their safety number changed[/yellow]"
            )
        out.print(f"sent #{sent.seq} (end-to-end encrypted)")

    client_command(go)()


@contextlib.contextmanager
def _progress(name: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (so that stdout stays the result), for a transfer."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(shown(name), total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@chat_app.command("save")
def chat_save(
    conversation: str,
    seq: Annotated[int, typer.Argument(help="the attachment's message number (#N)")],
    out_path: Annotated[
        Path,
        typer.Option("--out", help="a folder (the sender's file name is used) or a file"),
    ] = Path("."),
) -> None:
    """Download, decrypt and check an attachment (its SHA-256 must match the message's)."""

    async def go(client: Client, state: Profile) -> None:
        conv = await _resolve(client, conversation, start=False)
        secure = await _secure(client)
        entry = next((e for e in await secure.timeline(conv) if e.message.seq == seq), None)
        if entry is None or entry.attachment is None:
            err.print(f"[red]error:[/red] #{seq} is not an attachment on this device")
            raise typer.Exit(1)
        try:
            with _progress(entry.attachment.name) as progress:
                path = await secure.save_attachment(entry, out_path, progress)
        except AttachmentCorrupt as error:
            err.print(f"[red]not saved:[/red] {shown(str(error))}")
            raise typer.Exit(1) from error
        out.print(
            f"saved {shown(str(path))} ({entry.attachment.size} bytes, "
            f"sha256 {entry.attachment.sha256})"
        )

    client_command(go)()


SILENT = {
    "nothing": "there is no message to answer",
    "own": "the last message is yours",
    "attachment": "the last message is a file",
    "empty": "the last message has no words",
    "long": "the last message is long",
    "sensitive": "the last message may be about something sensitive",
    "unsure": "none fits well enough",
}


@chat_app.command("suggest")
def chat_suggest(
    conversation: Annotated[str, typer.Argument(help="@username, conversation id or group name")],
    lang: Annotated[
        str, typer.Option(help="reply language when you have not written to them yet: en or vi")
    ] = "en",
) -> None:
    """Suggested replies to the last message, computed on this device from the decrypted text
    (nothing about it leaves this machine). Send one with: secureconnect chat send."""

    if lang not in LANGUAGES:
        raise typer.BadParameter("en or vi", param_hint="--lang")

    async def go(client: Client, state: Profile) -> None:
        conv = await _resolve(client, conversation, start=False)
        if not state.suggestions or conv in state.suggestions_off:
            where = "on this device" if not state.suggestions else "in this conversation"
            out.print(f"suggested replies are off {where} (secureconnect chat suggestions on)")
            return
        try:
            pack = Pack.packaged()
        except PackError as error:
            err.print(f"[red]suggested replies are unavailable:[/red] {shown(str(error))}")
            await client.report_suggestions("none", load_failures=1)
            raise typer.Exit(1) from error
        verdict = await (await _secure(client)).suggest_replies(conv, lang, pack)
        if verdict.silent is not None:
            out.print(f"no suggestion: {SILENT.get(verdict.silent, verdict.silent)}")
            return
        for n, suggestion in enumerate(verdict.suggestions, 1):
            out.print(f"{n}. {shown(suggestion.text)}")
        await client.report_suggestions(pack.version, shown=1)

    client_command(go)()


@chat_app.command("suggestions")
def chat_suggestions(
    switch: Annotated[str, typer.Argument(help="on or off")],
    conversation: Annotated[
        str | None, typer.Argument(help="only this conversation; the whole device if left out")
    ] = None,
) -> None:
    """Turn suggested replies on or off on this device, or in one conversation."""

    if switch not in ("on", "off"):
        raise typer.BadParameter("on or off", param_hint="SWITCH")

    async def go(client: Client, state: Profile) -> None:
        if conversation is None:
            state.suggestions = switch == "on"
            where = "on this device"
        else:
            conv = await _resolve(client, conversation, start=False)
            off = set(state.suggestions_off)
            (off.discard if switch == "on" else off.add)(conv)
            state.suggestions_off = sorted(off)
            where = f"in {conv[:8]}"
        out.print(f"suggested replies {switch} {where}")

    client_command(go)()


async def _sent(client: Client, conversation: str, act: Any) -> None:
    """Resolves the conversation, starts this device, runs ``act(secure, conv)`` and says
    what was sent, or why not."""
    conv = await _resolve(client, conversation, start=False)
    secure = await _secure(client)
    try:
        sent = await act(secure, conv)
    except CannotChangeMessage as error:
        err.print(f"[red]not sent:[/red] {shown(str(error))}")
        raise typer.Exit(1) from error
    except MessageTooLong as error:
        err.print(f"[red]not sent:[/red] {shown(str(error))}; shorten it")
        raise typer.Exit(1) from error
    out.print(f"sent #{sent.seq} (end-to-end encrypted)")


SeqArg = Annotated[int, typer.Argument(help="the message's number (#N in chat history)")]


@chat_app.command("reply")
def chat_reply(conversation: str, seq: SeqArg, text: str) -> None:
    """Answer a message: every client shows it as a quote above your text."""
    client_command(
        lambda client, state: _sent(
            client, conversation, lambda s, conv: s.send(conv, text.encode(), reply_to=seq)
        )
    )()


@chat_app.command("react")
def chat_react(
    conversation: str,
    seq: SeqArg,
    emoji: str,
    remove: Annotated[bool, typer.Option("--remove", help="take the reaction back")] = False,
) -> None:
    """React to a message with an emoji (your latest reaction to it counts)."""
    client_command(
        lambda client, state: _sent(
            client, conversation, lambda s, conv: s.react(conv, seq, emoji, remove)
        )
    )()


@chat_app.command("edit")
def chat_edit(conversation: str, seq: SeqArg, text: str) -> None:
    """Change one of your messages (within the server's edit window; shown as edited)."""
    client_command(
        lambda client, state: _sent(client, conversation, lambda s, conv: s.edit(conv, seq, text))
    )()


@chat_app.command("delete")
def chat_delete(
    conversation: str,
    seq: SeqArg,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask first")] = False,
) -> None:
    """Delete one of your messages for everyone (within the server's edit window)."""
    if not yes and not typer.confirm(f"Delete #{seq} for everyone? It cannot come back"):
        raise typer.Exit(1)
    client_command(
        lambda client, state: _sent(
            client, conversation, lambda s, conv: s.delete_for_everyone(conv, seq)
        )
    )()


@chat_app.command("search")
def chat_search(
    query: Annotated[str, typer.Argument(help="words to find (without case or diacritics)")],
) -> None:
    """Find messages this device has read; the server holds only ciphertext and is not asked."""

    async def go(client: Client, state: Profile) -> None:
        secure = await _secure(client)
        await secure.sync_inbox()
        found = await secure.search(query)
        for entry in found[:50]:
            m = entry.message
            out.print(
                f"[dim]{m.conversation_id[:8]} #{m.seq}[/dim] [bold]{shown(m.sender)}[/bold]: "
                f"{shown(entry.text)}"
            )
        if not found:
            out.print("nothing on this device matches")

    client_command(go)()


@chat_app.command("history")
def chat_history(
    conversation: str,
    limit: Annotated[int, typer.Option(help="how many of the newest")] = 50,
) -> None:
    """Show the newest messages of a conversation."""

    async def go(client: Client, state: Profile) -> None:
        conv = await _resolve(client, conversation)
        secure = await _secure(client)
        await secure.sync_inbox()
        history = await secure.history(conv)
        entries = {e.message.seq: e for e in timeline.fold(history, secure.edit_window_s)}
        shown_here = [
            m
            for m in history
            if not (isinstance(m, PlainMessage) and m.content_type in timeline.EVENTS)
        ]
        for message in shown_here[-limit:]:
            out.print(_render(message, state.username, entries.get(message.seq)))

    client_command(go)()


async def _stream(client: Client, state: Profile, until_ready: bool) -> None:
    secure = await _secure(client)
    async for event in secure.events(state.cursors):
        if isinstance(event, PlainMessage | DecryptionFailed):
            out.print(_render(event, state.username))
            if secure.stream is not None:
                state.cursors = secure.stream.cursors
            state.save(profile_choice().profile)
        elif isinstance(event, Receipt) and event.username != state.username:
            out.print(
                f"[dim]{event.conversation_id[:8]} {shown(event.username)} read up to "
                f"#{event.read_seq}, has up to #{event.delivered_seq}[/dim]"
            )
        elif isinstance(event, Typing):
            verb = "is typing" if event.typing else "stopped typing"
            out.print(f"[dim]{event.conversation_id[:8]} {shown(event.username)} {verb}[/dim]")
        elif isinstance(event, Ready) and until_ready:
            if secure.stream is not None:
                await secure.stream.close()
            return


@chat_app.command("listen")
def chat_listen() -> None:
    """Print what you missed, then new messages as they arrive (Ctrl-C to stop)."""

    async def go(client: Client, state: Profile) -> None:
        await _stream(client, state, until_ready=False)

    with contextlib.suppress(KeyboardInterrupt):
        client_command(go)()


@chat_app.command("sync")
def chat_sync() -> None:
    """Print everything that arrived since this device last looked, then exit."""

    async def go(client: Client, state: Profile) -> None:
        await _stream(client, state, until_ready=True)

    client_command(go)()


@chat_app.command("rename")
def chat_rename(conversation: str, name: str) -> None:
    """Rename a group (admins); its members see who did."""

    async def go(client: Client, state: Profile) -> None:
        conv = await client.rename_group(await _resolve(client, conversation, start=False), name)
        out.print(f"renamed to {shown(conv.name or '')}")

    client_command(go)()


@chat_app.command("picture")
def chat_picture(
    conversation: str,
    path: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False)] = None,
    remove: Annotated[bool, typer.Option("--remove", help="have none")] = False,
) -> None:
    """Set a group's picture (admins)."""
    if (path is None) == (not remove):
        err.print("[red]error:[/red] give a PATH to a picture, or --remove")
        raise typer.Exit(2)

    async def go(client: Client, state: Profile) -> None:
        conv = await _resolve(client, conversation, start=False)
        if path is None:
            await client.remove_group_avatar(conv)
            out.print("group picture removed")
        else:
            await client.set_group_avatar(conv, path.read_bytes())
            out.print("group picture set")

    client_command(go)()


@chat_app.command("members")
def chat_members(conversation: str) -> None:
    """Who is in a conversation."""

    async def go(client: Client, state: Profile) -> None:
        for m in await client.members(await _resolve(client, conversation)):
            out.print(f"{shown(m.username)}{' (admin)' if m.role == 'admin' else ''}")

    client_command(go)()


@chat_app.command("add")
def chat_add(conversation: str, username: str) -> None:
    """Add someone to a group (admins only). They see what is sent from now on."""

    async def go(client: Client, state: Profile) -> None:
        event = await client.add_member(await _resolve(client, conversation), username)
        out.print(_render(event, state.username))

    client_command(go)()


@chat_app.command("remove")
def chat_remove(conversation: str, username: str) -> None:
    """Remove someone from a group (admins), or leave it (your own name)."""

    async def go(client: Client, state: Profile) -> None:
        event = await client.remove_member(await _resolve(client, conversation), username)
        out.print(_render(event, state.username))

    client_command(go)()


@chat_app.command("accept")
def chat_accept(conversation: str) -> None:
    """Accept a message request (someone you are not in contact with put you in a
    conversation). Sending a message in it accepts it too."""

    async def go(client: Client, state: Profile) -> None:
        conv = await client.accept(await _resolve(client, conversation))
        out.print(f"accepted: {conv.id[:8]} {shown(conv.name or ', '.join(conv.members))}")

    client_command(go)()


@chat_app.command("decline")
def chat_decline(
    conversation: str,
    block: Annotated[
        bool, typer.Option("--block", help="and stop them putting you in conversations")
    ] = False,
) -> None:
    """Decline a message request: you leave it; the sender is not told of a declined 1:1."""

    async def go(client: Client, state: Profile) -> None:
        conv = await client.conversation(await _resolve(client, conversation, start=False))
        await client.decline(conv.id, block=block)
        out.print("declined" + (f"; {shown(conv.requested_by or '')} is blocked" if block else ""))

    client_command(go)()


@chat_app.command("blocked")
def chat_blocked() -> None:
    """The people you blocked."""

    async def go(client: Client, state: Profile) -> None:
        for name in await client.blocked_users():
            out.print(shown(name))

    client_command(go)()


@chat_app.command("unblock")
def chat_unblock(username: str) -> None:
    """Let someone you blocked ask you again."""

    async def go(client: Client, state: Profile) -> None:
        await client.unblock_user(username)
        out.print(f"{shown(username)} may ask you again")

    client_command(go)()


@chat_app.command("read")
def chat_read(conversation: str) -> None:
    """Mark a conversation read up to its newest message."""

    async def go(client: Client, state: Profile) -> None:
        conv = await client.conversation(await _resolve(client, conversation))
        await client.mark(conv.id, read=conv.last_seq)
        out.print(f"read up to #{conv.last_seq}")

    client_command(go)()


@chat_app.command("verify")
def chat_verify(
    username: str,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="the numbers match: mark verified")
    ] = False,
    accept: Annotated[bool, typer.Option("--accept", help="trust their devices' new keys")] = False,
) -> None:
    """Show the safety number to compare with USERNAME (in person or on a call)."""

    async def go(client: Client, state: Profile) -> None:
        secure = await _secure(client)
        if accept:
            secure.accept_identity(username, await client.user_devices(username))
        number = await secure.safety_number(username)
        if confirm:
            secure.mark_verified(username)
        out.print(f"safety number with [bold]{shown(username)}[/bold]:")
        out.print(f"  {display(number)}")
        status = "verified" if secure.is_verified(username) else "not verified"
        out.print(
            f"{shown(username)} is {status}. Compare the number with theirs; if it matches, run "
            f"secureconnect chat verify {shown(username)} --confirm"
        )

    client_command(go)()
