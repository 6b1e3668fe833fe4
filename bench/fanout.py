"""Group fan-out: one sender posting into a room of N receivers that ack every message.

Each receiver is a WebSocket device that acks every message as the web client does; the sender
also keeps its own device connected, so it receives whatever receipts the server sends it. A
"window" is how many messages may be in flight (posted but not yet delivered to every receiver):
window 1 measures latency, window 32 throughput. Every run is bounded in count and time.

As the reference, measured in the same run on the same client code, a bare broadcast server
written here with plain `websockets` (no storage, no auth) relays the same frames. Each figure is
printed with its ratio to that reference.

    .venv/bin/python bench/fanout.py                      # room of 100: embedded, PostgreSQL+Redis
    .venv/bin/python bench/fanout.py --room 1000 --systems sqlite
    .venv/bin/python bench/fanout.py --idle 1000 --login-burst --systems sqlite

Figures: deliveries/s, send-to-deliver p50/p99, server CPU-seconds per 1,000 deliveries,
receipt frames per message; with --idle, server KiB per idle authenticated connection and how
much comes back after they close; with --login-burst, send-to-deliver while 4 clients log in.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import embedded, on_postgresql
from tests.server import ServerProcess

PASSWORD = "benchmark password 1"
BODY = base64.b64encode(secrets.token_bytes(180)).decode()  # about a short encrypted message
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1024


# ----- the reference: a bare broadcast server ----------------------------------------------


async def reference_server(port: int) -> None:
    """Relays each sender frame to every receiver; parses and drops acks. Nothing is stored."""
    from websockets.asyncio.server import serve

    receivers: set[Any] = set()
    seq = 0

    async def handler(ws: Any) -> None:
        nonlocal seq
        hello = json.loads(await ws.recv())
        if hello.get("role") == "receiver":
            receivers.add(ws)
            await ws.send(json.dumps({"type": "ready"}))
            try:
                async for raw in ws:
                    json.loads(raw)  # the ack, read as the real server reads it
            finally:
                receivers.discard(ws)
            return
        await ws.send(json.dumps({"type": "ready"}))
        async for raw in ws:
            frame = json.loads(raw)
            seq += 1
            event = {
                "type": "message",
                "conversation_id": "reference",
                "seq": seq,
                "kind": "message",
                "sender_id": "s",
                "sender": "sender",
                "sender_device_id": "d",
                "client_msg_id": frame["client_msg_id"],
                "content_type": "text/plain",
                "body": frame["body"],
                "created_at": int(time.time() * 1000),
            }
            websockets.broadcast(receivers, json.dumps(event, separators=(",", ":")))
            await ws.send(json.dumps({"type": "sent", "seq": seq}))

    async with serve(handler, "127.0.0.1", port, max_size=2**20, compression=None) as server:
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


class ReferenceProcess:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.pid = 0

    def start(self) -> ReferenceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--reference-server"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}"
        self.pid = self.proc.pid
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


# ----- the load: one sender, N acking receivers ---------------------------------------------


@dataclass
class Tally:
    """What the receivers saw during one measured run."""

    room: int
    sent_at: dict[str, float] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    receipt_frames: int = 0
    receipt_entries: int = 0
    other_frames: int = 0
    deliveries: int = 0
    done: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    replies: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    measuring: bool = False

    def delivered(self, key: str) -> None:
        started = self.sent_at.get(key)
        if started is None:
            return
        self.deliveries += 1
        if self.measuring:
            self.latencies.append((time.perf_counter() - started) * 1000)
        count = self.seen.get(key, 0) + 1
        self.seen[key] = count
        if count == self.room:
            future = self.done.pop(key, None)
            if future is not None and not future.done():
                future.set_result(None)


async def receiver(
    ws: ClientConnection, tally: Tally, ack: Callable[[dict[str, Any]], str | None] | None
) -> None:
    """One device's socket; ``ack`` None is the sender's own device (its echo is no delivery)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for raw in ws:
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "message":
                if ack is None:
                    continue
                tally.delivered(event["client_msg_id"])
                frame = ack(event)
                if frame is not None:
                    await ws.send(frame)
            elif kind in ("receipt", "receipts"):
                tally.receipt_frames += 1
                tally.receipt_entries += len(event.get("receipts", [event]))
            elif kind == "sent" or (kind == "error" and event.get("frame") == "send"):
                reply = tally.replies.pop(event.get("client_msg_id") or "", None)
                if reply is not None and not reply.done():
                    reply.set_result(event)
            else:
                tally.other_frames += 1


