"""Attachment throughput and the server's memory while a large file goes through it.

Through one embedded server on loopback (SQLite, blobs in its folder), in the same run:

- SecureConnect: the Python SDK encrypts a file of --mb MiB, uploads it in 4 MiB chunks,
  downloads it and decrypts it (``SecureClient.send_file`` then ``save_attachment``);
- reference: the same bytes sent to the same server as plain HTTP PUTs of the largest body it
  takes (8 MiB, no encryption, no SDK), then read back with one plain streamed GET.

Each is timed end to end (upload + download), alternating, --runs times; the medians and their
ratio (the goal: at least 0.5) are printed. The server's resident memory is sampled every 10 ms
from /proc while the file moves; its peak above the idle level must stay under 64 MiB (the file
is streamed through, never held).

    .venv/bin/python bench/attachments.py            # 50 MiB, 3 runs each
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import embedded, secure_device

from secureconnect.client.secure import SecureClient
from secureconnect.crypto.attachment import DEFAULT_CHUNK, TAG_BYTES

PASSWORD = "benchmark password 1"
PLAIN_PIECE = 8 * 1024 * 1024  # the largest chunk the server takes, less room for a tag
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class PeakMemory:
    """Samples a process's resident memory on a thread while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def size_of(path: Path) -> int:
    return path.stat().st_size


async def through_secureconnect(
    alice: SecureClient, bob: SecureClient, conv: str, source: Path, out: Path
) -> float:
    start = time.perf_counter()
    await alice.send_file(conv, source)
    entry = (await bob.timeline(conv))[-1]
    saved = await bob.save_attachment(entry, out)
    elapsed = time.perf_counter() - start
    assert entry.attachment is not None
    assert size_of(saved) == size_of(source)
    await alice.client.delete_blob(entry.attachment.blob)  # the quota stays free for the next run
    return elapsed


async def plain_http(url: str, token: str, conv: str, data: bytes) -> float:
    """The same bytes, in the largest plain PUTs the server takes, then one streamed GET."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        start = time.perf_counter()
        created = await http.post(
            "/v1/blobs",
            json={"conversation_id": conv, "size": len(data), "chunk_size": PLAIN_PIECE},
        )
        blob = created.json()["id"]
        for n in range(0, len(data), PLAIN_PIECE):
            answer = await http.put(
                f"/v1/blobs/{blob}/chunks/{n // PLAIN_PIECE}", content=data[n : n + PLAIN_PIECE]
            )
            answer.raise_for_status()
        (await http.post(f"/v1/blobs/{blob}/complete")).raise_for_status()
        digest = hashlib.sha256()
        async with http.stream("GET", f"/v1/blobs/{blob}/content") as response:
            async for piece in response.aiter_bytes():
                digest.update(piece)
        elapsed = time.perf_counter() - start
        assert digest.digest() == hashlib.sha256(data).digest()
        await http.delete(f"/v1/blobs/{blob}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=50, help="the file's size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternating")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "file.bin"
        data = os.urandom(size)
        source.write_bytes(data)
        (tmp / "server").mkdir()
        with embedded(tmp / "server") as (server,):
            assert server.proc is not None
            alice = await secure_device(server.url, f"alice{os.getpid()}", tmp, PASSWORD)
            bob = await secure_device(server.url, f"bob{os.getpid()}", tmp, PASSWORD)
            conv = (await alice.client.direct(bob.username)).id
            await alice.client.send(conv, b"warm up", content_type="text/plain")
            idle = rss(server.proc.pid)
            ours: list[float] = []
            plain: list[float] = []
            peaks: list[int] = []
            for run in range(args.runs):
                with PeakMemory(server.proc.pid) as memory:
                    plain.append(await plain_http(server.url, str(alice.client.token), conv, data))
                    ours.append(
                        await through_secureconnect(alice, bob, conv, source, tmp / f"out{run}")
                    )
                peaks.append(memory.peak)
            await alice.client.aclose()
            await bob.client.aclose()
    mib = size / 2**20
    ours_s, plain_s = statistics.median(ours), statistics.median(plain)
    print(f"file: {args.mb} MiB, chunks of {DEFAULT_CHUNK // 2**20} MiB (+{TAG_BYTES} B tag)")
    print(
        f"SecureConnect (encrypt+upload+download+decrypt, SDK): {ours_s:.2f} s "
        f"= {2 * mib / ours_s:.0f} MiB/s moved"
    )
    print(
        f"reference (plain PUT/GET, same bytes, same server): {plain_s:.2f} s "
        f"= {2 * mib / plain_s:.0f} MiB/s moved"
    )
    ratio = plain_s / ours_s
    print(
        f"ratio to the reference: {ratio:.2f} (goal >= 0.5): {'met' if ratio >= 0.5 else 'MISSED'}"
    )
    above = (max(peaks) - idle) / 2**20
    print(
        f"server memory: idle {idle / 2**20:.0f} MiB, peak {max(peaks) / 2**20:.0f} MiB, "
        f"{above:.0f} MiB above idle (goal < 64): {'met' if above < 64 else 'MISSED'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
