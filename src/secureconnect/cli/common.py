"""What every CLI command shares: the consoles, the --profile/--server options, and running an
SDK call so that API errors end as one red line instead of a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from secureconnect.cli.profile import Profile
from secureconnect.client import ApiError, Client, ConnectionLost

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

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


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a client coroutine; API errors become one red line and exit code 1."""
    try:
        return asyncio.run(coro)
    except ApiError as error:
        err.print(f"[red]error:[/red] {error.message} [dim]({error.code})[/dim]")
        raise typer.Exit(1) from error
    except ConnectionLost as error:
        err.print(f"[red]disconnected:[/red] {error.reason} [dim]({error.code})[/dim]")
        raise typer.Exit(1) from error
    except OSError as error:
        err.print(f"[red]cannot reach the server:[/red] {error}")
        raise typer.Exit(1) from error


def client_command(
    fn: Callable[..., Awaitable[None]],
) -> Callable[..., None]:
    """Wraps an async ``fn(client, profile, ...)`` into a command with --profile and --server."""

    @wraps(fn)
    def command(
        *args: Any, profile: str = "default", server: str | None = None, **kwargs: Any
    ) -> None:
        state = Profile.load(profile, server)

        async def go() -> None:
            async with Client(state.server, state.token) as client:
                await fn(client, state, *args, **kwargs)
            state.save(profile)

        run(go())

    return command


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M")
