"""``/static``: the pages' styles, scripts and icons, compressed and cached for good.

- **Compressed.** Every file the client accepts gzip for is sent gzipped (Litestar's compression
  middleware, on this router only). The pages themselves are not compressed: they carry the
  session's CSRF token beside text the address reflects (a search), which a compression
  side channel (BREACH) could read out over HTTPS.
- **Cached.** A page names each file with :func:`~services.web.templating.static_url`, which adds
  ``?v=<hash of the file>``. An address whose ``v`` is the file's current hash never changes
  content, so it is cached for a year as ``immutable`` (no revalidation on reload); any other
  address of a file (no ``v``, an old one) must be revalidated, so nobody keeps a stale copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

from litestar import Router
from litestar.config.compression import CompressionConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.middleware.compression import CompressionMiddleware
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.web.templating import STATIC_DIR, STATIC_PREFIX, static_digest

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
#: Smaller files gain nothing from compression (the favicon, a tiny stylesheet).
COMPRESS_FROM_BYTES: Final = 500


def static_files(directory: Path = STATIC_DIR) -> frozenset[str]:
    """The files under ``directory``, as the paths ``static_url`` names them (``app/app.css``)."""
    return frozenset(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


class StaticCacheMiddleware(ASGIMiddleware):
    """Sets each static answer's ``Cache-Control`` from its address (see the module's docstring)."""

    def __init__(self, files: frozenset[str]) -> None:
        self.files = files

    def cache_control(self, scope: Scope) -> str:
        relative = scope["path"].removeprefix(f"{STATIC_PREFIX}/")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        versions = query.get("v", [])
        # Only a known file is hashed (an address never makes the server read outside the folder).
        if relative in self.files and len(versions) == 1 and versions[0] == static_digest(relative):
            return IMMUTABLE
        return REVALIDATE

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        policy = self.cache_control(scope)

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                MutableScopeHeaders(message)["cache-control"] = policy
            await send(message)

        await next_app(scope, receive, send_with_policy)


def static_router(directory: Path = STATIC_DIR) -> Router:
    """The router that serves ``directory`` under ``/static``."""
    compression = CompressionConfig(backend="gzip", minimum_size=COMPRESS_FROM_BYTES)
    return create_static_files_router(
        path=STATIC_PREFIX,
        directories=[directory],
        include_in_schema=False,
        name="static",
        # The cache policy wraps compression: it sees the answer's first message before it is encoded.
        middleware=[
            StaticCacheMiddleware(static_files(directory)),
            DefineMiddleware(CompressionMiddleware, config=compression),
        ],
    )
