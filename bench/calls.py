"""Calls: one publisher to 1, 4 and 8 subscribers, through the real Janus, end-to-end encrypted.

Every participant is a headless Chromium page (fake 640x360 camera and microphone) in a network
namespace of this benchmark's own, joined to this machine by a veth pair (WebRTC skips loopback).
The publisher sends video and sound; the subscribers answer "audio only" and mute, so what
Janus forwards is the publisher's streams to each of them.

The reference, measured in the same run, is Janus's own CPU: the figure the issue bounds is the
Python control plane's CPU as a share of it while media flows (goal: under 10%; the control
plane's being what the server spends beyond the same people online in their group with no call,
measured just before it), and the whole
SFU side of a call of 8 as a share of one core (goal: under 10%). Also printed: CPU per
forwarded video stream, bandwidth forwarded, the time from pressing "join" to the caller's first
picture on screen (p50, p95; goal under 1.5 s), and where a join spends it (the p50 of when
each step of the web client's join was reached, and for the slowest join). The subscribers answer
once the caller's camera is going up, as people answer a ring that has rung a moment: the
figure is the callee's own join. Each N is run twice (``--joins``): all N answering at once,
and one by one, each answering once the one before sees the caller (a person joining a call
already going, which is what people do most). Every run is bounded in time and stops itself.

    .venv/bin/python bench/calls.py                     # 1, 4 and 8 subscribers, 10 s each
    .venv/bin/python bench/calls.py --subscribers 8 --joins one-by-one
    .venv/bin/python bench/calls.py --subscribers 4 --seconds 5
    .venv/bin/python bench/calls.py --control-plane     # no browsers: 9 SDK devices, no media
    .venv/bin/python bench/calls.py --subscribers 8 --trace   # and where requests waited

Also printed: how busy the machine was during the joins, by program. Here the N + 1 Chromium
pages share the machine with Janus and the server, which no deployment does: a join slower than
the goal on a machine the browsers fill is their CPU, not the SFU's. ``--trace`` adds, for
each run, how long the server's event loop ran and waited for a CPU during the joins, its
latency per route (from its access log), and every page's requests that took over a second,
split into the time queued in the browser and the server's.

``--control-plane`` measures what video-service spends on a call of 9 devices that send no
media (heartbeats, the upkeep rounds, Janus's long polls), against the same process with no call
in the same run, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import QUIET
from tests.browser import pages
from tests.browser.conftest import ARGS, CHROMIUM
from tests.browser.netns import ClientNet
from tests.helpers import PASSWORD, unique
from tests.server import ServerProcess

TICKS = os.sysconf("SC_CLK_TCK")
JOIN_TIMEOUT_S = 60.0


def cpu_seconds(pid: int) -> float:
    return stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def stat_cpu(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def janus_pid(server: ServerProcess) -> int:
    assert server.proc is not None
    found = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid), "-x", "janus"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return int(found[0])


def cpu_by_program() -> dict[str, float]:
    """CPU seconds so far of every process on the machine, summed by program (Chromium's many
    processes and threads as one)."""
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            raw = (proc / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        key = "chromium" if "chrom" in name.lower() else name
        out[key] = out.get(key, 0.0) + stat_cpu(raw)
    return out


def busiest(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """The four programs that took the most CPU between two cpu_by_program() readings, each as
    a share of one core."""
    share = {k: (after[k] - before.get(k, 0.0)) / seconds for k in after}
    return dict(sorted(share.items(), key=lambda kv: -kv[1])[:4])


def run_and_wait(pid: int) -> tuple[float, float]:
    """Seconds a process's main thread (the server's event loop) so far ran on a CPU and
    waited, runnable, for one (schedstat): a loop slow for want of a CPU waits more than it runs."""
    on_cpu, on_queue = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    return int(on_cpu) / 1e9, int(on_queue) / 1e9


async def person(browser: Any, url: str) -> Any:
    ctx = await browser.new_context(permissions=["camera", "microphone"])
    page = await ctx.new_page()
    page.console_lines = []
    page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
    await page.goto(url)
    name = unique("p")
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.click("#register")
    await page.wait_for_selector("#status.online", timeout=30000)
    page.username = name
    await page.evaluate("performance.setResourceTimingBufferSize(20000)")  # for --trace
    return page


async def first_frame(page: Any) -> float:
    """Seconds from pressing "join" to the first picture of the caller on screen, as the page
    itself timed it (its "first picture" step). Asking the page is cheap: polling getStats()
    on nine pages 50 times a second, as this did before, took CPU the joins needed."""
    await page.wait_for_selector("#incoming-call", timeout=30000)
    started = time.perf_counter()
    page.pressed = await page.evaluate("performance.now()")
    await page.click("#accept-audio")
    deadline = started + JOIN_TIMEOUT_S
    while time.perf_counter() < deadline:
        shown = await page.evaluate(
            "(() => { const c = window.secureconnect.call(); "
            "return c && c.steps ? c.steps['first picture'] : undefined; })()"
        )
        if shown is not None:
            return float(shown) / 1000
        await asyncio.sleep(0.1)
    stuck = await page.evaluate("window.secureconnect.callStats()")
    raise TimeoutError(f"no picture: {stuck} {page.console_lines[-20:]}")


async def trace(
    server: ServerProcess, pages: list[Any], since: float, sched: tuple[float, float]
) -> None:
    """Where requests waited during the joins: the server's latency per route, then each page's
    requests over a second, split into queued in the browser and answered by the server."""
    assert server.proc is not None
    ran, waited = (b - a for a, b in zip(sched, run_and_wait(server.proc.pid), strict=True))
    print(
        f"    server's event loop during the joins: ran {ran:.1f} s, "
        f"waited for a CPU {waited:.1f} s"
    )
    print("    server, during the joins: requests, p50 and max ms, by route")
    for route, ms in routes(server, since, time.time())[:12]:
        ms.sort()
        print(f"      {len(ms):4d} {statistics.median(ms):7.0f} {ms[-1]:7.0f}  {route}")
    for page in pages:
        pressed = getattr(page, "pressed", None)
        requests = await page.evaluate(
            """() => performance.getEntriesByType("resource").map((e) => [
                 e.name.replace(location.origin, ""), e.startTime, e.requestStart,
                 e.responseStart, e.responseEnd])"""
        )
        slow = [
            row
            for row in requests
            if row[4] - row[1] > 1000 and (pressed is None or row[1] > pressed)
        ]
        print(f"    {page.username}: requests over 1 s (ms after join: start, queued, server, all)")
        for name, start, sent, first, end in slow:
            print(
                f"      {start - (pressed or 0):7.0f} {sent - start:6.0f} {first - sent:6.0f} "
                f"{end - start:6.0f}  {name[:80]}"
            )


def routes(server: ServerProcess, since: float, until: float) -> list[tuple[str, list[float]]]:
    """The server's requests logged between two wall-clock times: each route's latencies in
    ms, the route with the most time first."""
    start, end = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) for t in (since, until + 1))
    by_route: dict[str, list[float]] = collections.defaultdict(list)
    for line in server.logs():
        if line.get("msg") == "request" and start <= line["ts"] < end:
            by_route[f"{line['method']} {line['route']}"].append(line["latency_ms"])
    return sorted(by_route.items(), key=lambda kv: -sum(kv[1]))


async def sending(page: Any) -> None:
    """Waits until this page's camera is going up to the SFU."""
    deadline = time.perf_counter() + JOIN_TIMEOUT_S
    while time.perf_counter() < deadline:
        now = await page.evaluate("window.secureconnect.callStats()")
        if now and now["framesSent"] > 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the caller never started sending")


