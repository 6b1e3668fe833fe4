"""Rules, tested in-process (the app over a temporary SQLite file, no server process): the
layering of the code, events after commit, who may see what, and one exception tree."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from secureconnect.bus import InProcessBus, user_topic
from secureconnect.cli.common import hoist_profile_options
from secureconnect.client import ApiError, SecureConnectError
from secureconnect.client.devicestore import DeviceStoreError
from secureconnect.client.errors import ConnectionLost
from secureconnect.client.secure import IdentityChangedError
from secureconnect.crypto.primitives import CryptoError
from secureconnect.errors import Problem, Unavailable
from secureconnect.store import Database, StoreUnavailable
from secureconnect.stun import binding_answer, binding_request, mapped_address
from tests.conftest import InProcess
from tests.helpers import PASSWORD, signed_up

ATTACKER = "203.0.113.7"

SRC = Path(__file__).resolve().parents[1] / "src"


def _import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n for n in names if n in modules and n != name}
        graph[name] = found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_there_is_no_import_circle_in_src() -> None:
    graph = _import_graph()
    assert len(graph) > 80  # every module was read
    assert _cycles(graph) == []


def test_no_domain_reaches_up_into_the_app_or_the_routes() -> None:
    graph = _import_graph()
    for module, imports in graph.items():
        if module.endswith(".service") or module.startswith("secureconnect.store"):
            upward = {i for i in imports if i.endswith(".routes") or i == "secureconnect.app"} | (
                {"secureconnect.services"} & imports
            )
            assert not upward, f"{module} imports {upward}"


async def test_events_are_published_after_the_commit_and_never_after_a_rollback(
    tmp_path: Path,
) -> None:
    bus = InProcessBus()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", publish=bus.publish)
    seen: list[tuple[dict[str, object], int]] = []

    async def rows() -> int:
        async with db.read() as conn:
            return int(await conn.scalar(text("SELECT count(*) FROM t")) or 0)

    def on_event(event: dict[str, object]) -> None:
        seen.append((event, -1))

    await bus.subscribe(user_topic("u1"), on_event)
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    with pytest.raises(RuntimeError, match="refused"):
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            db.publish_on_commit(conn, [user_topic("u1")], {"type": "rolled back"})
            raise RuntimeError("refused")
    assert seen == [] and await rows() == 0
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO t VALUES (2)"))
        db.publish_on_commit(conn, [user_topic("u1")], {"type": "first"})
        db.publish_on_commit(conn, [user_topic("u1")], {"type": "second"})
        assert seen == []  # not before the commit
    assert [e["type"] for e, _ in seen] == ["first", "second"]
    assert await rows() == 1
    with pytest.raises(RuntimeError, match=r"Database\.write"):
        async with db.read() as conn:
            db.publish_on_commit(conn, [user_topic("u1")], {"type": "outside"})
    await db.close()


async def test_another_users_conversation_is_invisible(in_process_user) -> None:
    alice, bob, eve = [await in_process_user(p) for p in ("alice", "bob", "eve")]
    assert bob.login_info is not None
    conv = await alice.direct(bob.login_info.username)
    await alice.send(conv.id, b"ciphertext")
    for attempt in (
        eve.conversation(conv.id),
        eve.history(conv.id),
        eve.send(conv.id, b"mine"),
        eve.members(conv.id),
    ):
        with pytest.raises(ApiError) as refused:
            await attempt
        assert (refused.value.status, refused.value.code) == (404, "conversation_not_found")
    page = await bob.history(conv.id)
    assert [m.body for m in page.messages if m.kind == "message"] == [b"ciphertext"]


async def test_a_failed_login_is_counted_by_the_guard_and_the_metrics(
    in_process: InProcess, in_process_user
) -> None:
    victim = await in_process_user("victim")
    assert victim.login_info is not None
    before = in_process.services.metrics.failed_logins._value.get()
    attacker = in_process.client()
    for _ in range(3):
        with pytest.raises(ApiError) as refused:
            await attacker.login(victim.login_info.username, "not " + PASSWORD)
        assert refused.value.code == "invalid_credentials"
    await attacker.aclose()
    assert in_process.services.metrics.failed_logins._value.get() == before + 3
    report = await in_process.services.guard.report(900)
    assert [(a.ip, a.count) for a in report.failed_logins] == [("127.0.0.1", 3)]


def test_every_exception_we_raise_on_purpose_has_one_base() -> None:
    for error in (
        Problem,
        Unavailable,
        StoreUnavailable,
        CryptoError,
        ApiError,
        ConnectionLost,
        DeviceStoreError,
        IdentityChangedError,
    ):
        assert issubclass(error, SecureConnectError), error
    assert StoreUnavailable("store_unavailable", "down").status == 503


def test_profile_and_server_may_stand_anywhere_but_after_a_double_dash() -> None:
    line = ["chat", "send", "trip", "hi", "--profile", "bob", "--server=http://h:1"]
    assert hoist_profile_options(line) == [
        "--profile",
        "bob",
        "--server=http://h:1",
        "chat",
        "send",
        "trip",
        "hi",
    ]
    literal = ["chat", "send", "trip", "--", "--profile", "is what I typed"]
    assert hoist_profile_options(literal) == literal


async def test_an_expired_token_is_refused(in_process: InProcess) -> None:
    client = await signed_up(in_process.client(), "expiring")
    await client.me()
    in_process.clock.advance(59)
    await client.me()  # still within its 60 s
    in_process.clock.advance(2)
    with pytest.raises(ApiError) as expired:
        await client.me()
    assert (expired.value.status, expired.value.code) == (401, "token_expired")
    await client.aclose()


async def test_a_block_with_an_expiry_lifts_itself(in_process: InProcess) -> None:
    oncall = await signed_up(in_process.client(), "oncall")
    await oncall.block(ATTACKER, "cool off", expires_in_s=1)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=in_process.app, client=(ATTACKER, 40000)),
        base_url="http://in-process",
    ) as attacker:
        assert (await attacker.get("/v1/status")).status_code == 403
        in_process.clock.advance(1.5)
        await in_process.services.guard.refresh()  # what every replica does every few seconds
        assert (await attacker.get("/v1/status")).status_code == 200
    await oncall.aclose()


async def test_the_runbook_lifecycle_with_a_verified_close(in_process: InProcess) -> None:
    oncall = await signed_up(in_process.client(), "oncall")
    try:
        opened = await oncall.incident_open("Cannot log in", "P1", "users report 502s")
        assert (opened.number, opened.status, opened.respond_within_minutes) == (
            1,
            "open",
            15,
        )
        ref = str(opened.number)
        acked = await oncall.incident_step(ref, "acknowledged", "I'm on it")
        assert acked.owner == "oncall"
        triaged = await oncall.incident_step(
            ref, "triaged", users_affected=1200, recent_deploy=True
        )
        assert (triaged.users_affected, triaged.recent_deploy) == (1200, True)
        await oncall.incident_update(ref, "Still investigating; CPU dropped after scaling.")
        lowered = await oncall.incident_severity(ref, "P2", "logins work for most users")
        assert lowered.respond_within_minutes == 30
        await oncall.incident_step(ref, "mitigated", "rolled back api-gateway")
        resolved = await oncall.incident_step(ref, "resolved", "bad config reverted")
        with pytest.raises(ApiError) as early:
            await oncall.incident_close(ref)
        assert (early.value.status, early.value.code) == (409, "not_verified")
        assert "verification window" in early.value.message
        in_process.clock.advance(2.2)  # the verification window (2 s here) passes
        closed = await oncall.incident_close(ref)
        assert closed.status == "closed"
        kinds = [e.kind for e in closed.timeline]
        assert kinds == [
            "opened",
            "acknowledged",
            "triaged",
            "update",
            "severity",
            "mitigated",
            "resolved",
            "verified",
            "closed",
        ]
        stamps = [e.at for e in closed.timeline]
        assert stamps == sorted(stamps)
        assert "verified stable" in closed.timeline[-2].text
        assert closed.verified_at == closed.closed_at >= resolved.resolved_at
        assert closed.resolved_at == resolved.resolved_at
        with pytest.raises(ApiError) as again:
            await oncall.incident_step(ref, "acknowledged")
        assert (again.value.status, again.value.code) == (409, "invalid_transition")
    finally:
        await oncall.aclose()


async def test_passwords_are_hashed_with_argon2id_at_the_librarys_defaults(
    in_process: InProcess,
) -> None:
    name = (await signed_up(in_process.client(), "hashed")).login_info
    assert name is not None
    async with in_process.services.db.read() as conn:
        stored = await conn.scalar(
            text("SELECT password_hash FROM users WHERE username = :u"), {"u": name.username}
        )
    assert str(stored).startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_stun_binding_round_trips_for_both_address_families() -> None:
    for host, port in (("203.0.113.9", 5004), ("2001:db8::7", 40000)):
        request, transaction = binding_request()
        answer = binding_answer(request, host, port)
        assert answer is not None
        shown = mapped_address(answer, transaction)
        assert shown == f"{host}:{port}"
        with pytest.raises(OSError, match="not a STUN binding success"):
            mapped_address(answer, b"\0" * 12)  # another transaction's answer
    assert binding_answer(b"GET / HTTP/1.1\r\n\r\n...", "203.0.113.9", 1) is None
    assert binding_answer(request[:-1], "203.0.113.9", 1) is None  # truncated


async def test_the_conversation_list_is_newest_activity_first(
    in_process: InProcess, in_process_user
) -> None:
    alice, bob, carol = [await in_process_user(p) for p in ("alice", "bob", "carol")]
    assert bob.login_info is not None and carol.login_info is not None
    with_bob = await alice.direct(bob.login_info.username)
    in_process.clock.advance(5)
    with_carol = await alice.direct(carol.login_info.username)
    assert [c.id for c in await alice.conversations()] == [with_carol.id, with_bob.id]
    in_process.clock.advance(5)
    sent = await alice.send(with_bob.id, b"ciphertext")
    listed = await alice.conversations()
    assert [c.id for c in listed] == [with_bob.id, with_carol.id]
    assert listed[0].last_at == sent.created_at > listed[1].last_at
