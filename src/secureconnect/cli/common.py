"""What every CLI command shares: the consoles, the --profile/--server options (declared once,
on the root command), and running an SDK call so that API errors end as one red line instead
of a traceback."""

from __future__ import annotations

import asyncio
import os
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from secureconnect.cli.profile import Profile
from secureconnect.client import ApiError, Client, ConnectionLost
from secureconnect.errors import Problem

UNFOLDED = 10_000  # columns a table may take in a pipe: any real row fits


def _console(stderr: bool = False) -> Console:
    """No highlighting: it would colour parts of other people's text as if they meant something.

    Written to a pipe or a file (a script, a cron job's log), nothing is folded at 80 columns:
    a line breaks only where the text does, and a table is as wide as its cells, a row to a
    line, so that both can be searched for and parsed. ``COLUMNS``, when set, still rules."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.soft_wrap = True
        if "COLUMNS" not in os.environ:
            console.width = UNFOLDED
    return console


out = _console()
err = _console(stderr=True)
T = TypeVar("T")

# Kept as they are in text from other people: line breaks and tabs.
_LAYOUT = {"\n", "\t"}


def shown(text: str) -> str:
    """Text someone else wrote (a message, a name, a server's error), ready for ``out.print``.

    Rich would read ``[link=...]`` or ``[bold]`` in it as markup, and a terminal obeys escape
    sequences: another person could style the screen, plant a hidden link or rewrite what is
    shown. Markup is escaped, and control and format characters (escape, carriage return,
    bidirectional overrides, zero-width characters) are shown as ``\\x1b``-style codes.
    """
    visible = "".join(
        ch
        if ch in _LAYOUT or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )
    return escape(visible)


ProfileOpt = Annotated[
    str, typer.Option("--profile", envvar="SECURECONNECT_PROFILE", help="which saved login to use")
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="SECURECONNECT_SERVER", help="server URL (default http://127.0.0.1:8000)"
    ),
]
PasswordOpt = Annotated[
    str | None,
    typer.Option("--password", envvar="SECURECONNECT_PASSWORD", help="asked for if not given"),
]


@dataclass(frozen=True)
class ProfileChoice:
    """Which saved login (``--profile``) and which server (``--server``) a command uses."""

    profile: str = "default"
    server: str | None = None


PROFILE_OPTIONS = ("--profile", "--server")


def hoist_profile_options(argv: list[str]) -> list[str]:
    """Moves ``--profile``/``--server`` (and their values) to the front, where the root command
    reads them, so that they may also be given after the subcommand. Nothing after ``--`` moves:
    there a word is an argument, even one that looks like an option."""
    front: list[str] = []
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            rest.append(word)
            rest.extend(words)
            break
        name = word.split("=", 1)[0]
        if name in PROFILE_OPTIONS:
            front.append(word)
            if "=" not in word:
                value = next(words, None)
                if value is not None:
                    front.append(value)
        else:
            rest.append(word)
    return front + rest


_chosen: ContextVar[ProfileChoice | None] = ContextVar("profile_choice", default=None)


def choose_profile(choice: ProfileChoice) -> None:
    """Called once per command line, by the root command's callback."""
    _chosen.set(choice)


def profile_choice() -> ProfileChoice:
    """What the root command was given (the defaults outside a command line, as in tests)."""
    return _chosen.get() or ProfileChoice()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a client coroutine; API errors become one red line and exit code 1."""
    try:
        return asyncio.run(coro)
    except (ApiError, Problem) as error:  # the server's refusal, or a server-side command's
        err.print(f"[red]error:[/red] {shown(error.message)} [dim]({shown(error.code)})[/dim]")
        raise typer.Exit(1) from error
    except ConnectionLost as error:
        err.print(f"[red]disconnected:[/red] {shown(error.reason)} [dim]({error.code})[/dim]")
        raise typer.Exit(1) from error
    except OSError as error:
        err.print(f"[red]cannot reach the server:[/red] {shown(str(error))}")
        raise typer.Exit(1) from error


def client_command(
    fn: Callable[..., Awaitable[None]],
) -> Callable[..., None]:
    """Wraps an async ``fn(client, profile, ...)`` into a call on the chosen profile's server."""

    @wraps(fn)
    def command(*args: Any, **kwargs: Any) -> None:
        chosen = profile_choice()
        state = Profile.load(chosen.profile, chosen.server)

        async def go() -> None:
            async with Client(state.server, state.token) as client:
                await fn(client, state, *args, **kwargs)
            state.save(chosen.profile)

        run(go())

    return command


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M")
