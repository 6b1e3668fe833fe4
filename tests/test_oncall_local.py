"""``secureconnect oncall diagnose`` and its mitigations on a local deployment, broken for real:
a server process killed by a segmentation fault, a brute-force attack, a TURN server that stops.
Every command runs as the on-call engineer types it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest

from secureconnect.ops.runfile import load_all
from tests.conftest import in_ci
from tests.helpers import PASSWORD, run_cli
from tests.server import free_port, pid_alive

pytestmark = pytest.mark.slow  # servers of its own, crashed and restarted by the tooling

ATTACKER = "203.0.113.7"


@pytest.fixture
def local(own_server, tmp_path):
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_TRUSTED_PROXIES": '["127.0.0.1"]',
            "SECURECONNECT_GUARD_REFRESH_S": "0.2",
        }
    )
    own_server.start()
    yield own_server
    ours = own_server.proc.pid if own_server.proc else None
    for run in load_all(own_server.data_dir):  # a process the tooling started
        if run.pid == ours:
            continue  # the fixture's own process: it stops it
        try:
            os.kill(run.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pid_alive(run.pid):
            time.sleep(0.1)


def oncall(
    server, home, *args: str, stdin: str = "", url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in the operator's shell: the same settings the server was started with."""
    return run_cli(url or server.url, home, *args, env=server.env(), stdin=stdin)


def diagnosis(server, home, scenario: str, *extra: str) -> tuple[int, dict]:
    done = oncall(server, home, "oncall", "diagnose", scenario, "--json", *extra)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def check(report: dict, name: str) -> dict:
    return next(f for f in report["findings"] if f["check"] == name)


def as_admin(server, home) -> None:
    assert oncall(server, home, "register", "oncall").returncode == 0
    assert oncall(server, home, "login", "oncall").returncode == 0


def test_a_crashed_process_is_found_named_and_restarted(local, tmp_path) -> None:
    as_admin(local, tmp_path)
    code, report = diagnosis(local, tmp_path, "service-down")
    assert code == 0, report
    assert check(report, "pods")["summary"] == "1 instances, none crashing"
    assert check(report, "readiness")["status"] == "ok"

    # A hard crash: the process dies of a segmentation fault.
    old_pid = local.proc.pid
    local.proc.send_signal(signal.SIGSEGV)
    local.proc.wait(timeout=10)
    local.proc = None

    code, report = diagnosis(local, tmp_path, "service-down")
    assert code == 3
    pods = check(report, "pods")
    assert pods["status"] == "fail"
    assert "crashed with a segmentation fault" in pods["summary"]
    assert f"pid {old_pid}" in pods["summary"]
    assert pods["action"]["command"] == "secureconnect oncall rollback all"
    assert check(report, "readiness")["summary"] == "the service did not answer /readyz at all"
    # Said at once: the admin reports are not asked for (and tried again for seconds) when the
    # service did not answer at all.
    assert (
        "admin reports and deploy history: not asked for, the service did not answer"
        in (report["gaps"])
    )

    # There is no earlier image on a laptop: the tool says so and changes nothing.
    refused = oncall(local, tmp_path, "oncall", "rollback", "all", "--yes")
    assert refused.returncode == 1 and "rollback needs Kubernetes" in refused.stderr
    scaled = oncall(local, tmp_path, "oncall", "scale", "all", "3", "--yes")
    assert scaled.returncode == 1 and "scale needs Kubernetes" in scaled.stderr

    # It asks before acting; "no" changes nothing.
    declined = oncall(local, tmp_path, "oncall", "restart", "all", stdin="n\n")
    assert declined.returncode == 1
    assert "This will: stop and start again: pid" in declined.stdout
    assert "nothing changed" in declined.stdout
    assert diagnosis(local, tmp_path, "service-down")[0] == 3

    restarted = oncall(local, tmp_path, "oncall", "restart", "all", stdin="y\n")
    assert restarted.returncode == 0, restarted.stderr
    assert "restarted" in restarted.stdout and "ready" in restarted.stdout
    (run,) = load_all(local.data_dir)
    assert run.pid != old_pid and run.url == local.url
    code, report = diagnosis(local, tmp_path, "service-down")
    assert code == 0, report
    # Nothing was lost: the same account logs in on the restarted process.
    assert "oncall" in oncall(local, tmp_path, "whoami").stdout


