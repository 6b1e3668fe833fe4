"""schemathesis over the account, two-step, email and breach-procedure endpoints of a real
server (issue 13): every generated request, valid or not, gets an answer below 500."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.helpers import PASSWORD
from tests.server import free_port
from tests.test_compromise import Mailbox

pytestmark = pytest.mark.slow  # a minute of generated requests

PATHS = r"^/v1/(auth|me|ops/compromise|ops/notify-users|ops/store/password)"


def admin_token(url: str) -> str:
    """Registers the on-call admin and logs in: the token schemathesis sends."""
    with httpx.Client(base_url=url) as http:
        http.post("/v1/auth/register", json={"username": "oncall", "password": PASSWORD})
        login = http.post("/v1/auth/login", json={"username": "oncall", "password": PASSWORD})
        return str(login.json()["token"])


def test_no_server_errors_on_the_account_endpoints(own_server, tmp_path: Path) -> None:
    port = free_port()
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_NOTIFY_SMTP_HOST": "127.0.0.1",
            "SECURECONNECT_NOTIFY_SMTP_PORT": str(port),
        }
    )
    srv = own_server.start()
    try:
        token = admin_token(srv.url)
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{srv.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error",
                "--include-path-regex",
                PATHS,
                "--exclude-path",
                "/v1/auth/logout",  # it would end the run's own session
                "--max-examples",
                "30",
                "--seed",
                "20261201",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:
        smtp.stop()
    assert run.returncode == 0, run.stdout[-4000:]
    assert "generated" in run.stdout and " passed" in run.stdout
    assert not any(e.get("status", 0) >= 500 for e in srv.logs())


def test_the_whole_api_answers_below_500_and_only_as_documented(own_server, tmp_path) -> None:
    """Issue 15: schemathesis's coverage and fuzzing phases over every operation of the OpenAPI
    document, authenticated as an admin (and, where a request carries no token, not): no 5xx,
    and no status the document does not list for that operation."""
    own_server.extra_env["SECURECONNECT_ADMINS"] = '["oncall"]'
    srv = own_server.start()
    token = admin_token(srv.url)
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{srv.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance",
            "--exclude-path",
            "/v1/auth/logout",  # it would end the run's own session
            "--exclude-path-regex",
            "^/v1/ops/(compromise|notify-users)",  # covered above, with a mailbox
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "5",
            "--seed",
            "20261205",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested and int(tested.group(1)) >= 75, run.stdout[-2000:]  # all of them (80 today)
    assert not any(e.get("status", 0) >= 500 for e in srv.logs())