@dataclass
class Result:
    system: str
    room: int
    window: int
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_per_1000: float
    receipts_per_message: float
    receipt_entries_per_message: float
    lost: int
    messages: int


class System:
    """A system under test: how to connect receivers and how to send one message."""

    name = ""
    pids: list[int]

    async def prepare(self, room: int) -> None: ...

    async def connect_receivers(self, tally: Tally) -> list[ClientConnection]:
        raise NotImplementedError

    async def send(self, key: str) -> None:
        raise NotImplementedError

    async def close(self) -> None: ...

    def ack(self, event: dict[str, Any]) -> str | None:
        return json.dumps(
            {"type": "ack", "conversation_id": event["conversation_id"], "seq": event["seq"]}
        )


async def measure(system: System, room: int, window: int, seconds: float) -> Result:
    tally = Tally(room)
    sockets = await system.connect_receivers(tally)
    tasks = [asyncio.ensure_future(receiver(ws, tally, system.ack)) for ws in sockets[:room]]
    tasks += [asyncio.ensure_future(receiver(ws, tally, None)) for ws in sockets[room:]]
    counter = 0

    async def one() -> None:
        nonlocal counter
        counter += 1
        key = f"m{counter}-{secrets.token_hex(3)}"
        future = asyncio.get_running_loop().create_future()
        tally.done[key] = future
        tally.sent_at[key] = time.perf_counter()
        await system.send(key)
        await asyncio.wait_for(future, 30)

    async def lane(deadline: float) -> None:
        while time.perf_counter() < deadline:
            await one()

    # Warm up (caches, connections), then measure a fixed time with `window` lanes.
    await asyncio.gather(*(lane(time.perf_counter() + 1.0) for _ in range(window)))
    await asyncio.sleep(0.6)  # let the warm-up's acks flush
    tally.latencies.clear()
    tally.receipt_frames = tally.receipt_entries = 0
    first_key = counter
    before = sum(cpu_seconds(p) for p in system.pids)
    deliveries_before = tally.deliveries
    tally.measuring = True
    started = time.perf_counter()
    await asyncio.gather(*(lane(started + seconds) for _ in range(window)))
    elapsed = time.perf_counter() - started
    tally.measuring = False
    deliveries = tally.deliveries - deliveries_before
    cpu = sum(cpu_seconds(p) for p in system.pids) - before
    await asyncio.sleep(1.2)  # receipts of the last messages
    receipts, entries = tally.receipt_frames, tally.receipt_entries
    messages = counter - first_key
    lost = sum(room - n for n in tally.seen.values() if n < room)
    for task in tasks:
        task.cancel()
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return Result(
        system.name,
        room,
        window,
        deliveries / elapsed,
        statistics.median(tally.latencies),
        pct(tally.latencies, 0.99),
        cpu / max(deliveries, 1) * 1000,
        receipts / max(messages, 1),
        entries / max(messages, 1),
        lost,
        messages,
    )


