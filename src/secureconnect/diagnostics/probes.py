"""Checks made from where the tool runs: a real STUN binding request (RFC 5389), a UDP port check
like ``nc -uz``, and the service's own endpoints (readiness, metrics, the admin reports)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from secureconnect.client import ApiError, Client
from secureconnect.diagnostics.facts import Facts, Probe, Rollout, Suggestions
from secureconnect.stun import TurnClient, TurnRefused, stun_binding
from secureconnect.video.turn import credentials


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or ``stun:host:port`` / ``turn:host:port``."""
    for scheme in ("stun:", "turn:", "turns:"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("?", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def udp_port(host: str, port: int, timeout: float = 1.0) -> tuple[bool, str]:
    """Like ``nc -uz``: a closed port answers with ICMP "port unreachable"; silence means open or
    filtered (UDP cannot tell the two apart)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            for _ in range(2):
                sock.send(b"\0")
                with contextlib.suppress(TimeoutError):
                    sock.recv(1)
                    return True, "open (answered)"
        except ConnectionRefusedError:
            return False, "closed (ICMP port unreachable)"
    return True, "open or filtered (no refusal)"


async def turn_probe(address: str, secret: str | None = None) -> Probe:
    """With coturn's shared secret (``SECURECONNECT_TURN_SECRET``): a real allocation with a
    credential minted as a call would, which proves coturn relays and agrees on the secret.
    Without it: a STUN binding, which proves only that it answers."""
    host, port = split_host_port(address, 3478)
    where = f"{host}:{port}"
    if secret:
        return await asyncio.to_thread(_allocate, host, port, secret)
    try:
        mapped = await asyncio.to_thread(stun_binding, host, port)
        return Probe(
            where,
            True,
            f"answered a STUN binding request (saw us as {mapped}); "
            "set SECURECONNECT_TURN_SECRET to try a real allocation",
        )
    except TimeoutError:
        return Probe(where, False, "no answer to a STUN binding request in 2 s")
    except OSError as error:
        return Probe(where, False, f"STUN binding failed: {error}")


def _allocate(host: str, port: int, secret: str) -> Probe:
    where = f"{host}:{port}"
    name, password = credentials(secret, "oncall-diagnose", 300, time.time())
    turn = TurnClient(host, port, name, password)
    try:
        relayed = turn.allocate()
        return Probe(where, True, f"allocated a TURN relay at {relayed} with a call's credential")
    except TurnRefused as error:
        if error.code == 401:
            return Probe(
                where,
                False,
                "refused the credential (401): SECURECONNECT_TURN_SECRET differs from "
                "coturn's static-auth-secret",
            )
        return Probe(where, False, f"refused the allocation: {error}")
    except TimeoutError:
        return Probe(where, False, "no answer to a TURN allocation in 2 s")
    except OSError as error:
        return Probe(where, False, f"TURN allocation failed: {error}")
    finally:
        turn.close()


async def udp_probe(address: str) -> Probe:
    """video-service answers STUN on its media probe port: an answer proves the UDP path end to
    end. Without one, the ``nc -uz`` check tells a refusal (nothing listens) from silence (a
    filter drops it)."""
    host, port = split_host_port(address, 5004)
    with contextlib.suppress(OSError, TimeoutError):
        mapped = await asyncio.to_thread(stun_binding, host, port, 1.0)
        return Probe(
            f"{host}:{port}", True, f"answered a STUN binding request (saw us as {mapped})"
        )
    try:
        _, detail = await asyncio.to_thread(udp_port, host, port)
    except OSError as error:
        detail = str(error)
    # video-service always answers here, so silence is a failure too: filtered, or not ours.
    return Probe(f"{host}:{port}", False, f"no answer to a STUN binding request; {detail}")


async def read_endpoints(facts: Facts, url: str) -> bool:
    """Readiness, pool and store errors from one replica's public endpoints. False when it did
    not answer at all (refused, timed out): then nothing else there is worth asking for."""
    async with httpx.AsyncClient(base_url=url, timeout=3.0) as http:
        try:
            ready = await http.get("/readyz")
        except httpx.TransportError as error:
            facts.gaps.append(f"{url}/readyz: {type(error).__name__}")
            return False
        try:
            checks = dict(ready.json().get("checks", {}))
            checks.pop("draining", None)
            merged = facts.readiness or {}
            for name, value in checks.items():  # a failure on any replica wins, and says where
                if merged.get(name, "ok") == "ok":
                    merged[name] = value if value == "ok" else f"{value} at {url}"
            facts.readiness = merged
        except (httpx.HTTPError, ValueError) as error:
            facts.gaps.append(f"{url}/readyz: {type(error).__name__}")
        try:
            metrics = (await http.get("/metrics")).text
            pool, errors = parse_metrics(metrics)
            facts.pool = merge_pool(facts.pool, pool)
            for code, count in errors.items():
                facts.store_errors[code] = facts.store_errors.get(code, 0) + count
        except (httpx.HTTPError, ValueError) as error:
            facts.gaps.append(f"{url}/metrics: {type(error).__name__}")
            metrics = ""
        await read_suggestions(facts, http, url, metrics)
    return True


async def read_suggestions(facts: Facts, http: httpx.AsyncClient, url: str, metrics: str) -> None:
    """The pack this replica serves, fetched and hashed as a web client would (runbook 23.2)."""
    try:
        manifest = await http.get("/v1/suggest")
        if manifest.status_code == 404:
            return  # a role that does not serve the web client
        seen = facts.suggestions = facts.suggestions or Suggestions()
        if manifest.status_code != 200:
            error = manifest.json().get("error", {})
            seen.broken.append(f"{url}: {error.get('message', manifest.status_code)}")
            return
        body = manifest.json()
        pack = await http.get(body["url"])
        if pack.status_code != 200 or hashlib.sha256(pack.content).hexdigest() != body["sha256"]:
            seen.broken.append(f"{url}: the pack served does not match its hash")
            return
        seen.served += 1
        seen.versions.add(str(body["version"]))
    except (httpx.HTTPError, ValueError, KeyError) as error:
        facts.gaps.append(f"{url}/v1/suggest: {type(error).__name__}")
        return
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "secureconnect_suggest_load_failures_total":
                seen.load_failures += sample.value
            elif sample.name == "secureconnect_suggest_shown_total":
                seen.shown += sample.value
            elif sample.name == "secureconnect_suggest_taken_total":
                seen.taken += sample.value


async def read_reports(facts: Facts, client: Client) -> None:
    """The admin reports: the database as the service sees it, and the security report."""
    try:
        facts.store = await client.store_report()
    except (ApiError, httpx.HTTPError) as error:
        facts.gaps.append(f"store report: {getattr(error, 'message', type(error).__name__)}")
    try:
        facts.security = await client.security_report()
    except (ApiError, httpx.HTTPError) as error:
        facts.gaps.append(f"security report: {getattr(error, 'message', type(error).__name__)}")


async def read_deploys(facts: Facts, client: Client) -> None:
    try:
        for d in await client.deploys(3600):
            facts.rollouts.append(Rollout(d.role, d.release, d.previous, d.started_at))
    except (ApiError, httpx.HTTPError) as error:
        facts.gaps.append(f"deploy history: {getattr(error, 'message', type(error).__name__)}")


def parse_metrics(text: str) -> tuple[tuple[int, int] | None, dict[str, int]]:
    values: dict[str, float] = {}
    errors: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("go_sql_connections_in_use", "go_sql_connections_max_open"):
                values[sample.name] = sample.value
            elif sample.name == "secureconnect_store_errors_total":
                errors[sample.labels["code"]] = int(sample.value)
    pool = None
    if len(values) == 2:
        pool = (
            int(values["go_sql_connections_in_use"]),
            int(values["go_sql_connections_max_open"]),
        )
    return pool, errors


def merge_pool(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    """The fuller of two replicas' pools: saturation anywhere is what matters."""
    if a is None or b is None:
        return a or b
    return a if a[0] / max(a[1], 1) >= b[0] / max(b[1], 1) else b
