"""The server process's C heap (glibc's malloc), which Python's own allocator sits on.

Two things about it matter to a server holding thousands of idle sockets (issue 10, decisions
0012 and 0033): glibc keeps freed memory until asked to hand it back, and it gives every
thread that allocates under contention an arena of its own (up to eight per core), which the
embedded server's SQLite threads (one per pooled connection) each fill and keep.
"""

from __future__ import annotations

import ctypes
import gc
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


def limit_arenas(arenas: int = ARENAS) -> None:
    """Caps glibc's arenas, as ``MALLOC_ARENA_MAX`` would; called before the server's threads
    start. Two, not one: the event loop keeps an arena the worker threads do not contend for.
    Off glibc, nothing to cap."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Returns freed heap to the operating system. CPython frees its own arenas once they are
    empty, but glibc keeps what the allocator released at the top of its heaps until asked."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
