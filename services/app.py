"""create_app(): composes every service's routes, dependencies, errors and the API docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import services.tables  # (the whole schema is mapped before the first request)
import services.worker  # noqa: F401  (broker and actors exist before the first request)
from services.accounts.member_pages import PAGES as MEMBER_PAGES
from services.accounts.pages import PAGES as ACCOUNT_PAGES
from services.accounts.routes import AuthController, TenantController
from services.accounts.viewers import PAGE_DEPENDENCIES, PAGE_ERRORS, unknown_address
from services.audit.routes import CONTROLLERS as AUDIT_CONTROLLERS
from services.automation.routes import CONTROLLERS as AUTOMATION_CONTROLLERS
from services.db import dispose_databases
from services.files import service as files
from services.files.pages import PAGES as FILE_PAGES
from services.files.routes import CONTROLLERS as FILES_CONTROLLERS
from services.gallery import service as gallery
from services.gallery.pages import PAGES as GALLERY_PAGES
from services.gallery.routes import CONTROLLERS as GALLERY_CONTROLLERS
from services.http import (
    EXCEPTION_HANDLERS,
    JsonRequest,
    RequestContextMiddleware,
    RequestInputMiddleware,
    SecurityHeadersMiddleware,
    provide_db,
    provide_settings,
    word_problems_with,
)
from services.marketplace import host as plugin_host
from services.marketplace import service as marketplace
from services.marketplace.routes import CONTROLLERS as MARKETPLACE_CONTROLLERS
from services.notifications import service as notifications
from services.notifications.pages import PAGES as NOTIFICATION_PAGES
from services.notifications.routes import CONTROLLERS as NOTIFICATIONS_CONTROLLERS
from services.oauth.pages import PAGES as OAUTH_PAGES
from services.oauth.principals import provide_optional_principal, provide_principal, send_quota_headers
from services.oauth.routes import CONTROLLERS as OAUTH_CONTROLLERS
from services.openapi import StrictStructSchemaPlugin, document_operations, openapi_config
from services.platform.routes import healthz, readyz
from services.ratelimit import rate_limiter
from services.records.routes import CONTROLLERS as RECORDS_CONTROLLERS
from services.runtime import EmbeddedRuntime
from services.settings import Settings, load_settings
from services.sops.calendar.routes import CONTROLLERS as CALENDAR_CONTROLLERS
from services.sops.library.pages import PAGES as LIBRARY_PAGES
from services.sops.procedures.routes import CONTROLLERS as PROCEDURES_CONTROLLERS
from services.sops.runs.pages import PAGES as RUN_PAGES
from services.sops.runs.routes import CONTROLLERS as RUNS_CONTROLLERS
from services.sops.runs.run_inputs import PAGES as RUN_INPUT_PAGES
from services.sops.runs.run_pages import PAGES as RUN_PAGE_PAGES
from services.web.i18n import AcceptLanguageMiddleware, problem_wording
from services.web.pages import PAGES as WEB_PAGES
from services.web.static_files import static_router
from services.web.templating import template_config
from services.webhooks import service as webhooks
from services.webhooks.routes import CONTROLLERS as WEBHOOKS_CONTROLLERS

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, embedded: bool = False) -> Litestar:
    """The ASGI app. ``embedded`` also runs the worker and the outbox relay in this process."""
    settings = settings or load_settings()
    files.configure(settings)
    word_problems_with(problem_wording)
    marketplace.configure(settings)
    gallery.configure(settings)
    notifications.configure(settings)
    webhooks.configure(settings)
    marketplace.activate(*marketplace.load_plugins(settings))
    plugin_host.use_platform_mail(settings)
    runtime = EmbeddedRuntime(worker_threads=settings.worker_threads, relay_interval=settings.relay_interval_seconds)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await marketplace.list_deployed_plugins()
        if embedded:
            await runtime.start()
        try:
            yield
        finally:
            if embedded:
                await runtime.stop()
            await dispose_databases()

    app = Litestar(
        route_handlers=[
            Router(
                path="/",
                route_handlers=[
                    AuthController,
                    TenantController,
                    *AUDIT_CONTROLLERS,
                    *GALLERY_CONTROLLERS,
                    *FILES_CONTROLLERS,
                    *RECORDS_CONTROLLERS,
                    *CALENDAR_CONTROLLERS,
                    *PROCEDURES_CONTROLLERS,
                    *RUNS_CONTROLLERS,
                    *AUTOMATION_CONTROLLERS,
                    *NOTIFICATIONS_CONTROLLERS,
                    *MARKETPLACE_CONTROLLERS,
                    *OAUTH_CONTROLLERS,
                    *WEBHOOKS_CONTROLLERS,
                ],
            ),
            # The pages: HTML for people, errors included (the API's routes answer problem+json).
            Router(
                path="/",
                route_handlers=[
                    *WEB_PAGES,
                    *ACCOUNT_PAGES,
                    *MEMBER_PAGES,
                    *RUN_PAGES,
                    *RUN_PAGE_PAGES,
                    *RUN_INPUT_PAGES,
                    *LIBRARY_PAGES,
                    *GALLERY_PAGES,
                    *NOTIFICATION_PAGES,
                    *FILE_PAGES,
                    *OAUTH_PAGES,
                ],
                dependencies=PAGE_DEPENDENCIES,
                exception_handlers=PAGE_ERRORS,
                include_in_schema=False,
            ),
            healthz,
            readyz,
            static_router(),
        ],
        dependencies={
            "db": Provide(provide_db),
            "principal": Provide(provide_principal),
            "optional_principal": Provide(provide_optional_principal),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers={**EXCEPTION_HANDLERS, NotFoundException: unknown_address},
        middleware=[RequestInputMiddleware()],
        request_class=JsonRequest,
        openapi_config=openapi_config(API_VERSION),
        template_config=template_config(),
        plugins=[StrictStructSchemaPlugin()],
        lifespan=[lifespan],
        before_send=[send_quota_headers],
        logging_config=None,
        debug=False,
    )
    document_operations(app)
    # Outermost, so that every request (unknown routes included) gets an id, a log line and the
    # security headers.
    app.asgi_handler = RequestContextMiddleware(SecurityHeadersMiddleware(AcceptLanguageMiddleware(app.asgi_handler)))
    # The client's address and scheme come from X-Forwarded-For/-Proto only when the peer is a listed
    # proxy (GUIJU_TRUSTED_PROXIES), whichever server runs the app; with none listed, the peer is the
    # client and nothing needs reading.
    if settings.trusted_proxies:
        trusted = list(settings.trusted_proxies)
        app.asgi_handler = ProxyHeadersMiddleware(app.asgi_handler, trusted_hosts=trusted)  # type: ignore[arg-type,assignment]
    app.state.settings = settings
    app.state.rate_limiter = rate_limiter(settings.redis_url)
    app.state.embedded = embedded
    return app
