"""The ``secureconnect`` command. Kept apart from the CLI so that a server can choose its
memory allocator before anything is imported (``heap.run_on_malloc``)."""

from __future__ import annotations

import sys

from secureconnect.heap import run_on_malloc


def main() -> None:
    run_on_malloc(sys.argv[1:])
    from secureconnect.cli.main import main as cli

    cli()
