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


def test_only_the_composition_modules_import_actors() -> None:
    """An actors module imports its service; the service sends to its actors by name
    (services.broker.send / send_after_commit), so no service module reaches an actors module."""
    import grimp

    graph = grimp.build_graph("services", "tenants")
    composition = {"services." + name.removesuffix(".py").replace("/", ".") for name in COMPOSITION}
    problems = []
    for actors in sorted(m for m in graph.modules if m.endswith(".actors")):
        for importer in sorted(graph.find_modules_that_directly_import(actors) - composition):
            problems.append(f"{importer} imports {actors}")
        for module in sorted(graph.modules):
            if module.endswith(".service") and graph.chain_exists(importer=module, imported=actors):
                problems.append(f"{module} reaches {actors}")
    assert problems == []


def test_the_modules_of_a_service_import_one_another_without_cycles() -> None:
    """A service split into modules keeps an order: each imports only those before it."""
    import itertools

    import grimp

    graph = grimp.build_graph("services", "tenants")
    by_service: dict[str, list[str]] = {}
    for module in graph.modules:
        parts = module.split(".")
        if len(parts) >= 3 and parts[0] == "services":
            by_service.setdefault(parts[1], []).append(module)
    cycles = [
        f"{a} <-> {b}"
        for modules in by_service.values()
        for a, b in itertools.combinations(sorted(modules), 2)
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert cycles == []