class Reference(System):
    name = "bare websockets broadcast (reference)"

    def __init__(self) -> None:
        self.proc = ReferenceProcess().start()
        self.pids = [self.proc.pid]
        self.sender: ClientConnection | None = None
        self.reader: asyncio.Future[None] | None = None

    async def connect_receivers(self, tally: Tally) -> list[ClientConnection]:
        sockets = []
        for _ in range(tally.room):
            ws = await connect(self.proc.url, compression=None, max_size=2**20)
            await ws.send(json.dumps({"role": "receiver"}))
            await ws.recv()
            sockets.append(ws)
        self.sender = await connect(self.proc.url, compression=None)
        await self.sender.send(json.dumps({"role": "sender"}))
        await self.sender.recv()
        self.lock = asyncio.Lock()
        self.replies: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())
        return sockets

    async def _read(self) -> None:
        assert self.sender is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.sender:
                self.replies.put_nowait(raw)

    async def send(self, key: str) -> None:
        assert self.sender is not None
        async with self.lock:  # one reply per frame, in order, like a request and its answer
            await self.sender.send(json.dumps({"client_msg_id": key, "body": BODY}))
            await self.replies.get()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.sender is not None:
            await self.sender.close()
        self.proc.stop()


@dataclass
class Account:
    username: str
    token: str
    user_id: str


