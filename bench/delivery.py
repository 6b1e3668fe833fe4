"""Messages per second and send-to-deliver latency through a real server.

Starts `secureconnect serve` on the embedded default (or uses --url), connects receivers with the
SDK's event stream, and has senders post messages concurrently. Each message's latency is from
the moment its send began to the moment its receiver got it over the WebSocket, so it includes the
durable commit. As a reference measured in the same run, it also times an empty request
(`GET /healthz`) so that the figures can be read as a multiple of the bare HTTP round trip.

    .venv/bin/python bench/delivery.py [--pairs 10] [--messages 50] [--url http://...]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import embedded, on_postgresql
from tests.helpers import Listener

from secureconnect.client import Client, Message

PASSWORD = "benchmark password"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def reference_rtt(url: str, rounds: int = 200) -> float:
    async with httpx.AsyncClient(base_url=url) as http:
        await http.get("/healthz")
        started = time.perf_counter()
        for _ in range(rounds):
            await http.get("/healthz")
        return (time.perf_counter() - started) / rounds


async def run(urls: list[str], pairs: int, messages: int) -> dict[str, float]:
    tag = secrets.token_hex(3)
    senders, receivers, convs = [], [], []
    for i in range(pairs):
        # Senders and receivers on different replicas when there are several.
        a, b = Client(urls[i % len(urls)]), Client(urls[(i + 1) % len(urls)])
        for client, name in ((a, f"s{tag}{i}"), (b, f"r{tag}{i}")):
            await client.register(name, PASSWORD)
            await client.login(name, PASSWORD)
        senders.append(a)
        receivers.append(b)
        convs.append((await a.direct(f"r{tag}{i}")).id)
    listeners = [await Listener(b).start() for b in receivers]
    started_at: dict[str, float] = {}
    delivered_at: dict[str, float] = {}

    def on_event(listener: Listener) -> None:
        for event, arrived in zip(listener.events, listener.arrived, strict=True):
            if isinstance(event, Message) and event.kind == "message":
                key = event.body.decode()
                if not key.startswith("solo:"):
                    delivered_at.setdefault(key, arrived)

    async def send_all(i: int) -> None:
        for n in range(messages):
            key = f"{i}:{n}"
            started_at[key] = time.perf_counter()
            await senders[i].send(convs[i], key.encode(), content_type="text/plain")

    rtt = await reference_rtt(urls[0])
    # Unloaded: one message at a time, each awaited until delivered.
    unloaded = []
    for n in range(30):
        key = f"solo:{n}"
        start = time.perf_counter()
        await senders[0].send(convs[0], key.encode(), content_type="text/plain")
        body = key.encode()
        await listeners[0].wait_for(
            lambda s, body=body: any(
                isinstance(e, Message) and e.body == body for e in s.events[-5:]
            )
        )
        unloaded.append((time.perf_counter() - start) * 1000)
    t0 = time.perf_counter()
    await asyncio.gather(*(send_all(i) for i in range(pairs)))
    total = pairs * messages
    for i, listener in enumerate(listeners):
        want = messages + (30 if i == 0 else 0)  # the first pair also carried the unloaded run
        await listener.wait_for(lambda s, want=want: len(s.messages()) >= want, timeout=120)
    for listener in listeners:
        on_event(listener)
    elapsed = max(delivered_at.values()) - t0
    latencies = [(delivered_at[k] - started_at[k]) * 1000 for k in delivered_at]
    for listener in listeners:
        await listener.stop()
    for client in senders + receivers:
        await client.aclose()
    print(
        f"unloaded send-to-deliver latency ms: p50 {statistics.median(unloaded):.1f}  "
        f"max {max(unloaded):.1f}"
    )
    print(
        f"saturated workload: {pairs} sender/receiver pairs x {messages} messages = {total}, "
        f"{pairs} concurrent senders"
    )
    print(f"delivered: {len(delivered_at)}/{total}")
    print(f"throughput: {len(delivered_at) / elapsed:.0f} messages/s")
    print(
        f"send-to-deliver latency ms: p50 {statistics.median(latencies):.1f}  "
        f"p99 {pct(latencies, 0.99):.1f}  max {max(latencies):.1f}"
    )
    print(
        f"reference: empty request round trip {rtt * 1000:.2f} ms; "
        f"p50 delivery = {statistics.median(latencies) / (rtt * 1000):.1f}x that"
    )
    return {"throughput": len(delivered_at) / elapsed, "p99": pct(latencies, 0.99)}


def scaled(replicas: int, pairs: int, messages: int) -> dict[str, float]:
    """Replicas on one fresh PostgreSQL database and a redis-server of our own."""
    with tempfile.TemporaryDirectory() as tmp, on_postgresql(Path(tmp), replicas) as servers:
        print(f"\nserver: {replicas} replica(s) on PostgreSQL + Redis")
        return asyncio.run(run([srv.url for srv in servers], pairs, messages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="N replicas on PostgreSQL + Redis instead of the embedded default",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="1 then 2 replicas on PostgreSQL + Redis, same workload",
    )
    args = parser.parse_args()
    if args.url:
        asyncio.run(run([args.url], args.pairs, args.messages))
        return
    if args.compare:
        one = scaled(1, args.pairs, args.messages)
        two = scaled(2, args.pairs, args.messages)
        print(
            f"\n2 replicas vs 1: throughput x{two['throughput'] / one['throughput']:.2f}, "
            f"p99 x{two['p99'] / one['p99']:.2f} (same machine: 2 cores shared by all)"
        )
        return
    if args.replicas:
        scaled(args.replicas, args.pairs, args.messages)
        return
    with tempfile.TemporaryDirectory() as tmp, embedded(Path(tmp)) as (server,):
        print(f"server: embedded default (SQLite, in-process bus) at {server.url}")
        asyncio.run(run([server.url], args.pairs, args.messages))


if __name__ == "__main__":
    main()
