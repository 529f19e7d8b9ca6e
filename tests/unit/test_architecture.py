"""The arrows of the architecture that import-linter cannot express: a service reaches another
only through its service.py (composition modules excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
ROOMS = {"models", "routes", "schemas", "actors"}
# Modules whose job is to compose services: they may import any room.
COMPOSITION = {"app.py", "worker.py", "cli.py", "asgi.py", "http.py", "tables.py", "runtime.py"}


def _service_of(path: Path) -> str | None:
    parts = path.relative_to(SERVICES).parts
    return parts[0] if len(parts) > 1 else None


def test_services_use_each_other_only_through_service_py() -> None:
    problems = []
    for path in SERVICES.rglob("*.py"):
        rel = path.relative_to(SERVICES).as_posix()
        if rel in COMPOSITION or "migrations" in rel:
            continue
        own = _service_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if len(parts) >= 3 and parts[0] == "services" and parts[2] in ROOMS and parts[1] != own:
                    problems.append(f"{rel} imports {name}")
    assert problems == []
