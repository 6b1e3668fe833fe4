"""``secureconnect oncall``: the runbook's incident workflow, diagnosis and mitigations."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from secureconnect.cli.common import client_command, err, out, when
from secureconnect.cli.profile import Profile
from secureconnect.client import ApiError, Client, Incident, IncidentSummary
from secureconnect.client.types import CompromiseReport
from secureconnect.diagnostics.facts import Action
from secureconnect.diagnostics.local import Unsupported
from secureconnect.diagnostics.run import Target, collect, findings, make_target, scenarios_for

oncall_app = typer.Typer(help="Incidents, the runbook's way (admins).", no_args_is_help=True)


def _print_incident(incident: IncidentSummary) -> None:
    colour = {"P1": "red", "P2": "yellow", "P3": "cyan"}.get(incident.severity, "white")
    out.print(
        f"[bold]#{incident.number}[/bold] [{colour}]{incident.severity} "
        f"{incident.severity_name}[/{colour}] {incident.status}: {escape(incident.title)}"
        f" [dim](owner {incident.owner or '-'}, respond within "
        f"{incident.respond_within_minutes} min)[/dim]"
    )
    if isinstance(incident, Incident):
        for event in incident.timeline:
            out.print(
                f"  {when(event.at)}  {event.kind:<15} {escape(event.actor):<14} "
                f"{escape(event.text)}"
            )


def _oncall(
    fn: Callable[[Client], Awaitable[Incident]],
) -> None:
    async def go(client: Client, state: Profile) -> None:
        _print_incident(await fn(client))

    client_command(go)()


@oncall_app.command("open")
def oncall_open(
    title: str,
    severity: Annotated[str, typer.Option(help="P1, P2 or P3")] = "P2",
    text: str = "",
) -> None:
    """Open an incident."""
    _oncall(lambda c: c.incident_open(title, severity, text))


@oncall_app.command("ack")
def oncall_ack(
    incident: str,
    text: str = "I'm on it",
) -> None:
    """Acknowledge: you own it now."""
    _oncall(lambda c: c.incident_step(incident, "acknowledged", text))


@oncall_app.command("triage")
def oncall_triage(
    incident: str,
    users_affected: Annotated[int | None, typer.Option()] = None,
    recent_deploy: Annotated[bool | None, typer.Option()] = None,
    text: str = "",
) -> None:
    """Record the triage: users affected, whether a deploy came just before."""
    _oncall(
        lambda c: c.incident_step(
            incident, "triaged", text, users_affected=users_affected, recent_deploy=recent_deploy
        ),
    )


@oncall_app.command("update")
def oncall_update(incident: str, text: str) -> None:
    """Post an update (the runbook asks for one every 15 minutes)."""
    _oncall(lambda c: c.incident_update(incident, text))


@oncall_app.command("severity")
def oncall_severity(
    incident: str,
    severity: str,
    text: str = "",
) -> None:
    """Change the severity."""
    _oncall(lambda c: c.incident_severity(incident, severity, text))


@oncall_app.command("mitigate")
def oncall_mitigate(incident: str, text: str) -> None:
    """Users can work again (scaled, rolled back, restarted): say how."""
    _oncall(lambda c: c.incident_step(incident, "mitigated", text))


@oncall_app.command("resolve")
def oncall_resolve(incident: str, text: str) -> None:
    """The root cause is fixed; the verification window starts."""
    _oncall(lambda c: c.incident_step(incident, "resolved", text))


@oncall_app.command("close")
def oncall_close(
    incident: str,
    override: Annotated[str | None, typer.Option(help="reason to skip verification")] = None,
) -> None:
    """Close, once the platform has stayed healthy for the verification window."""
    _oncall(lambda c: c.incident_close(incident, override))


@oncall_app.command("show")
def oncall_show(incident: str) -> None:
    """An incident and its timeline."""
    _oncall(lambda c: c.incident(incident))


@oncall_app.command("status")
def oncall_status(
    incident: str,
    template: Annotated[
        str | None, typer.Option(help="red, yellow or green: the runbook's messages")
    ] = None,
    phase: Annotated[
        str | None, typer.Option(help="investigating|identified|monitoring|resolved")
    ] = None,
    text: Annotated[str | None, typer.Option(help="the public message")] = None,
    component: Annotated[list[str] | None, typer.Option(help='e.g. "Chat=degraded"')] = None,
) -> None:
    """Post a public update to the status page (runbook 23.10)."""
    states = dict(c.split("=", 1) for c in component or [])

    async def go(client: Client, state: Profile) -> None:
        page = await client.incident_public_update(
            incident, phase=phase, text=text, components=states, template=template
        )
        out.print(f"status page: {page.overall.text}")
        for c in page.components:
            out.print(f"  {c.name:<16} {c.state.replace('_', ' ')}")

    client_command(go)()


@oncall_app.command("postmortem")
def oncall_postmortem(incident: str) -> None:
    """Draft the blameless post-mortem (Markdown, the runbook's six sections) on stdout."""

    async def go(client: Client, state: Profile) -> None:
        print(await client.incident_postmortem(incident))

    client_command(go)()


@oncall_app.command("list")
def oncall_list(
    all_: Annotated[bool, typer.Option("--all", help="closed ones too")] = False,
) -> None:
    """Open incidents, newest first."""

    async def go(client: Client, state: Profile) -> None:
        found = await client.incidents(all_)
        for incident in found:
            _print_incident(incident)
        if not found:
            out.print("no open incidents")

    client_command(go)()


# ----- diagnosis and mitigations (runbook 23.5 to 23.9) ---------------------------------------

TargetOpt = Annotated[
    str,
    typer.Option(
        "--target",
        envvar="SECURECONNECT_TARGET",
        help="kubernetes (the cluster in ~/.kube/config) or local (this machine's serve)",
    ),
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", envvar="SECURECONNECT_NAMESPACE")]
DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="SECURECONNECT_DATA_DIR", help="local target: serve's data dir"
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask before acting")]
IncidentOpt = Annotated[
    str | None,
    typer.Option(
        "--incident", help="write the action on this incident (default: the only open one)"
    ),
]
ICONS = {"ok": "[green]ok  [/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
PROBLEMS_FOUND = 3


def _target(kind: str, namespace: str, data_dir: Path) -> Target:
    try:
        return make_target(kind, namespace, data_dir)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    except Exception as error:  # the kubernetes client's config errors are not one type
        err.print(f"[red]cannot reach Kubernetes:[/red] {error}")
        raise typer.Exit(1) from error


@oncall_app.command("diagnose")
def oncall_diagnose(
    scenario: Annotated[
        str,
        typer.Argument(help="all, service-down, video, database, security or deploy"),
    ] = "all",
    target: TargetOpt = "local",
    namespace: NamespaceOpt = "secureconnect-prod",
    data_dir: DataDirOpt = Path("data"),
    turn: Annotated[
        str | None,
        typer.Option(envvar="SECURECONNECT_TURN_URL", help="TURN/STUN server, host:port"),
    ] = None,
    udp: Annotated[
        str | None, typer.Option(help="a video-service address whose UDP port to test")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Run the runbook's checks and say what they found and what to do, with the command.

    Exit status 3 when something failed, 0 when all is well."""
    try:
        chosen = scenarios_for(scenario)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    where = _target(target, namespace, data_dir)
    failed = False

    async def go(client: Client, state: Profile) -> None:
        nonlocal failed
        secret = os.environ.get("SECURECONNECT_TURN_SECRET") or None
        facts = await collect(where, client, turn=turn, udp=udp, turn_secret=secret)
        found = findings(facts, chosen, where.explain)
        failed = any(f.status == "fail" for f in found)
        if as_json:
            print(
                json.dumps(
                    {
                        "target": facts.target,
                        "findings": [f.as_dict() for f in found],
                        "gaps": facts.gaps,
                    },
                    indent=2,
                )
            )
            return
        out.print(f"[bold]Diagnosis[/bold] of {facts.target} at {when(facts.now_ms)}")
        current = ""
        for f in found:
            if f.scenario != current:
                current = f.scenario
                out.print(f"\n[bold]{f.scenario}[/bold] [dim](runbook {f.runbook})[/dim]")
            out.print(f"  {ICONS.get(f.status, '[dim]?   [/dim]')} {f.check:<14} {f.summary}")
            if f.status != "ok" and f.advice:
                out.print(f"       [italic]{f.advice}[/italic]")
            for command in f.commands if f.status != "ok" else ():
                out.print(f"       [cyan]$ {command}[/cyan]")
        for gap in facts.gaps:
            out.print(f"[dim]not read: {gap}[/dim]")

    client_command(go)()
    if failed:
        raise typer.Exit(PROBLEMS_FOUND)


def _mitigate(
    action: Action,
    plan: str,
    apply: Callable[[Client], Awaitable[str]],
    yes: bool,
    incident: str | None,
) -> None:
    """Prints what will change, asks, acts, and writes the action on the incident."""
    out.print(f"This will: [bold]{plan}[/bold]")
    if not yes and not typer.confirm("Go ahead?", default=False):
        out.print("nothing changed")
        raise typer.Exit(1)

    async def go(client: Client, state: Profile) -> None:
        try:
            result = await apply(client)
        except Unsupported as error:
            err.print(f"[red]not done:[/red] {error}")
            raise typer.Exit(1) from error
        out.print(f"[green]done:[/green] {result}")
        await _record(client, incident, f"{action.cli()}: {result}")

    client_command(go)()


async def _record(client: Client, incident: str | None, text: str) -> None:
    """On the incident's timeline, so the post-mortem has it. Best effort: the store may be the
    thing that is down, and the action itself has already happened."""
    try:
        if incident is None:
            open_ones = await client.incidents()
            if len(open_ones) != 1:
                return
            incident = str(open_ones[0].number)
        await client.incident_update(incident, text, kind="action")
        out.print(f"[dim]written on incident #{incident}[/dim]")
    except ApiError as error:
        err.print(f"[yellow]not written on the incident:[/yellow] {error.message}")


def _workload_action(
    action: Action,
    target: str,
    namespace: str,
    data_dir: Path,
    yes: bool,
    incident: str | None,
) -> None:
    where = _target(target, namespace, data_dir)

    async def apply(client: Client) -> str:
        try:
            return await where.apply(action)
        except (LookupError, ValueError) as error:
            raise Unsupported(str(error)) from error

    _mitigate(action, where.plan(action), apply, yes, incident)


@oncall_app.command("scale")
def oncall_scale(
    workload: str,
    replicas: Annotated[int, typer.Argument(min=1)],
    target: TargetOpt = "local",
    namespace: NamespaceOpt = "secureconnect-prod",
    data_dir: DataDirOpt = Path("data"),
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Set a deployment's replicas (runbook 23.5 step 4, 23.6). Asks first."""
    _workload_action(
        Action("scale", workload, replicas),
        target,
        namespace,
        data_dir,
        yes,
        incident,
    )


def _workload_command(kind: Literal["restart", "rollback"], doc: str) -> None:
    """restart and rollback take the same options; one definition serves both."""

    def command(
        workload: str,
        target: TargetOpt = "local",
        namespace: NamespaceOpt = "secureconnect-prod",
        data_dir: DataDirOpt = Path("data"),
        yes: YesOpt = False,
        incident: IncidentOpt = None,
    ) -> None:
        _workload_action(Action(kind, workload), target, namespace, data_dir, yes, incident)

    command.__doc__ = doc
    oncall_app.command(kind)(command)


_workload_command(
    "restart",
    "Restart a deployment's pods, or the local serve processes (runbook 23.5, 23.6). Asks first.",
)
_workload_command(
    "rollback", "Go back to the deployment's previous revision (runbook 23.9). Asks first."
)


@oncall_app.command("block")
def oncall_block(
    network: Annotated[str, typer.Argument(help="an address or CIDR, e.g. 203.0.113.7")],
    reason: Annotated[str, typer.Option(help="why, for the deny list and the timeline")],
    expires_in: Annotated[
        int | None, typer.Option(help="seconds until it lifts by itself", min=1)
    ] = None,
    target: TargetOpt = "local",
    namespace: NamespaceOpt = "secureconnect-prod",
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Refuse every request from an address or network at the API, and with --target
    kubernetes at the ingress too (runbook 23.8). Asks first."""
    edge = _edge(target, namespace)

    async def apply(client: Client) -> str:
        done = await client.block(network, reason, expires_in)
        result = f"{done.network} blocked" + (" (already was)" if done.already else "")
        if edge is not None:
            result += "; " + await edge.apply(Action("block", done.network))
        return result

    plan = f"block {network} on every replica" + (f" for {expires_in} s" if expires_in else "")
    if edge is not None:
        plan += f", and add it to the ingress's deny list in {namespace}"
        if expires_in:
            plan += " (the ingress entry stays until `oncall unblock`)"
    _mitigate(Action("block", network), plan, apply, yes, incident)


def _edge(target: str, namespace: str) -> Target | None:
    """The cluster whose ingress also blocks, or None for the API's deny list alone."""
    return _target(target, namespace, Path("data")) if target == "kubernetes" else None


@oncall_app.command("compromise")
def oncall_compromise(
    reason: Annotated[str, typer.Option(help="why: mailed to the users, and on the timeline")],
    all_users: Annotated[bool, typer.Option("--all", help="every user")] = False,
    users: Annotated[
        list[str] | None, typer.Option("--user", help="a user (repeat for several)")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="count what it would do; change nothing")] = False,
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Breach procedure (runbook 23.8): log out and revoke every device of the users, make them
    change their password, mail them why. The same command again does nothing twice."""
    if all_users == bool(users):
        err.print("[red]error:[/red] say --all, or name users with --user, not both")
        raise typer.Exit(2)
    names = None if all_users else list(users or [])
    scope = "--all" if names is None else " ".join(f"--user {n}" for n in names)

    def summary(report: CompromiseReport) -> str:
        return (
            f"{report.users} user(s) ({report.already} already done), "
            f"{report.sessions_revoked} session(s) and {report.devices_revoked} device(s) "
            f"revoked, {report.mailed} mailed, {report.no_address} without an address"
        )

    if dry_run:

        async def preview(client: Client, state: Profile) -> None:
            report = await client.compromise(reason, names, dry_run=True)
            out.print(f"dry run, nothing changed: would affect {summary(report)}")

        client_command(preview)()
        return

    async def apply(client: Client) -> str:
        return summary(await client.compromise(reason, names))

    who = "every user" if names is None else ", ".join(names)
    plan = f"revoke every session and device of {who}, require a new password, mail them the reason"
    _mitigate(Action("compromise", scope), plan, apply, yes, incident)


@oncall_app.command("notify-users")
def oncall_notify_users(
    subject: Annotated[str, typer.Option(help="the mail's subject")],
    body_file: Annotated[
        Path, typer.Option(help="the mail's text", exists=True, dir_okay=False, readable=True)
    ],
    dry_run: Annotated[bool, typer.Option(help="count who would get it; send nothing")] = False,
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Email every user with a verified address (runbook 23.8), with progress. Interrupted, run
    it again: it goes on where it stopped and never mails anyone twice."""
    text = body_file.read_text()

    async def preview(client: Client, state: Profile) -> None:
        p = await client.notify_users(subject, text, dry_run=True)
        out.print(
            f"dry run, nothing sent: {p.remaining} to mail, {p.sent} already had it, "
            f"{p.no_address} without an address"
        )

    if dry_run:
        client_command(preview)()
        return

    async def apply(client: Client) -> str:
        while True:
            p = await client.notify_users(subject, text)
            out.print(f"sent {p.sent}, {p.remaining} to go", markup=False)
            if p.remaining == 0 or p.sent_now == 0:
                break
        tail = f", {p.remaining} not sent (mail server refused; run again)" if p.remaining else ""
        return f"{p.sent} user(s) mailed, {p.no_address} without an address{tail}"

    _mitigate(
        Action("notify-users", "--subject ... --body-file ..."),
        f'mail "{subject}" to every user with a verified address',
        apply,
        yes,
        incident,
    )


@oncall_app.command("unblock")
def oncall_unblock(
    network: str,
    target: TargetOpt = "local",
    namespace: NamespaceOpt = "secureconnect-prod",
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Lift a block (it stays in the deny list's history), and with --target kubernetes take
    it off the ingress's deny list too. Asks first."""
    edge = _edge(target, namespace)

    async def apply(client: Client) -> str:
        try:
            lifted = (await client.unblock(network)).network
            result = f"{lifted} unblocked"
        except ApiError as error:
            if edge is None or error.code != "not_blocked":
                raise
            lifted = str(ipaddress.ip_network(network.strip(), strict=False))
            result = error.message
        if edge is not None:
            result += "; " + await edge.apply(Action("unblock", lifted))
        return result

    plan = f"lift the block on {network}" + (
        f", at the API and on the ingress in {namespace}" if edge is not None else ""
    )
    _mitigate(Action("unblock", network), plan, apply, yes, incident)


@oncall_app.command("rotate-db-password")
def oncall_rotate_db_password(
    target: TargetOpt = "local",
    namespace: NamespaceOpt = "secureconnect-prod",
    data_dir: DataDirOpt = Path("data"),
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """A new PostgreSQL password for the services' role (runbook 23.8, a leaked database
    password): set in PostgreSQL, written where the services read it (the Kubernetes Secret, or
    the local config file), the services restarted, the old password checked refused. Asks
    first. The password is made here and never printed; PostgreSQL gets only its verifier."""
    # Here, not at the top: SQLAlchemy is a tenth of a second of every other command's start.
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from secureconnect.store.credentials import scram_verifier

    where = _target(target, namespace, data_dir)
    try:
        home = where.url_home
        current = make_url(where.read_database_url())
    except (Unsupported, LookupError, ArgumentError) as error:
        err.print(f"[red]not done:[/red] {escape(str(error))}")
        raise typer.Exit(1) from error
    if not current.drivername.startswith("postgresql") or not current.username:
        err.print(
            "[red]not done:[/red] the services' database is not PostgreSQL with a role and "
            "password (the embedded SQLite database has none)"
        )
        raise typer.Exit(1)
    old = current.password or ""
    still_accepted = False

    async def apply(client: Client) -> str:
        nonlocal still_accepted
        fresh = secrets.token_urlsafe(32)
        # Written first: the services read it only when they restart, after the change.
        where.write_database_url(current.set(password=fresh).render_as_string(False))
        try:
            role = (await client.change_store_password(scram_verifier(fresh))).role
        except BaseException:
            where.write_database_url(current.render_as_string(False))  # back as it was
            raise
        restarted = await where.restart_with_database_url()
        result = f"role {role}: a new password, kept in {home}; {restarted}"
        if await client.store_accepts_password(old):
            still_accepted = True
            return (
                f"{result}; BUT PostgreSQL still accepts the old password: its pg_hba.conf "
                "does not check passwords on the services' connections (trust)"
            )
        return f"{result}; the old password is refused"

    plan = (
        f"give PostgreSQL role {current.username} a new password, write it to {home}, "
        "restart the services that read it, and check that the old one is refused"
    )
    _mitigate(Action("rotate-db-password", current.username), plan, apply, yes, incident)
    if still_accepted:
        raise typer.Exit(1)


@oncall_app.command("durability")
def oncall_durability(
    mode: Annotated[
        str,
        typer.Argument(
            help="sync (every commit waits for a standby: LOCAL_QUORUM) or local (the primary "
            "alone: LOCAL_ONE, the emergency while a standby is lost)"
        ),
    ],
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Switch PostgreSQL's commit durability on the primary (runbook 23.7). Asks first."""
    if mode not in ("sync", "local"):
        err.print("[red]error:[/red] mode is sync or local")
        raise typer.Exit(2)

    async def apply(client: Client) -> str:
        report = await client.set_durability(mode)
        settings = ", ".join(f"{k}={v}" for k, v in report.consistency.items())
        streaming = sum(1 for sb in report.standbys if sb.state == "streaming")
        return f"{settings} on {report.node or 'the primary'}; {streaming} standby(s) streaming"

    plan = (
        "make every commit wait until a standby has it (synchronous_commit=on)"
        if mode == "sync"
        else "let commits wait for the primary's disk only (synchronous_commit=local): "
        "writes go on without a standby, and what a lost primary had not sent is lost with it"
    )
    _mitigate(Action("durability", mode), plan, apply, yes, incident)


@oncall_app.command("rate-limit")
def oncall_rate_limit(
    mode: Annotated[
        str, typer.Argument(help="emergency (1 request a minute per address) or normal")
    ],
    yes: YesOpt = False,
    incident: IncidentOpt = None,
) -> None:
    """Switch the API's emergency rate limit on or off (runbook 23.8, DDoS). Asks first."""

    async def apply(client: Client) -> str:
        return f"rate-limit mode {(await client.set_rate_limit(mode)).mode}"

    _mitigate(
        Action("rate-limit", mode),
        f"set the API's rate-limit mode to {mode} on every replica",
        apply,
        yes,
        incident,
    )