async def received_bytes(page: Any) -> int:
    total: int = await page.evaluate(
        """async () => { const c = window.secureconnect.call(); let n = 0;
             if (c && c.sub) for (const r of (await c.sub.getStats()).values())
               if (r.type === "inbound-rtp") n += r.bytesReceived || 0;
             return n; }"""
    )
    return total


async def one_run(
    browser: Any,
    server: ServerProcess,
    subscribers: int,
    seconds: float,
    tracing: bool,
    one_by_one: bool,
) -> dict[str, float]:
    publisher = await person(browser, server.url)
    others = [await person(browser, server.url) for _ in range(subscribers)]
    try:
        await publisher.click("#new-conversation")
        await publisher.fill("#new-people", ", ".join(p.username for p in others))
        await publisher.fill("#new-name", f"bench {subscribers}")
        await publisher.click("#new-start")
        await publisher.wait_for_selector("#call-video", timeout=20000)
        for p in others:  # a stranger's call does not ring a message request
            await pages.accept_request(p, f"bench {subscribers}")
        # The same people online in their group, no call yet: what the server spends on them
        # anyway (their event streams, their chat), which a call's control plane does not add.
        assert server.proc is not None
        await asyncio.sleep(2)
        i0, iw0 = cpu_seconds(server.proc.pid), time.perf_counter()
        await asyncio.sleep(seconds)
        online = (cpu_seconds(server.proc.pid) - i0) / (time.perf_counter() - iw0)
        await publisher.click("#call-video")
        # People answer a ring after it has rung a moment, by when the caller is sending: the
        # join time measured is the callee's own, not the caller's set-up as well.
        await sending(publisher)
        c0, w0, wall0 = cpu_by_program(), time.perf_counter(), time.time()
        sched = run_and_wait(server.proc.pid)
        try:
            if one_by_one:  # each joins a call the ones before are in, media flowing to them
                joins = [await first_frame(p) for p in others]
            else:
                joins = list(await asyncio.gather(*(first_frame(p) for p in others)))
            c1, w1 = cpu_by_program(), time.perf_counter()
        except TimeoutError:
            if tracing:
                await trace(server, [publisher, *others], wall0, sched)
            for p in [publisher, *others]:
                lock = await p.evaluate("""() => { const c = window.secureconnect.call();
                    if (!c) return "no call";
                    return Promise.race([c.secure.lock.then(() => "free"),
                      new Promise((r) => setTimeout(() => r("stuck"), 2000))]); }""")
                print(p.username, lock, p.console_lines[-15:], file=sys.stderr)
            raise
        if tracing:
            await trace(server, [publisher, *others], wall0, sched)
        busy = busiest(c0, c1, w1 - w0)
        steps: dict[str, list[float]] = {}
        reached = [(await p.evaluate("window.secureconnect.callStats()"))["steps"] for p in others]
        for page_steps in reached:
            for name, ms in page_steps.items():
                steps.setdefault(name, []).append(ms / 1000)
        slowest = reached[joins.index(max(joins))]
        for p in others:
            await p.click("#toggle-mic")
        await asyncio.sleep(2 + subscribers / 2)  # joins finish, the bitrate settles
        janus = janus_pid(server)
        assert server.proc is not None
        j0, p0, w0 = cpu_seconds(janus), cpu_seconds(server.proc.pid), time.perf_counter()
        m0 = cpu_by_program()
        flowing = time.time()
        b0 = sum([await received_bytes(p) for p in others])
        await asyncio.sleep(seconds)
        b1 = sum([await received_bytes(p) for p in others])
        j1, p1, w1 = cpu_seconds(janus), cpu_seconds(server.proc.pid), time.perf_counter()
        flowing_busy = busiest(m0, cpu_by_program(), w1 - w0)
        wall = w1 - w0
        if tracing:
            print(f"    server, while media flowed ({wall:.0f} s): requests a second, by route")
            for route, ms in routes(server, flowing, time.time()):
                print(f"      {len(ms) / wall:6.2f}  {route}")
        failures = 0
        for p in [publisher, *others]:
            failures += (await p.evaluate("window.secureconnect.callStats()"))["decryptFailures"]
        joins_sorted = sorted(joins)
        return {
            "janus_core": (j1 - j0) / wall,
            "python_core": (p1 - p0) / wall,
            "python_online": online,
            "mbit_s": (b1 - b0) * 8 / wall / 1e6,
            "join_p50": statistics.median(joins_sorted),
            "join_p95": joins_sorted[min(len(joins_sorted) - 1, int(0.95 * len(joins_sorted)))],
            "decrypt_failures": failures,
            **{f"step {name}": statistics.median(v) for name, v in steps.items()},
            **{f"slowest {name}": ms / 1000 for name, ms in slowest.items()},
            **{f"busy {k}": v for k, v in busy.items()},
            **{f"flowing {k}": v for k, v in flowing_busy.items()},
        }
    finally:
        for p in [publisher, *others]:
            await p.context.close()