async def make_accounts(urls: list[str], prefix: str, count: int) -> list[Account]:
    """Registers and logs in ``count`` people, a few at a time (argon2 is meant to be slow)."""
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> Account:
        name = f"{prefix}{i}"
        async with gate, httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=60) as http:
            r = await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
            r.raise_for_status()
            r = await http.post(
                "/v1/auth/login",
                json={"username": name, "password": PASSWORD, "device_name": "bench"},
            )
            r.raise_for_status()
            data = r.json()
            return Account(name, data["token"], data["user_id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def open_device(url: str, token: str, cursors: dict[str, int] | None = None) -> Any:
    ws = await connect(ws_url(url) + "/v1/events", compression=None, max_size=2**24)
    auth = {"type": "auth", "protocol": 2, "token": token, "cursors": cursors or {}}
    await ws.send(json.dumps(auth))
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "ready":
            return ws
        if frame.get("type") == "error":
            raise RuntimeError(frame)


def ws_url(url: str) -> str:
    return "ws" + url[len("http") :]


class SecureConnect(System):
    """Receivers are spread over the replicas; the sender sends through the first one, with a
    ``send`` frame on its device's socket (as the web client does) or ``POST .../messages``."""

    def __init__(self, name: str, servers: list[ServerProcess], via: str = "ws") -> None:
        self.name = f"{name}, send {via}"
        self.via = via
        self.tally: Tally | None = None
        self.own_socket: ClientConnection | None = None
        self.servers = servers
        self.urls = [s.url for s in servers]
        self.pids = [s.proc.pid for s in servers if s.proc is not None]
        self.people: list[Account] = []
        self.tag = secrets.token_hex(2)
        self.http = httpx.AsyncClient(base_url=self.urls[0], timeout=30)
        self.conv = ""
        self.sender: Account | None = None

    async def prepare(self, room: int) -> None:
        if len(self.people) < room + 1:
            extra = await make_accounts(
                self.urls, f"b{self.tag}x{len(self.people)}x", room + 1 - len(self.people)
            )
            self.people.extend(extra)
        self.sender = self.people[0]
        auth = {"Authorization": f"Bearer {self.sender.token}"}
        names = [p.username for p in self.people[1 : room + 1]]
        r = await self.http.post(
            "/v1/conversations",
            json={"kind": "group", "members": names[:200], "name": f"room {room}"},
            headers=auth,
        )
        r.raise_for_status()
        self.conv = r.json()["id"]
        for name in names[200:]:
            r = await self.http.post(
                f"/v1/conversations/{self.conv}/members", json={"username": name}, headers=auth
            )
            r.raise_for_status()
        self.auth = auth

    async def connect_receivers(self, tally: Tally) -> list[ClientConnection]:
        gate = asyncio.Semaphore(50)
        cursor = {self.conv: 10**9}  # nothing old: start at the present

        async def one(i: int, person: Account) -> Any:
            async with gate:
                return await open_device(self.urls[i % len(self.urls)], person.token, cursor)

        members = self.people[1 : tally.room + 1]
        sockets = list(await asyncio.gather(*(one(i, p) for i, p in enumerate(members, 1))))
        assert self.sender is not None
        self.own_socket = await open_device(self.urls[0], self.sender.token, cursor)
        sockets.append(self.own_socket)
        self.tally = tally
        return sockets

    async def send(self, key: str) -> None:
        if self.via == "ws":
            assert self.own_socket is not None
            assert self.tally is not None
            reply = asyncio.get_running_loop().create_future()
            self.tally.replies[key] = reply
            await self.own_socket.send(
                json.dumps(
                    {
                        "type": "send",
                        "conversation_id": self.conv,
                        "client_msg_id": key,
                        "content_type": "text/plain",
                        "body": BODY,
                    }
                )
            )
            answer = await asyncio.wait_for(reply, 30)
            if answer["type"] != "sent":
                raise RuntimeError(f"send answered {answer}")
            return
        r = await self.http.post(
            f"/v1/conversations/{self.conv}/messages",
            json={"client_msg_id": key, "content_type": "text/plain", "body": BODY},
            headers=self.auth,
        )
        if r.status_code != 201:
            raise RuntimeError(f"send answered {r.status_code}: {r.text[:200]}")

    async def close(self) -> None:
        await self.http.aclose()


# ----- the systems and what is printed ---------------------------------------------------


def show(result: Result, reference: Result | None) -> None:
    def ratio(value: float, ref: float) -> str:
        return f" ({value / ref:.2f}x ref)" if reference is not None and ref else ""

    ref = reference
    print(
        f"  {result.system:42s} room {result.room:4d} window {result.window:2d}: "
        f"{result.deliveries_per_s:8.0f} deliveries/s"
        f"{ratio(result.deliveries_per_s, ref.deliveries_per_s) if ref else ''}"
        f"  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms"
        f"  CPU-s/1000 {result.cpu_per_1000:5.3f}"
        f"{ratio(result.cpu_per_1000, ref.cpu_per_1000) if ref else ''}"
        f"  receipt frames/msg {result.receipts_per_message:.3g}"
        f" (entries {result.receipt_entries_per_message:.3g})"
        f"  lost {result.lost}  ({result.messages} msgs)",
        flush=True,
    )


@contextlib.contextmanager
def started(system: str, tmp: Path) -> Any:
    """The servers of one system: the embedded default, or N replicas on PostgreSQL + Redis."""
    if system == "sqlite":
        with embedded(tmp) as servers:
            yield servers
        return
    with on_postgresql(tmp, {"postgresql": 1, "postgresql-2": 2}[system]) as servers:
        yield servers


LABELS = {
    "sqlite": "SecureConnect embedded (SQLite)",
    "postgresql": "SecureConnect PostgreSQL+Redis, 1 replica",
    "postgresql-2": "SecureConnect PostgreSQL+Redis, 2 replicas",
}


async def run_system(
    system: System, rooms: list[int], windows: list[int], seconds: float, refs: dict[Any, Result]
) -> list[Result]:
    results = []
    for room in rooms:
        await system.prepare(room)
        for window in windows:
            result = await measure(system, room, window, seconds)
            show(result, refs.get((room, window)))
            results.append(result)
    return results


async def idle_memory(system: SecureConnect, count: int) -> None:
    """KiB of server memory per idle authenticated connection, and what returns on close."""
    server = system.servers[0]
    if len(system.people) < count:
        more = count - len(system.people)
        system.people += await make_accounts([server.url], f"i{system.tag}x", more)
    people = system.people[:count]
    assert server.proc is not None
    pid = server.proc.pid
    await asyncio.sleep(1)
    base = rss_kib(pid)
    gate = asyncio.Semaphore(50)

    async def one(p: Account) -> Any:
        async with gate:
            return await open_device(server.url, p.token)

    sockets = await asyncio.gather(*(one(p) for p in people))
    await asyncio.sleep(2)
    loaded = rss_kib(pid)
    for ws in sockets:
        await ws.close()
    await asyncio.sleep(3)
    after = rss_kib(pid)
    per = (loaded - base) / count
    print(
        f"  idle connections: {count}, server RSS {base / 1024:.1f} -> {loaded / 1024:.1f} MiB "
        f"= {per:.1f} KiB per connection; after closing {after / 1024:.1f} MiB "
        f"({(loaded - after) / max(loaded - base, 1) * 100:.0f}% returned)",
        flush=True,
    )


async def login_burst(system: SecureConnect, seconds: float) -> None:
    """Send-to-deliver at window 1 in a room of 10, quiet and then while 4 clients log in."""
    await system.prepare(10)
    quiet = await measure(system, 10, 1, seconds)
    stop = asyncio.Event()
    logins = 0

    async def keep_logging_in() -> None:
        nonlocal logins
        async with httpx.AsyncClient(base_url=system.urls[0], timeout=60) as http:
            while not stop.is_set() and logins < 400:
                await http.post(
                    "/v1/auth/login",
                    json={"username": system.people[1].username, "password": PASSWORD},
                )
                logins += 1

    burst = [asyncio.ensure_future(keep_logging_in()) for _ in range(4)]
    await asyncio.sleep(0.3)
    loaded = await measure(system, 10, 1, seconds)
    stop.set()
    await asyncio.gather(*burst)
    print(
        f"  login burst: send-to-deliver p50/p99 {quiet.p50_ms:.1f}/{quiet.p99_ms:.1f} ms quiet, "
        f"{loaded.p50_ms:.1f}/{loaded.p99_ms:.1f} ms during {logins} logins by 4 clients "
        f"(p99 x{loaded.p99_ms / quiet.p99_ms:.1f})",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    rooms = [int(r) for r in args.room.split(",") if r]
    windows = [int(w) for w in args.windows.split(",")]
    refs: dict[Any, Result] = {}
    print(f"room(s) {rooms}, window(s) {windows}, {args.seconds:g} s per run", flush=True)
    for room in rooms:
        for window in windows:
            reference = Reference()
            try:
                result = await measure(reference, room, window, args.seconds)
            finally:
                await reference.close()
            refs[(room, window)] = result
            show(result, None)
    for name in args.systems.split(","):
        if not name:
            continue
        with tempfile.TemporaryDirectory() as tmp, started(name, Path(tmp)) as servers:
            system = SecureConnect(LABELS[name], servers, args.send)
            try:
                await run_system(system, rooms, windows, args.seconds, refs)
                if args.login_burst:
                    await login_burst(system, args.seconds)
            finally:
                await system.close()
        if args.idle:
            # On a server of its own: one whose heap the load above grew would reuse that room
            # and understate what a connection costs.
            with tempfile.TemporaryDirectory() as tmp, started(name, Path(tmp)) as servers:
                system = SecureConnect(LABELS[name], servers)
                try:
                    await idle_memory(system, args.idle)
                finally:
                    await system.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--room", default="100", help="room sizes, comma-separated")
    parser.add_argument("--windows", default="1,32", help="messages in flight, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured run")
    parser.add_argument(
        "--systems",
        default="sqlite,postgresql,postgresql-2",
        help="sqlite (embedded), postgresql (1 replica + Redis), postgresql-2 (2 replicas)",
    )
    parser.add_argument(
        "--send", default="ws", choices=["ws", "http"], help="how the sender sends (default ws)"
    )
    parser.add_argument("--idle", type=int, default=0, help="also measure N idle connections")
    parser.add_argument("--login-burst", action="store_true", help="also measure during logins")
    parser.add_argument("--reference-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    if args.reference_server:
        runner(reference_server(0))
        return
    runner(main_async(args))


if __name__ == "__main__":
    main()
