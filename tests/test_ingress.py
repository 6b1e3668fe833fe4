"""The production shape on one machine: nginx (the ingress) routes by path to one api-gateway
and two chat-service processes on PostgreSQL and Redis. A chat-service killed mid-stream: its
devices reconnect through the ingress to the other one, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from secureconnect.client import Client
from tests.conftest import backend_env, drop_database, in_ci
from tests.helpers import PASSWORD, Listener
from tests.server import RedisProcess, ServerProcess, free_port

pytestmark = pytest.mark.slow  # a process per role behind nginx

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream gateway {{ server 127.0.0.1:{gateway}; }}
  upstream chat {{
    server 127.0.0.1:{chat1} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:{chat2} max_fails=1 fail_timeout=30s;
  }}
  server {{
    listen 127.0.0.1:{port};
    proxy_next_upstream error timeout;
    location /v1/conversations {{ proxy_pass http://chat; }}
    location = /v1/events {{
      proxy_pass http://chat;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
    }}
    location / {{ proxy_pass http://gateway; }}
  }}
}}
"""


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[tuple[str, list[ServerProcess]]]:
    for tool in ("nginx", "redis-server"):
        if not shutil.which(tool):
            if in_ci():
                pytest.fail(f"{tool} is required in CI")
            pytest.skip(f"{tool} not installed")
    redis = RedisProcess()
    redis.start()
    env, database = backend_env("postgresql")
    env["SECURECONNECT_REDIS_URL"] = redis.url
    roles = {"gateway": "api-gateway", "chat1": "chat-service", "chat2": "chat-service"}
    procs = {}
    for name, role in roles.items():
        (tmp_path / name).mkdir()
        procs[name] = ServerProcess(tmp_path / name, {**env, "SECURECONNECT_ROLE": role}).start()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp_path,
            port=port,
            gateway=procs["gateway"].port,
            chat1=procs["chat1"].port,
            chat2=procs["chat2"].port,
        )
    )
    nginx = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url, [procs["gateway"], procs["chat1"], procs["chat2"]]
    nginx.terminate()
    nginx.wait()
    for proc in procs.values():
        proc.stop()
    redis.stop()
    drop_database(database)


def test_each_role_serves_only_its_routes(ingress) -> None:
    _, (gateway, chat, _) = ingress
    assert httpx.post(gateway.url + "/v1/conversations", json={}).status_code == 404
    assert httpx.post(chat.url + "/v1/auth/login", json={}).status_code == 404
    for proc in (gateway, chat):
        assert httpx.get(proc.url + "/readyz").status_code == 200
        assert "go_sql_connections_max_open" in httpx.get(proc.url + "/metrics").text


async def test_a_chat_service_killed_mid_stream_loses_nothing(ingress) -> None:
    url, (_, chat1, chat2) = ingress
    alice, bob = Client(url), Client(url)
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            await client.register(name, PASSWORD)
            await client.login(name, PASSWORD)
        conv = (await alice.direct("bob")).id
        a_rx, b_rx = await Listener(alice).start(), await Listener(bob).start()
        counts = [
            float(line.split()[-1])
            for proc in (chat1, chat2)
            for line in httpx.get(proc.url + "/metrics").text.splitlines()
            if line.startswith("secureconnect_websocket_connections ")
        ]
        assert sum(counts) == 2  # both devices are connected through the ingress
        victim = chat1 if counts[0] >= counts[1] else chat2  # the one holding devices
        acked = []
        try:
            for i in range(10):
                acked.append(await alice.send(conv, f"m{i}".encode(), content_type="text/plain"))
            await b_rx.wait_messages(conv, 10)
            victim.kill()  # SIGKILL mid-stream
            for i in range(10, 20):
                acked.append(await alice.send(conv, f"m{i}".encode(), content_type="text/plain"))
                await asyncio.sleep(0.02)
            got = await b_rx.wait_messages(conv, 20, timeout=30)
            await asyncio.sleep(0.5)
            assert [m.seq for m in b_rx.messages(conv)] == [m.seq for m in acked]
            assert [m.seq for m in got] == [m.seq for m in acked]
            assert [m.seq for m in await a_rx.wait_messages(conv, 20, timeout=30)] == [
                m.seq for m in acked
            ]
            assert a_rx.stream.connects + b_rx.stream.connects >= 3  # someone did reconnect
        finally:
            await a_rx.stop()
            await b_rx.stop()
    finally:
        await alice.aclose()
        await bob.aclose()
