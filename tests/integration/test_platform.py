"""Health, readiness, API docs, request ids and problem+json for unknown routes."""

from __future__ import annotations

from tests.conftest import World


async def test_health_and_readiness(world: World) -> None:
    api = await world.client()
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


async def test_openapi_documents_the_api(world: World) -> None:
    api = await world.client()
    schema = (await api.get("/docs/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    assert "/api/v1/auth/signup" in schema["paths"]
    assert "/api/v1/members" in schema["paths"]
    assert set(schema["components"]["securitySchemes"]) >= {"session", "csrf", "oauth2"}
    assert schema["paths"]["/api/v1/members"]["get"]["security"] == [{"session": []}, {"oauth2": ["members:read"]}]


async def test_request_ids_and_problem_json_for_unknown_routes(world: World) -> None:
    api = await world.client()
    response = await api.get("/api/v1/nothing-here", headers={"X-Request-ID": "trace-abcdef12"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"
    assert response.headers["x-request-id"] == "trace-abcdef12"
    generated = await api.get("/healthz", headers={"X-Request-ID": "bad id!"})
    assert generated.headers["x-request-id"] != "bad id!"