async def control_plane(seconds: float, backend: str) -> None:
    """A call of 9 SDK devices heartbeating as browsers do, no media: the control plane alone."""
    from tests.conftest import backend_env, drop_database
    from tests.helpers import signed_up

    from secureconnect.client import Client

    env, database = backend_env(backend)
    env.update({**QUIET, "SECURECONNECT_SFU": "true", "SECURECONNECT_TURN": "false"})
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), env).start()
        assert server.proc is not None
        pid = server.proc.pid
        clients: list[Client] = []
        beating: list[asyncio.Task[None]] = []
        try:
            names = [unique("p") for _ in range(9)]
            clients = [await signed_up(Client(server.url), n) for n in names]
            group = await clients[0].create_group(names[1:], "bench")
            await asyncio.sleep(2)
            c0, w0 = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(seconds)
            idle = (cpu_seconds(pid) - c0) / (time.perf_counter() - w0)
            call = await clients[0].start_call(group.id)
            for client in clients:
                deadline = time.monotonic() + JOIN_TIMEOUT_S
                while True:
                    try:
                        await client.join_call(call.id)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.3)

            async def beat(client: Client) -> None:
                for _ in range(int(seconds / 10) + 3):  # every 10 s, as the web client does
                    await client.call_heartbeat(call.id)
                    await asyncio.sleep(10)

            beating = [asyncio.create_task(beat(c)) for c in clients]
            await asyncio.sleep(3)
            c0, w0 = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(seconds)
            during = (cpu_seconds(pid) - c0) / (time.perf_counter() - w0)
            print(
                f"  {backend:10s} server %core: no call {100 * idle:.2f}, a call of 9 without "
                f"media {100 * during:.2f} ({during / idle:.2f}x the same process with no call),"
                f" added {100 * (during - idle):.2f}",
                flush=True,
            )
        finally:
            for task in beating:
                task.cancel()
            for client in clients:
                await client.aclose()
            server.stop()
            drop_database(database)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--control-plane", action="store_true", help="9 SDK devices, no media, no browsers"
    )
    parser.add_argument(
        "--trace", action="store_true", help="where requests waited during the joins"
    )
    parser.add_argument(
        "--joins",
        choices=["together", "one-by-one", "both"],
        default="both",
        help="the N answer the ring at once, or each once the one before sees the caller",
    )
    args = parser.parse_args()
    if args.control_plane:
        print("video-service with 9 SDK devices in a call, heartbeats every 10 s, no media")
        for backend in ("sqlite", "postgresql"):
            await control_plane(max(args.seconds, 30.0), backend)
        return
    from playwright.async_api import async_playwright

    with ClientNet.create() as net, tempfile.TemporaryDirectory() as tmp:
        env = {
            **QUIET,
            "SECURECONNECT_HOST": net.host_ip,
            "SECURECONNECT_SFU": "true",
            "SECURECONNECT_MEDIA_ADDRESS": net.host_ip,
            "SECURECONNECT_TURN_PORT": "0",
            "SECURECONNECT_MEDIA_PROBE_PORT": "0",
            "SECURECONNECT_ARGON2_MEMORY_KIB": "12288",  # logins are not what is measured here
            "SECURECONNECT_ARGON2_PARALLELISM": "1",
        }
        if args.trace:
            env["SECURECONNECT_LOG_LEVEL"] = "INFO"  # the access log: each request's latency
        server = ServerProcess(Path(tmp) / "server", env)
        server.data_dir.mkdir()
        server.start().wait_media()
        wrapper = net.wrapper(Path(tmp), CHROMIUM)
        flags = [
            *ARGS,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--unsafely-treat-insecure-origin-as-secure={server.url}",
        ]
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=str(wrapper), args=flags)
                # What the Python process spends with no call at all: its own upkeep, which a
                # call does not add to.
                assert server.proc is not None
                i0, w0 = cpu_seconds(server.proc.pid), time.perf_counter()
                await asyncio.sleep(args.seconds)
                idle = (cpu_seconds(server.proc.pid) - i0) / (time.perf_counter() - w0)
                print(f"python process with no one online: {100 * idle:.2f}% of a core")
                print("one publisher (640x360 video + audio) to N subscribers, SFrame end to end")
                print(
                    f"{'N':>3} {'janus %core':>12} {'python added':>13} {'python/janus':>13} "
                    f"{'SFU %core/stream':>17} {'Mbit/s fwd':>11} "
                    f"{'join p50 s':>11} {'join p95 s':>11}"
                )
                modes = ["together", "one-by-one"] if args.joins == "both" else [args.joins]
                for n, mode in [(n, mode) for n in args.subscribers for mode in modes]:
                    print(f"  joins {mode}:")
                    r = await one_run(
                        browser, server, n, args.seconds, args.trace, mode == "one-by-one"
                    )
                    # What the call adds: over the same people online with no call.
                    r["python_core"] = max(0.0, r["python_core"] - r["python_online"])
                    ratio = r["python_core"] / r["janus_core"] if r["janus_core"] else float("inf")
                    per_stream = (r["janus_core"] + r["python_core"]) / n
                    print(
                        f"{n:>3} {100 * r['janus_core']:>12.2f} {100 * r['python_core']:>13.2f} "
                        f"{ratio:>13.2f} {100 * per_stream:>17.2f} {r['mbit_s']:>11.2f} "
                        f"{r['join_p50']:>11.2f} {r['join_p95']:>11.2f}"
                        + (
                            f"  ({r['decrypt_failures']} decrypt failures)"
                            if r["decrypt_failures"]
                            else ""
                        )
                    )
                    print(
                        f"    python with these {n + 1} people online and no call: "
                        f"{100 * r['python_online']:.2f}% of a core (what 'python added' is over)"
                    )
                    for label, prefix in (("p50", "step "), ("the slowest", "slowest ")):
                        reached = sorted(
                            (v, k[len(prefix) :]) for k, v in r.items() if k.startswith(prefix)
                        )
                        print(
                            f"    where a join goes ({label}, s after pressing join): "
                            + ", ".join(f"{name} {v:.2f}" for v, name in reached)
                        )
                    for label, prefix in (
                        ("during the joins", "busy "),
                        ("while media flowed", "flowing "),
                    ):
                        print(
                            f"    the machine {label} (% of a core, of "
                            f"{100 * (os.cpu_count() or 1)}): "
                            + ", ".join(
                                f"{k[len(prefix) :]} {100 * v:.0f}"
                                for k, v in r.items()
                                if k.startswith(prefix)
                            )
                        )
                await browser.close()
        finally:
            server.stop()
    print(
        "goals: python/janus < 0.10; a call of 8: (janus + python) < 10% of a core;"
        " join p50/p95 < 1.5 s"
    )


if __name__ == "__main__":
    asyncio.run(main())