def test_a_brute_force_is_diagnosed_blocked_and_written_on_the_incident(local, tmp_path) -> None:
    as_admin(local, tmp_path)
    opened = oncall(local, tmp_path, "oncall", "open", "Login brute force", "--severity", "P1")
    assert opened.returncode == 0, opened.stderr
    with httpx.Client(base_url=local.url) as http:
        for _ in range(25):
            http.post(
                "/v1/auth/login",
                json={"username": "oncall", "password": "guess-guess-guess"},
                headers={"X-Forwarded-For": ATTACKER},
            )
        code, report = diagnosis(local, tmp_path, "security")
        assert code == 3
        attack = check(report, "failed-logins")
        assert attack["summary"] == f"{ATTACKER}: 25 failed logins in the last 15 min (brute force)"
        assert attack["action"]["kind"] == "block"

        # At the ingress too needs a cluster: without one it says so and blocks nothing.
        nowhere = {**local.env(), "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
        at_edge = run_cli(
            local.url,
            tmp_path,
            *("oncall", "block", ATTACKER, "--reason", "brute force", "--target", "kubernetes"),
            "--yes",
            env=nowhere,
        )
        assert at_edge.returncode == 1
        assert "cannot reach Kubernetes" in at_edge.stderr
        assert check(diagnosis(local, tmp_path, "security")[1], "blocked")["summary"] == (
            "none blocked"
        )

        blocked = oncall(
            local, tmp_path, "oncall", "block", ATTACKER, "--reason", "brute force", "--yes"
        )
        assert blocked.returncode == 0, blocked.stderr
        assert "written on incident #1" in blocked.stdout
        login = {"username": "oncall", "password": PASSWORD}
        refused = http.post("/v1/auth/login", json=login, headers={"X-Forwarded-For": ATTACKER})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "ip_blocked"

    code, report = diagnosis(local, tmp_path, "security")
    assert code == 0
    assert check(report, "blocked")["summary"] == f"1 blocked: {ATTACKER}/32"
    for mode in ("emergency", "normal"):
        switched = oncall(local, tmp_path, "oncall", "rate-limit", mode, "--yes")
        assert switched.returncode == 0, switched.stderr
    lifted = oncall(local, tmp_path, "oncall", "unblock", ATTACKER, "--yes")
    assert lifted.returncode == 0, lifted.stderr
    shown = oncall(local, tmp_path, "oncall", "show", "1").stdout
    assert shown.count("action") == 4
    draft = oncall(local, tmp_path, "oncall", "postmortem", "1").stdout
    actions = draft.split("## 5. Immediate actions")[1].split("## 6.")[0]
    # The block and its lifting, each written as what it was.
    assert actions.count(f"secureconnect oncall block {ATTACKER}") == 1
    assert f"secureconnect oncall unblock {ATTACKER}: {ATTACKER}/32 unblocked" in actions
    assert "rate-limit mode emergency" in actions


@pytest.mark.solo  # a block of 3 s, and the count is per clock minute: it needs the CPU on time
def test_an_address_failing_too_many_logins_blocks_itself_for_a_while(own_server, tmp_path) -> None:
    """With SECURECONNECT_AUTO_BLOCK_FAILURES_PER_MIN set, the address is on the deny list at
    that count, on the open incident's timeline, and off it once the time is over; another
    address, and the proxy every request comes through, are never blocked."""
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_TRUSTED_PROXIES": '["127.0.0.1"]',
            "SECURECONNECT_GUARD_REFRESH_S": "0.2",
            "SECURECONNECT_AUTO_BLOCK_FAILURES_PER_MIN": "8",
            "SECURECONNECT_AUTO_BLOCK_S": "3",
        }
    )
    srv = own_server.start()
    as_admin(srv, tmp_path)
    assert oncall(srv, tmp_path, "oncall", "open", "Logins", "--severity", "P2").returncode == 0
    if time.time() % 60 > 50:  # the count is per clock minute: start at the top of one
        time.sleep(61 - time.time() % 60)
    guesses = {"password": "guess-guess-guess"}
    with httpx.Client(base_url=srv.url) as http:
        codes = []
        for n in range(10):  # many names from one address: guessing
            answer = http.post(
                "/v1/auth/login",
                json={"username": f"someone{n}", **guesses},
                headers={"X-Forwarded-For": ATTACKER},
            )
            codes.append(answer.status_code)
        assert codes == [401] * 8 + [403, 403]
        login = {"username": "oncall", "password": PASSWORD}
        other = http.post("/v1/auth/login", json=login, headers={"X-Forwarded-For": "198.51.100.9"})
        assert other.status_code == 200  # another address is not touched
        for _ in range(10):  # failures straight from the proxy's own address
            http.post("/v1/auth/login", json={"username": "someone", **guesses})
        assert http.post("/v1/auth/login", json=login).status_code == 200

        shown = oncall(srv, tmp_path, "oncall", "show", "1").stdout
        assert f"blocked {ATTACKER}/32 for 3 s: 8 failed logins within a minute" in shown
        assert "secureconnect_auto_blocks_total 1.0" in http.get("/metrics").text
        line = srv.log_line(lambda e: e.get("msg") == "network blocked")
        assert (line["network"], line["actor"]) == (
            f"{ATTACKER}/32",
            "secureconnect (automatic block)",
        )

        time.sleep(3.5)  # it lifts by itself
        back = http.post("/v1/auth/login", json=login, headers={"X-Forwarded-For": ATTACKER})
        assert back.status_code == 200


def test_the_turn_server_is_checked_with_a_real_stun_request(server, tmp_path) -> None:
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        if in_ci():
            pytest.fail("coturn is not installed (apt-get install coturn)")
        pytest.skip("coturn is not installed")
    port = free_port()
    turn = subprocess.Popen(
        [
            turnserver,
            "-n",
            "--listening-ip=127.0.0.1",
            f"--listening-port={port}",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            _, report = diagnosis(server, tmp_path, "video", "--turn", f"127.0.0.1:{port}")
            if check(report, "turn")["status"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        found = check(report, "turn")
        assert found["status"] == "ok", found
        assert found["summary"].startswith(
            f"127.0.0.1:{port}: answered a STUN binding request (saw us as 127.0.0.1:"
        )
    finally:
        turn.terminate()
        turn.wait(timeout=10)
    code, report = diagnosis(server, tmp_path, "video", "--turn", f"127.0.0.1:{port}")
    assert code == 3
    assert check(report, "turn")["status"] == "fail"
