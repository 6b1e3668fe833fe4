"""Two-step verification: RFC 6238's own vectors, then enrolment, logins, replays, recovery
codes, turning it off and the admins' requirement through a real server, the SDK and the CLI."""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from secureconnect.accounts.totp import matching_step
from secureconnect.client import ApiError, Client
from tests.helpers import PASSWORD, run_cli, signed_up

# RFC 6238 Appendix B: the SHA-1 seed and the 8-digit codes at each time.
RFC6238_SEED = b"12345678901234567890"
RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("at", "code"), RFC6238_SHA1)
def test_rfc6238_appendix_b(at: int, code: str) -> None:
    secret = base64.b32encode(RFC6238_SEED).decode()
    assert pyotp.TOTP(secret, digits=8).at(at) == code
    # The 6-digit code apps show is the same value's last six digits.
    assert matching_step(secret, code[-6:], at, after_step=0) == at // 30
    # One step either side is accepted for clock drift; two are not; nor a used step.
    assert matching_step(secret, code[-6:], at + 30, after_step=0) == at // 30
    assert matching_step(secret, code[-6:], at - 30, after_step=0) == at // 30
    assert matching_step(secret, code[-6:], at + 60, after_step=0) is None
    assert matching_step(secret, code[-6:], at, after_step=at // 30) is None


def now_code(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


@pytest.fixture
def totp_server(own_server):
    own_server.extra_env.update(
        {"SECURECONNECT_LOGIN_FREE_FAILURES": "3", "SECURECONNECT_ADMINS": '["oncall"]'}
    )
    return own_server.start()


async def codes_wanted(url: str, name: str, code: str | None = None) -> str:
    """The error code of a login, or "ok"."""
    async with Client(url) as other:
        try:
            await other.login(name, PASSWORD, totp_code=code)
        except ApiError as refused:
            return refused.code
        return "ok"


async def test_enrol_log_in_replay_recovery_and_turn_off(totp_server) -> None:
    url = totp_server.url
    async with await signed_up(Client(url), "alice") as alice:
        assert not (await alice.totp_status()).enabled
        enrolment = await alice.totp_begin()
        uri = urlparse(enrolment.otpauth_uri)
        assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
        assert parse_qs(uri.query)["secret"] == [enrolment.secret]
        assert parse_qs(uri.query)["issuer"] == ["SecureConnect"]
        assert enrolment.qr_svg.startswith("<svg") and "<script" not in enrolment.qr_svg
        # Not in force until confirmed: a login still needs only the password.
        assert await codes_wanted(url, "alice") == "ok"
        with pytest.raises(ApiError) as wrong:
            await alice.totp_confirm("000000" if now_code(enrolment.secret) != "000000" else "1")
        assert (wrong.value.status, wrong.value.code) == (400, "invalid_totp_code")
        first = now_code(enrolment.secret)
        recovery = await alice.totp_confirm(first)
        assert len(recovery) == 10 and len(set(recovery)) == 10
        assert all(re.fullmatch(r"[a-z2-7]{5}-[a-z2-7]{5}", c) for c in recovery)
        with pytest.raises(ApiError) as again:
            await alice.totp_begin()
        assert again.value.code == "totp_enabled"

        # Logins now need a code; the one that confirmed is used up.
        assert await codes_wanted(url, "alice") == "totp_required"
        assert await codes_wanted(url, "alice", first) == "invalid_totp_code"
        ahead = now_code(enrolment.secret, 1)  # a phone whose clock is 30 s fast
        assert await codes_wanted(url, "alice", ahead) == "ok"
        assert await codes_wanted(url, "alice", ahead) == "invalid_totp_code"  # replayed
        # A recovery code works once, written any way a person might type it.
        assert await codes_wanted(url, "alice", recovery[0].upper().replace("-", " ")) == "ok"
        assert await codes_wanted(url, "alice", recovery[0]) == "invalid_totp_code"
        assert (await alice.totp_status()).recovery_codes_left == 9

        # Turning it off needs the password and a code; a stolen session alone cannot.
        with pytest.raises(ApiError) as no_password:
            await alice.totp_disable("not the password", recovery[1])
        assert (no_password.value.status, no_password.value.code) == (403, "invalid_credentials")
        with pytest.raises(ApiError) as no_code:
            await alice.totp_disable(PASSWORD, "123456" if ahead != "123456" else "654321")
        assert (no_code.value.status, no_code.value.code) == (403, "invalid_totp_code")
        await alice.totp_disable(PASSWORD, recovery[1])
        assert not (await alice.totp_status()).enabled
        assert await codes_wanted(url, "alice") == "ok"

    # The secret is sealed at rest and the recovery codes are hashes.
    stored = totp_server.stored_data()
    assert enrolment.secret.encode() not in stored
    assert not any(c.encode() in stored or c.replace("-", "").encode() in stored for c in recovery)


async def test_wrong_codes_count_with_wrong_passwords(totp_server) -> None:
    async with await signed_up(Client(totp_server.url), "bob") as bob:
        secret = (await bob.totp_begin()).secret
        await bob.totp_confirm(now_code(secret))
        # Another user is not touched by it.
        async with await signed_up(Client(totp_server.url), "carol") as carol:
            assert not (await carol.totp_status()).enabled
    answers = [await codes_wanted(totp_server.url, "bob", "000001") for _ in range(2)]
    async with Client(totp_server.url) as guesser:
        with pytest.raises(ApiError):
            await guesser.login("bob", "wrong password")
    # 3 free failures (2 codes, 1 password); the 4th attempt starts a wait; the 5th waits,
    # even with the right password and a right code.
    answers.append(await codes_wanted(totp_server.url, "bob", "000002"))
    answers.append(await codes_wanted(totp_server.url, "bob", now_code(secret, 1)))
    assert answers == ["invalid_totp_code"] * 3 + ["login_throttled"]


async def test_admins_can_be_required_to_use_two_step_verification(own_server, tmp_path) -> None:
    own_server.extra_env.update(
        {"SECURECONNECT_ADMINS": '["oncall"]', "SECURECONNECT_REQUIRE_TOTP_FOR_ADMINS": "true"}
    )
    srv = own_server.start()
    async with await signed_up(Client(srv.url), "oncall") as oncall:
        with pytest.raises(ApiError) as refused:
            await oncall.security_report()
        assert (refused.value.status, refused.value.code) == (403, "totp_required_for_admins")
        # The CLI way: enable shows the QR code and the key, confirm turns it on.
        home = tmp_path / "cli"
        run_cli(srv.url, home, "login", "oncall", check=True)
        shown = run_cli(srv.url, home, "totp", "enable", check=True).stdout
        secret = re.search(r"type the key: ([A-Z2-7]+)", shown).group(1)
        assert "otpauth://totp/SecureConnect:oncall?" in shown
        assert any(block in shown for block in "█▀▄")  # the QR code, drawn in the terminal
        confirmed = run_cli(srv.url, home, "totp", "confirm", now_code(secret), check=True)
        assert len(re.findall(r"^  [a-z2-7]{5}-[a-z2-7]{5}$", confirmed.stdout, re.M)) == 10
        report = await oncall.security_report()
        assert report.rate_limit.mode == "normal"
        # Logging in from the CLI now asks for the code; without a terminal, --code.
        asked = run_cli(srv.url, home, "login", "oncall")
        assert asked.returncode == 2 and "pass --code" in asked.stderr
        logged = run_cli(srv.url, home, "login", "oncall", "--code", now_code(secret, 1))
        assert logged.returncode == 0, logged.stderr
        status = run_cli(srv.url, home, "totp", "status", check=True).stdout
        assert "on; 10 recovery codes left" in status
