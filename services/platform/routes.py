"""Liveness and readiness endpoints."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.openapi import ResponseSpec

from services.platform import service


@get("/healthz", tags=["platform"], summary="Liveness: the process answers", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["platform"],
    summary="Readiness: the database and the broker answer",
    responses={
        503: ResponseSpec(
            dict[str, Any], generate_examples=False, description="Not ready: `checks` says which check failed"
        )
    },
)
async def readyz() -> Response[dict[str, Any]]:
    checks = await service.readiness()
    ready = all(v == "ok" for v in checks.values())
    return Response({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)
