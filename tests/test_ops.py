"""Health, readiness and metrics, as Kubernetes, Prometheus and the runbook read them."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.helpers import call, error_of, listening
from tests.server import ServerProcess


def metric(text: str, name: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    ]
    assert values, f"{name} not exported"
    return sum(values)


async def test_health_ready_and_the_runbook_metrics(server, user) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": "ok", "bus": "ok"}
    alice, bob = await user("alice"), await user("bob")
    conv = await alice.direct(bob.login_info.username)
    before = metric(
        httpx.get(server.url + "/metrics").text, "secureconnect_messages_accepted_total"
    )
    async with listening(bob):
        await alice.send(conv.id, b"counted", content_type="text/plain")
        text = httpx.get(server.url + "/metrics").text
        assert metric(text, "secureconnect_websocket_connections") >= 1
        assert metric(text, "secureconnect_active_users") >= 1
    assert metric(text, "secureconnect_messages_accepted_total") == before + 1
    assert metric(text, "go_sql_connections_max_open") == 20  # pool 10 + overflow 10 by default
    assert metric(text, "go_sql_connections_in_use") >= 0
    assert 'route="/v1/conversations/{conversation_id}/messages"' in text
    assert "secureconnect_http_request_duration_seconds_bucket" in text
    assert "go_sql_connections_wait_count_total" in text


def test_openapi_and_landing_page_are_served(server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/auth/login" in spec["paths"] and "/v1/conversations" in spec["paths"]
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "SecureConnect" in page.text


def test_every_answer_carries_the_security_headers_and_no_server_name(own_server) -> None:
    """The web client's own policy allows only its own scripts and styles and no framing; the
    status page allows its one inline style by hash; HSTS only over TLS (the forwarded scheme
    from a trusted proxy); nothing says which server software runs it."""
    import base64
    import hashlib
    import re

    own_server.extra_env["SECURECONNECT_TRUSTED_PROXIES"] = '["127.0.0.1"]'
    srv = own_server.start()
    with httpx.Client(base_url=srv.url) as http:
        for path in ("/", "/static/js/app.js", "/v1/conversations", "/healthz", "/no-such-page"):
            answer = http.get(path)
            assert "server" not in answer.headers, path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["referrer-policy"] == "no-referrer", path
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path
            assert "strict-transport-security" not in answer.headers, path
        over_tls = http.get("/", headers={"X-Forwarded-Proto": "https"})
        assert over_tls.headers["strict-transport-security"].startswith("max-age=")
        status = http.get("/status")
        policy = status.headers["content-security-policy"]
        assert policy.startswith("default-src 'none'") and "script-src" not in policy
        style = re.search(r"<style>(.*?)</style>", status.text, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in policy
        # The API viewer comes from the package, under the same policy: no CDN, no inline script.
        docs = http.get("/docs")
        assert (
            docs.headers["content-security-policy"]
            == http.get("/").headers["content-security-policy"]
        )
        assert "http" not in docs.text.replace("http-equiv", "")  # every URL is this origin's
        assert "<script>" not in docs.text
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/start.js"):
            assert http.get(asset).status_code == 200
        assert http.get("/redoc").status_code == 404


def test_unreachable_database_means_not_ready_and_503_never_500(tmp_path) -> None:
    srv = ServerProcess(
        tmp_path,
        {
            "SECURECONNECT_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
            "SECURECONNECT_AUTO_MIGRATE": "false",
            "SECURECONNECT_DB_POOL_TIMEOUT_S": "2",
        },
    )
    srv.wait_ready = lambda timeout: None  # it must start, yet never become ready
    srv.start()
    try:
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"].startswith("failed")
        assert httpx.get(srv.url + "/healthz").status_code == 200
        login = call(srv, "POST", "/v1/auth/login", json={"username": "x" * 3, "password": "y" * 9})
        assert error_of(login) == (503, "store_unavailable")
        assert "Traceback" not in login.text
    finally:
        srv.stop()


async def test_an_exhausted_pool_is_visible_and_answered_with_503(tmp_path, make_user) -> None:
    """Runbook 23.5 step 3: in use reaches max open; requests wait, then get a clear 503, the
    log says so, and the go_sql_connections_* chart shows it."""
    from tests.conftest import backend_env, drop_database

    env, database = backend_env("postgresql")
    env.update(
        {
            "SECURECONNECT_DB_POOL_SIZE": "1",
            "SECURECONNECT_DB_MAX_OVERFLOW": "0",
            "SECURECONNECT_DB_POOL_TIMEOUT_S": "0.05",
        }
    )
    srv = ServerProcess(tmp_path, env).start()
    try:
        alice = await make_user(srv, "alice")
        headers = {"Authorization": f"Bearer {alice.token}"}
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            answers = await asyncio.gather(
                *[http.get("/v1/conversations", headers=headers) for _ in range(40)]
            )
        statuses = {r.status_code for r in answers}
        assert statuses <= {200, 503}
        assert 503 in statuses
        refused = next(r for r in answers if r.status_code == 503)
        assert refused.json()["error"]["code"] == "db_pool_exhausted"
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "go_sql_connections_max_open") == 1
        assert metric(text, "go_sql_connections_wait_count_total") > 0
        lines = [e for e in srv.logs() if e.get("msg") == "db pool exhausted"]
        assert lines
        assert lines[0]["max_open"] == 1
    finally:
        srv.stop()
        drop_database(database)


@pytest.mark.slow  # PostgreSQL
async def test_a_query_cut_off_by_the_database_is_a_503_and_reads_are_retried(
    tmp_path, make_user
) -> None:
    """Issue 15: the database going away *during* a query (a restart, a failover) answers the
    documented 503, not a 500; the SDK tries a read again and gets its answer once the database
    is back."""
    from sqlalchemy import text

    from secureconnect.store import Database, StoreUnavailable
    from tests.conftest import backend_env, drop_database
    from tests.server import run_statements

    env, name = backend_env("postgresql")
    url = env["SECURECONNECT_DATABASE_URL"]
    admin = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}
    cut = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    db = Database(url)
    try:

        async def long_read() -> None:
            async with db.read() as conn:
                await conn.execute(text("SELECT pg_sleep(10)"))

        reading = asyncio.create_task(long_read())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(run_statements, cut, **admin)
        try:
            await asyncio.wait_for(reading, 5)
            raise AssertionError("the cut query returned")
        except StoreUnavailable as error:
            assert error.code == "store_unavailable"
        await db.close()

        srv = ServerProcess(tmp_path, env).start()
        try:
            alice = await make_user(srv, "alice")
            await asyncio.to_thread(
                run_statements, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false', cut, **admin
            )
            auth = {"Authorization": f"Bearer {alice.token}"}
            direct = httpx.get(srv.url + "/v1/conversations", headers=auth)
            back = asyncio.create_task(alice.conversations())  # retried while it is away
            await asyncio.sleep(1.0)
            await asyncio.to_thread(
                run_statements, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true', **admin
            )
            assert await asyncio.wait_for(back, 10) == []
        finally:
            srv.stop()
        assert error_of(direct) == (503, "store_unavailable")  # what a plain client is told
        assert "Traceback" not in direct.text
    finally:
        await asyncio.to_thread(
            run_statements, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true', **admin
        )
        drop_database(name)


def test_slow_headers_and_bodies_are_cut_off_and_others_are_served(tmp_path) -> None:
    """Issue 15 (slowloris): a byte at a time keeps nothing open for long."""
    import socket
    import time

    srv = ServerProcess(
        tmp_path, {"SECURECONNECT_HEADER_TIMEOUT_S": "2", "SECURECONNECT_BODY_TIMEOUT_S": "2"}
    ).start()
    host, port = "127.0.0.1", srv.port

    def held_for(first: bytes, then: bytes) -> float:
        """Sends ``first``, then ``then`` a byte a second; how long until the server closes."""
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(first)
            started = time.monotonic()
            for byte in then:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                sock.settimeout(1.0)
                try:
                    if sock.recv(1024) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset: it closed with our last byte unread, closed all the same
                    break
            return time.monotonic() - started

    try:
        slow_headers = held_for(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 30)
        assert slow_headers < 5
        slow_body = held_for(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{",
            b"a" * 30,
        )
        assert slow_body < 5
        assert httpx.get(srv.url + "/healthz").status_code == 200  # the others are served
        cut = [e for e in srv.logs() if e.get("msg") == "slow client cut off"]
        assert {e["waiting_for"] for e in cut} == {"headers", "body"}
        assert not any(e.get("status", 0) >= 500 or e["level"] == "error" for e in srv.logs())
    finally:
        srv.stop()


def test_unexpected_errors_reach_sentry_without_secrets(tmp_path) -> None:
    """Issue 15: with SECURECONNECT_SENTRY_DSN set, an error the service logs (here the database
    being unreachable) reaches a Sentry receiver (a local one speaking Sentry's envelope
    protocol); the password and the token of the request that met it do not."""
    import gzip
    import http.server
    import threading

    received: list[bytes] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.append(body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    sentry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=sentry.serve_forever, daemon=True).start()
    srv = ServerProcess(
        tmp_path,
        {
            "SECURECONNECT_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
            "SECURECONNECT_AUTO_MIGRATE": "false",
            "SECURECONNECT_DB_POOL_TIMEOUT_S": "2",
            "SECURECONNECT_SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry.server_port}/1",
        },
    )
    srv.wait_ready = lambda timeout: None
    srv.start()
    try:
        password = "correct horse battery staple sentinel"
        login = call(
            srv, "POST", "/v1/auth/login", json={"username": "alice", "password": password}
        )
        assert error_of(login) == (503, "store_unavailable")
        token = "Bearer sentinel-token-value-1234567890"
        httpx.get(srv.url + "/v1/conversations", headers={"Authorization": token})
    finally:
        srv.stop()  # Sentry's client flushes as the process exits
        sentry.shutdown()
    everything = b"\n".join(received)
    assert b"database unreachable" in everything
    assert b"sentinel" not in everything  # neither the password nor the token
