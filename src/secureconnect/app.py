"""Builds the ASGI application for a role.

Every role shares the edge (errors, request logs, body limits, auth) and ops routes; the role
decides which domain routers are mounted. ``all`` mounts everything in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from secureconnect import __version__
from secureconnect.accounts.routes import router as accounts_router
from secureconnect.blobs.routes import CHUNK_PATH
from secureconnect.blobs.routes import router as blobs_router
from secureconnect.blobs.schemas import MAX_CHUNK
from secureconnect.chat.realtime import GOING_AWAY
from secureconnect.chat.routes import REALTIME_PATH, events
from secureconnect.chat.routes import router as chat_router
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.config import Settings
from secureconnect.edge import apidocs
from secureconnect.edge.errors import install_error_handlers
from secureconnect.edge.guard import GuardMiddleware
from secureconnect.edge.logging import BodyLimitMiddleware, RequestLogMiddleware
from secureconnect.guard.routes import router as guard_router
from secureconnect.incidents import reminders
from secureconnect.incidents.notify import notifiers
from secureconnect.incidents.routes import public as status_router
from secureconnect.incidents.routes import router as incidents_router
from secureconnect.keys.routes import router as keys_router
from secureconnect.ops.routes import router as ops_router
from secureconnect.profiles.images import MAX_UPLOAD_BYTES
from secureconnect.profiles.routes import PICTURE_PATHS
from secureconnect.profiles.routes import groups as group_profiles_router
from secureconnect.profiles.routes import router as profiles_router
from secureconnect.schemas import ERROR_RESPONSES
from secureconnect.services import Services, build_services
from secureconnect.store.migrate import upgrade
from secureconnect.suggest.routes import router as suggest_router
from secureconnect.video.probe import start_media_probe
from secureconnect.video.routes import router as calls_router

log = logging.getLogger("secureconnect")

ROLE_ROUTERS: dict[str, list[APIRouter]] = {
    "all": [
        accounts_router,
        keys_router,
        chat_router,
        blobs_router,
        profiles_router,
        group_profiles_router,
        incidents_router,
        guard_router,
        status_router,
        calls_router,
        suggest_router,
    ],
    "api-gateway": [
        accounts_router,
        keys_router,
        profiles_router,
        incidents_router,
        guard_router,
        status_router,
        suggest_router,
    ],
    "chat-service": [chat_router, blobs_router, group_profiles_router],
    "video-service": [calls_router],
}


class SecureConnectApp(FastAPI):
    """The app, with the realtime socket (where this role serves it) taken ahead of the
    middleware stack and the router: it is the one long-lived request, held open by every
    device at once, and it applies the guard itself (``chat.routes.events``)."""

    realtime: ASGIApp | None = None

    def __call__(  # type: ignore[override]
        self, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        # Not a coroutine of its own: it hands over what serves the request, so that an idle
        # socket does not keep this frame too (about 0.3 KiB each).
        if (
            self.realtime is not None
            and scope["type"] == "websocket"
            and scope["path"] == REALTIME_PATH
        ):
            scope["app"] = self
            return self.realtime(scope, receive, send)
        return super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    settings = settings or Settings()
    services = build_services(settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if services.db.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.auto_migrate:
            await upgrade(services.db)
        await services.bus.start()
        await _record_deploy(services)
        guard = asyncio.create_task(services.guard.run())
        children = [
            asyncio.create_task(child.run())
            for child in (services.sfu, services.turn, services.calls)
            if child is not None
        ]
        probe = (
            await start_media_probe(settings.host, settings.media_probe_port)
            if settings.role in ("all", "video-service") and settings.media_probe_port
            else None
        )
        reminders = (
            asyncio.create_task(_reminders(services))
            if settings.role in ("all", "api-gateway")
            else None
        )
        collector = (
            asyncio.create_task(_collect_blobs(services)) if services.blobs is not None else None
        )
        log.info("started", extra={"fields": {"role": settings.role, "version": __version__}})
        try:
            yield
        finally:
            services.draining = True
            if services.calls is not None:
                try:  # the calls hosted here move to another replica
                    await services.calls.release()
                except Exception:
                    log.warning("could not release the calls hosted here", exc_info=True)
            guard.cancel()
            if probe is not None:
                probe.close()
            for child in reversed(children):  # calls first, then coturn and Janus
                child.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child
            if reminders is not None:
                reminders.cancel()
            if collector is not None:
                collector.cancel()
            services.hub.close_all(GOING_AWAY, "server shutting down; reconnect")
            await services.hub.acks.close()
            await services.bus.close()
            if services.accounts.email is not None:
                await services.accounts.email.drain()
            if services.limits is not None:
                await services.limits.aclose()
            if services.accounts.throttle is not None:
                await services.accounts.throttle.aclose()
            if services.blobs is not None:
                await services.blobs.storage.close()
            await services.db.close()
            log.info("stopped", extra={"fields": {"role": settings.role}})

    app = SecureConnectApp(
        title="SecureConnect",
        version=__version__,
        summary="End-to-end encrypted chat and calls. The server relays ciphertext only.",
        lifespan=lifespan,
        docs_url=None,  # served from the package below, not from a CDN
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    apidocs.install(app)
    app.include_router(ops_router, responses=ERROR_RESPONSES)
    for router in ROLE_ROUTERS[settings.role]:
        app.include_router(router, responses=ERROR_RESPONSES)
    if chat_router in ROLE_ROUTERS[settings.role]:
        app.realtime = events
    if settings.role in ("all", "api-gateway"):
        # The web client: plain ES modules, no build step, served by the server itself.
        static = Path(str(resources.files("secureconnect").joinpath("static")))
        app.mount("/static", StaticFiles(directory=static), name="static")
        app.add_api_route("/", _landing, include_in_schema=False, response_class=HTMLResponse)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        # Attachment chunks stream to storage; pictures are read whole (then re-encoded).
        larger={CHUNK_PATH: MAX_CHUNK, PICTURE_PATHS: MAX_UPLOAD_BYTES},
    )
    app.add_middleware(GuardMiddleware, guard=services.guard, limits=services.limits)
    app.add_middleware(RequestLogMiddleware, metrics=services.metrics)
    return app


async def _reminders(services: Services) -> None:
    owner, stakeholders = notifiers(services.settings)
    while True:
        await asyncio.sleep(services.settings.reminder_check_s)
        try:
            await reminders.remind(services.incidents, owner, stakeholders)
        except Exception:  # the store may be down; try again on the next round
            log.exception("reminder round failed")


async def _collect_blobs(services: Services) -> None:
    assert services.blobs is not None
    while True:
        await asyncio.sleep(services.settings.blob_gc_interval_s)
        try:
            await services.blobs.collect()
        except Exception:  # the store may be down; try again on the next round
            log.exception("blob collection round failed")


async def _record_deploy(services: Services) -> None:
    settings = services.settings
    try:
        if await services.deploys.record(
            settings.role, settings.effective_release, socket.gethostname()
        ):
            log.info("deploy", extra={"fields": {"release": settings.effective_release}})
    except Exception:  # the store may be down at start; serving must not wait on history
        log.warning("could not record the deploy", exc_info=True)


async def _landing() -> HTMLResponse:
    page = resources.files("secureconnect").joinpath("static/index.html").read_text("utf-8")
    return HTMLResponse(page)
