"""The server process's heap: glibc's malloc, and whether Python's objects live on it.

Three things about it matter to a server holding thousands of idle sockets (issue 10, decisions
0012 and 0033): glibc keeps freed memory until asked to hand it back; it gives every thread
that allocates under contention an arena of its own (up to eight per core), which the embedded
server's SQLite threads (one per pooled connection) each fill and keep; and CPython's own
allocator for small objects hands back a 1 MiB block only when nothing at all is left in it,
which after a crowd of sockets has gone is seldom (a few objects that outlive the crowd are
enough). So the server runs with ``PYTHONMALLOC=malloc``: small objects on glibc, whose
``malloc_trim`` returns every free page, wherever it is.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import Any

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def run_on_malloc(argv: list[str]) -> None:
    """Re-executes this process (same PID, same command line) with ``PYTHONMALLOC=malloc``
    when it is to be a server (``argv``: the command's arguments) and the operator has not
    chosen an allocator. Called before the command line is even parsed: the variable only
    takes effect when the interpreter starts. Throughput did not change measurably
    (decision 0033); ``PYTHONMALLOC=pymalloc`` keeps CPython's own."""
    if _libc is None or "PYTHONMALLOC" in os.environ or "serve" not in argv[:5]:
        return
    os.execve(  # noqa: S606 - this very program, with its own arguments
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "PYTHONMALLOC": "malloc"},
    )


def limit_arenas(arenas: int = ARENAS) -> None:
    """Caps glibc's arenas, as ``MALLOC_ARENA_MAX`` would; called before the server's threads
    start. Two, not one: the event loop keeps an arena the worker threads do not contend for.
    Off glibc, nothing to cap."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Returns freed heap to the operating system once a crowd of sockets has gone.

    glibc keeps what is freed until asked, and hands back only pages with nothing left in them.
    What held a crowd's memory besides (decision 0033) was mostly CPython's attribute cache:
    its 4,096 slots each hold the name looked up, and C code that looks a method up by a name
    made on the spot (``"result"``, ``"dst"``) leaves a fresh string in a slot of its own every
    time, a few hundred of them spread over the memory the crowd filled (on CPython's own
    allocator, each kept a 1 MiB arena). Clearing it costs a few lookups' worth of refilling."""
    sys._clear_type_cache()
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
