"""A workspace with one of each thing the API's paths name, so that fuzzed requests reach the
services' logic instead of stopping at 404: Schemathesis is given these ids as path parameters."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

PASSWORD = "Fuzz-Tea-Garden-2026"
STARTER = {"kind": "starter"}


class Seeder:
    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)
        self.headers: dict[str, str] = {}

    def call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=self.headers, **kwargs)
        if response.status_code != expected:
            raise RuntimeError(f"seeding: {method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def sign_up(self) -> dict[str, str]:
        body = {
            "email": f"fuzz-{uuid.uuid4().hex[:10]}@example.com",
            "password": PASSWORD,
            "display_name": "Fuzz",
            "company_name": "Fuzz Trading",
            "industry": "general",
            "locale": "en",
        }
        signed_up = self.call("POST", "/api/v1/auth/signup", 201, json=body)
        cookie = self.client.cookies.get("guiju_session")
        if not cookie:
            raise RuntimeError("seeding: sign-up set no session cookie")
        # Sent explicitly from here on (Schemathesis gets the same two headers).
        self.client.cookies.clear()
        self.headers = {"Cookie": f"guiju_session={cookie}", "X-CSRF-Token": signed_up["csrf_token"]}
        return self.headers

    def workspace(self) -> dict[str, str | int]:
        """Create the things; returns Schemathesis parameters (``path.<name>``: value)."""
        entity = self.call(
            "POST", "/api/v1/entities", 201, json={"name": "Fuzz HK", "country": "HK", "currency": "HKD"}
        )
        collection = self.call(
            "POST",
            "/api/v1/collections",
            201,
            json={
                "key": "orders",
                "name": "Orders",
                "fields": [
                    {"key": "customer", "label": "Customer", "type": "text"},
                    {"key": "amount", "label": "Amount", "type": "money", "currency": "CNY"},
                    {"key": "quantity", "label": "Quantity", "type": "number"},
                    {"key": "ship_by", "label": "Ship by", "type": "date"},
                ],
            },
        )
        record = self.call(
            "POST",
            f"/api/v1/collections/{collection['id']}/records",
            201,
            json={"values": {"customer": "Hamburg Tea GmbH", "amount": {"amount": 680000, "currency": "CNY"}}},
        )
        definition = {
            "start": "check",
            "steps": [
                {
                    "kind": "task",
                    "key": "check",
                    "title": "Check the order",
                    "owner": STARTER,
                    "next": "review",
                    "exceptions": [{"key": "damaged", "label": "Damaged", "notify": [STARTER]}],
                },
                {
                    "kind": "approval",
                    "key": "review",
                    "title": "Review",
                    "owner": {"kind": "role", "role": "manager"},
                    "on_reject": {"goto": "check"},
                },
            ],
        }
        procedure = self.call(
            "POST",
            "/api/v1/procedures",
            201,
            json={
                "key": "ship_order",
                "title": "Ship an order",
                "collection_id": collection["id"],
                "definition": definition,
            },
        )
        version_id = procedure["draft_version_id"]
        self.call(
            "POST",
            f"/api/v1/procedures/{procedure['id']}/versions/{version_id}/publish",
            200,
            json={"change_note": "First version"},
        )
        run = self.call("POST", "/api/v1/runs", 201, json={"procedure_id": procedure["id"], "record_id": record["id"]})
        step_id = run["steps"][0]["id"]
        exception = self.call(
            "POST", f"/api/v1/runs/{run['id']}/exceptions", 201, json={"kind": "damaged", "step_id": step_id}
        )
        automation = self.call(
            "POST",
            "/api/v1/automations",
            201,
            json={
                "name": "Inbound orders",
                "trigger": {"type": "webhook"},
                "actions": [{"kind": "start_run", "procedure_id": procedure["id"]}],
            },
        )
        webhook = self.call("POST", f"/api/v1/automations/{automation['id']}/webhook/rotate", 200)
        invitation = self.call(
            "POST", "/api/v1/invitations", 201, json={"email": "invitee@example.com", "role": "member"}
        )
        uploaded = self.call(
            "POST", "/api/v1/files", 201, files={"file": ("receipt.txt", b"receipt 2026-1121-07", "text/plain")}
        )
        return {
            "path.entity_id": entity["id"],
            "path.collection_id": collection["id"],
            "path.record_id": record["id"],
            "path.procedure_id": procedure["id"],
            "path.version_id": version_id,
            "path.run_id": run["id"],
            "path.step_id": step_id,
            "path.exception_id": exception["id"],
            "path.automation_id": automation["id"],
            "path.token": webhook["url"].rsplit("/", 1)[1],
            "path.invitation_id": invitation["id"],
            "path.file_id": uploaded["id"],
            "path.pack_id": "general-starter",
            "path.name": "messaging",
        }

    def close(self) -> None:
        self.client.close()
