"""video-service runs a real Janus as its child: locked down, watched, restarted when it dies;
and it answers STUN on its media probe port, which the diagnosis reads."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from secureconnect.diagnostics.probes import udp_probe
from secureconnect.stun import stun_binding
from secureconnect.video.sfu import signed_token
from tests.conftest import FAST, in_ci
from tests.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # a Janus process per test


@pytest.fixture
def video(tmp_path: Path) -> Iterator[ServerProcess]:
    if shutil.which("janus") is None:
        if in_ci():
            pytest.fail("janus is not installed (apt-get install janus)")
        pytest.skip("janus is not installed")
    env = {**FAST, "SECURECONNECT_ROLE": "video-service", "SECURECONNECT_SFU": "true"}
    proc = ServerProcess(tmp_path / "video", env)
    proc.data_dir.mkdir()
    proc.start()
    yield proc
    proc.stop()


def janus_pid(server: ServerProcess) -> int:
    assert server.proc is not None
    found = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid), "-x", "janus"], capture_output=True, text=True
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


def config(server: ServerProcess) -> dict[str, str]:
    folder = server.data_dir / "janus"
    text = (folder / "janus.jcfg").read_text() + (folder / "janus.transport.http.jcfg").read_text()
    return dict(re.findall(r'^\s*(\w+) = "?([^"\n]*)"?$', text, re.M))


def janus(port: int, body: dict[str, object], path: str = "") -> dict[str, object]:
    answer = httpx.post(
        f"http://127.0.0.1:{port}/janus{path}",
        json={"transaction": uuid.uuid4().hex, **body},
        timeout=5,
    ).json()
    assert isinstance(answer, dict)
    return answer


def wait_readiness(server: ServerProcess, status: int, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        ready = httpx.get(server.url + "/readyz", timeout=2)
        if ready.status_code == status:
            answer: dict[str, object] = ready.json()
            return answer
        assert time.monotonic() < deadline, ready.json()
        time.sleep(0.1)


def test_janus_answers_only_signed_requests_on_loopback(video: ServerProcess) -> None:
    ready = httpx.get(video.url + "/readyz").json()
    assert ready["checks"]["sfu"] == "ok"
    folder = video.data_dir / "janus"
    for name in ("janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.videoroom.jcfg"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600  # it holds the secrets
    settings = config(video)
    assert settings["token_auth"] == "true" and settings["ip"] == "127.0.0.1"
    port = int(settings["port"])

    # Only VideoRoom and the HTTP transport are loaded.
    info = httpx.get(f"http://127.0.0.1:{port}/janus/info").json()
    assert set(info["plugins"]) == {"janus.plugin.videoroom"}
    assert set(info["transports"]) == {"janus.transport.http"}

    # No token, or a forged one: refused. A token signed with this start's secret: a session.
    assert janus(port, {"janus": "create"})["error"]["code"] == 403
    forged = signed_token("not the secret", ["janus.plugin.videoroom"], 600, time.time())
    assert janus(port, {"janus": "create", "token": forged})["error"]["code"] == 403
    token = signed_token(
        settings["token_auth_secret"], ["janus.plugin.videoroom"], 600, time.time()
    )
    created = janus(port, {"janus": "create", "token": token})
    assert created["janus"] == "success", created
    session = created["data"]["id"]  # type: ignore[index]
    attached = janus(
        port, {"janus": "attach", "plugin": "janus.plugin.videoroom", "token": token}, f"/{session}"
    )
    assert attached["janus"] == "success", attached

    # The API is bound to 127.0.0.1 alone: another loopback address does not reach it.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.2", port)) != 0
    # The admin API wants the admin secret.
    admin = int(settings["admin_port"])
    refused = httpx.post(
        f"http://127.0.0.1:{admin}/admin", json={"janus": "list_sessions", "transaction": "t"}
    ).json()
    assert refused["janus"] == "error"
    metrics = httpx.get(video.url + "/metrics").text
    assert "secureconnect_janus_up 1.0" in metrics


def test_a_killed_janus_makes_video_service_unready_until_it_is_back(
    video: ServerProcess,
) -> None:
    first = janus_pid(video)
    first_secret = config(video)["token_auth_secret"]
    os.kill(first, signal.SIGKILL)
    down = wait_readiness(video, 503, timeout=10)
    assert down["checks"]["sfu"] in ("failed: down", "failed: starting")  # type: ignore[index]
    assert "secureconnect_janus_up 0.0" in httpx.get(video.url + "/metrics").text
    back = wait_readiness(video, 200, timeout=30)
    assert back["checks"]["sfu"] == "ok"  # type: ignore[index]
    assert janus_pid(video) != first
    assert config(video)["token_auth_secret"] != first_secret  # fresh secrets at every start
    assert any(e.get("msg") == "janus exited" for e in video.logs())


def test_janus_stops_with_video_service_even_when_it_is_killed(video: ServerProcess) -> None:
    pid = janus_pid(video)
    video.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_without_janus_video_service_says_so_and_chat_roles_do_not_care(tmp_path: Path) -> None:
    env = {
        **FAST,
        "SECURECONNECT_SFU": "true",
        "SECURECONNECT_JANUS_BINARY": str(tmp_path / "no-janus-here"),
    }
    video = ServerProcess(tmp_path / "video", {**env, "SECURECONNECT_ROLE": "video-service"})
    video.data_dir.mkdir()
    video.start(ready=False)
    try:
        answer = wait_readiness(video, 503, timeout=10)
        assert answer["checks"]["sfu"] == "failed: not installed"  # type: ignore[index]
        assert video.log_line(lambda e: "calls are unavailable" in str(e.get("msg")))
    finally:
        video.stop()
    embedded = ServerProcess(tmp_path / "all", env)
    embedded.data_dir.mkdir()
    embedded.start()  # ready: chat does not wait for an SFU
    try:
        assert "sfu" not in httpx.get(embedded.url + "/readyz").json()["checks"]
    finally:
        embedded.stop()


def test_the_media_probe_answers_stun_and_the_diagnosis_reads_it(tmp_path: Path) -> None:
    port = free_port_udp()
    env = {
        **FAST,
        "SECURECONNECT_ROLE": "video-service",
        "SECURECONNECT_MEDIA_PROBE_PORT": str(port),
    }
    video = ServerProcess(tmp_path / "video", env)
    video.data_dir.mkdir()
    video.start(ready=False)  # no SFU here: only the probe is under test
    try:
        deadline = time.monotonic() + 10
        while True:
            probe = asyncio.run(udp_probe(f"127.0.0.1:{port}"))
            if probe.ok or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert probe.ok, probe
        assert probe.detail.startswith("answered a STUN binding request (saw us as 127.0.0.1:")
        # Anything but a Binding request gets nothing back, and the probe keeps answering.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.sendto(b"\0" * 20, ("127.0.0.1", port))
            with pytest.raises(TimeoutError):
                s.recv(100)
        assert stun_binding("127.0.0.1", port).startswith("127.0.0.1:")
    finally:
        video.stop()
    # Stopped: the diagnosis says the port is dead, not "open or filtered".
    silent = asyncio.run(udp_probe(f"127.0.0.1:{port}"))
    assert not silent.ok and "no answer to a STUN binding request" in silent.detail


def free_port_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
