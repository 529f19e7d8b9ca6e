"""The checks a plugin distribution passes before it is published: ``guiju plugin check``.

:func:`run_checks` takes a distribution's source directory (holding ``pyproject.toml``) or a built
wheel and runs every check, each reported pass or fail with its details:

- ``manifest``: one entry point in the group ``guiju``; the plugin loads (in a subprocess, see
  :mod:`services.marketplace.probe`) and registers one ``PluginInfo``; the manifest built from what
  it registers has no problem (:func:`guiju_sdk.manifest_problems`);
- ``api_range``: the plugin's API range includes the SDK's API version;
- ``hooks``: the plugin implements only hooks the SDK specifies, and every registration is
  accepted (names, zh-CN and en labels, schemas, time limits);
- ``imports``: no Python file of the distribution imports the host's code (``services``,
  ``tenants``): a plugin imports only ``guiju_sdk``;
- ``tests``: the distribution's own tests pass (``pytest`` on its ``tests/`` directory).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PathDistribution
from pathlib import Path
from typing import Any

from guiju_sdk import API_VERSION, ENTRY_POINT_GROUP, manifest_problems

PROBE = Path(__file__).with_name("probe.py")
PROBE_TIMEOUT_SECONDS = 60
TESTS_TIMEOUT_SECONDS = 300
#: The host's top-level packages: a plugin never imports them.
HOST_PACKAGES = frozenset({"services", "tenants"})
#: The last lines of a failing subprocess's output kept in a check's details.
OUTPUT_LINES_KEPT = 30
CHECK_NAMES = ("manifest", "api_range", "hooks", "imports", "tests")


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CheckReport:
    """Every check of one distribution, in order, and the manifest built from what the plugin
    registers (``None`` when it did not load): what the publishing flow stores for the version."""

    path: str
    checks: list[CheckResult]
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """The checks as JSON-ready data (the manifest is stored on its own)."""
        return {
            "path": self.path,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "details": list(c.details)} for c in self.checks],
        }


@dataclass(frozen=True)
class _Distribution:
    """What the checks need of a source directory or a wheel."""

    root: Path  # the source directory, or the wheel's (or its extraction's) directory
    import_path: Path  # what goes on PYTHONPATH to import the plugin
    entry_points: list[tuple[str, str]]  # (name, value) in the group ``guiju``
    python_files: list[tuple[str, str]]  # (path shown in details, source)
    tests: Path | None  # the tests directory, when the distribution carries one


def run_checks(path: Path) -> CheckReport:
    """Run every check on the distribution at ``path`` (a source directory or a ``.whl``)."""
    shown, path = str(path), Path(path).resolve()  # subprocesses run elsewhere: absolute paths
    if path.is_file() and path.suffix == ".whl":
        with tempfile.TemporaryDirectory(prefix="guiju-plugin-check-") as scratch:
            return _run(shown, _wheel(path, Path(scratch)))
    if (path / "pyproject.toml").is_file():
        try:
            return _run(shown, _source(path))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            reason = f"pyproject.toml cannot be read: {exc}"
    else:
        reason = f"{shown} is neither a directory holding pyproject.toml nor a .whl file"
    return CheckReport(shown, [CheckResult(name, False, [reason]) for name in CHECK_NAMES])


# ---------------------------------------------------------------- reading the distribution


def _python_sources(root: Path) -> Iterator[tuple[str, str]]:
    for folder, subfolders, names in os.walk(root):
        # Virtual environments, caches and tool directories are not the plugin's code.
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            file = Path(folder) / name
            yield file.relative_to(root).as_posix(), file.read_text(encoding="utf-8", errors="replace")


def _source(root: Path) -> _Distribution:
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project")
    declared = project.get("entry-points") if isinstance(project, dict) else None
    group = declared.get(ENTRY_POINT_GROUP) if isinstance(declared, dict) else None
    src = root / "src"
    return _Distribution(
        root=root,
        import_path=src if src.is_dir() else root,
        entry_points=[(str(name), str(value)) for name, value in group.items()] if isinstance(group, dict) else [],
        python_files=list(_python_sources(root)),
        tests=root / "tests" if (root / "tests").is_dir() else None,
    )


def _wheel(wheel: Path, scratch: Path) -> _Distribution:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next((n.split("/")[0] for n in names if n.count("/") == 1 and ".dist-info/" in n), None)
        entry_points = []
        if info is not None:
            found = PathDistribution(zipfile.Path(archive, at=f"{info}/")).entry_points
            entry_points = [(ep.name, ep.value) for ep in found.select(group=ENTRY_POINT_GROUP)]
        python_files = [(n, archive.read(n).decode("utf-8", errors="replace")) for n in names if n.endswith(".py")]
        carries_tests = any(n.startswith("tests/") and n.endswith(".py") for n in names)
        if carries_tests:
            archive.extractall(scratch)  # pytest runs the wheel's tests against its extracted code
    return _Distribution(
        root=scratch if carries_tests else wheel.parent,
        import_path=scratch if carries_tests else wheel,
        entry_points=entry_points,
        python_files=python_files,
        tests=scratch / "tests" if carries_tests else None,
    )


def _environment(import_path: Path) -> dict[str, str]:
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(import_path), inherited]))}


def _tail(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-OUTPUT_LINES_KEPT:]


# ---------------------------------------------------------------- the checks


def _run(shown: str, dist: _Distribution) -> CheckReport:
    probed, load_problem = _probe(dist)
    return CheckReport(
        shown,
        [
            _check_manifest(dist, probed, load_problem),
            _check_api_range(probed),
            _check_hooks(probed),
            _check_imports(dist),
            _check_tests(dist),
        ],
        manifest=probed["manifest"] if probed else None,
    )


def _probe(dist: _Distribution) -> tuple[dict[str, Any] | None, str | None]:
    """What the plugin registers (see :mod:`services.marketplace.probe`), or why it is unknown."""
    if len(dist.entry_points) != 1:
        listed = ", ".join(f"{name} = {value}" for name, value in dist.entry_points) or "none"
        return None, f"a plugin declares exactly one entry point in the group {ENTRY_POINT_GROUP!r}; found: {listed}"
    [(name, value)] = dist.entry_points
    try:
        done = subprocess.run(  # noqa: S603 (our interpreter, our probe, the entry point as an argument)
            [sys.executable, "-P", str(PROBE), name, value],
            cwd=dist.root,
            env=_environment(dist.import_path),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return None, f"loading the plugin took longer than {PROBE_TIMEOUT_SECONDS} s"
    try:
        probed = json.loads(done.stdout)
    except ValueError:
        probed = None
    if done.returncode != 0 or not isinstance(probed, dict):
        output = "\n".join(_tail(done.stderr + done.stdout))
        return None, f"loading the plugin ended with exit status {done.returncode}:\n{output}"
    if probed["import_error"]:
        return None, str(probed["import_error"])
    return probed, None


def _check_manifest(dist: _Distribution, probed: dict[str, Any] | None, load_problem: str | None) -> CheckResult:
    if probed is None:
        return CheckResult("manifest", False, [str(load_problem)])
    document = probed["manifest"]
    if document is None:
        details = [str(probed["manifest_error"] or "the plugin registers no manifest")]
        return CheckResult("manifest", False, details)
    # An API range excluding ours is reported by the api_range check.
    problems = [p for p in manifest_problems(document) if not p.startswith("/api_range:")]
    [(entry_point, value)] = dist.entry_points
    if document.get("name") != entry_point:
        problems.append(
            f"/name: {document.get('name')!r} differs from the entry point's name {entry_point!r} "
            "(the host knows the plugin by its entry point's name)"
        )
    if problems:
        return CheckResult("manifest", False, problems)
    return CheckResult(
        "manifest", True, [f"entry point {entry_point} = {value}", f"{document['name']} {document['version']}"]
    )


def _check_api_range(probed: dict[str, Any] | None) -> CheckResult:
    document = probed["manifest"] if probed else None
    if document is None:
        return CheckResult("api_range", False, ["not checked: the plugin's manifest could not be read"])
    problems = [p for p in manifest_problems(document) if p.startswith("/api_range:")]
    if problems:
        return CheckResult("api_range", False, problems)
    ours = f"{API_VERSION[0]}.{API_VERSION[1]}"
    return CheckResult("api_range", True, [f"{document['api_range']} includes the SDK's plugin API {ours}"])


def _check_hooks(probed: dict[str, Any] | None) -> CheckResult:
    if probed is None:
        return CheckResult("hooks", False, ["not checked: the plugin did not load"])
    problems = [*probed["hook_problems"], *probed["registration_problems"]]
    if problems:
        return CheckResult("hooks", False, [str(p) for p in problems])
    # Deprecated hooks and arguments still work: the check passes and says what to move to.
    deprecated = [f"warning: {d}" for d in probed.get("deprecations", [])]
    return CheckResult("hooks", True, [f"implements {', '.join(probed['hooks']) or 'no hook'}", *deprecated])


def _host_imports(source: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in HOST_PACKAGES:
                yield node.lineno, name


def _check_imports(dist: _Distribution) -> CheckResult:
    problems: list[str] = []
    for shown, source in dist.python_files:
        try:
            found = sorted(_host_imports(source))
        except SyntaxError as exc:
            problems.append(f"{shown}:{exc.lineno}: cannot be parsed: {exc.msg}")
            continue
        problems.extend(
            f"{shown}:{line}: imports {name}, the host's code (a plugin imports only guiju_sdk)" for line, name in found
        )
    if problems:
        return CheckResult("imports", False, problems)
    return CheckResult("imports", True, [f"{len(dist.python_files)} Python file(s) import nothing of the host"])


def _check_tests(dist: _Distribution) -> CheckResult:
    if dist.tests is None:
        if dist.import_path.suffix == ".whl":
            return CheckResult("tests", False, ["the wheel carries no tests"])
        return CheckResult("tests", False, ["the distribution has no tests/ directory"])
    try:
        done = subprocess.run(  # noqa: S603 (our interpreter running pytest on the plugin's tests)
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(dist.tests)],
            cwd=dist.root,
            env=_environment(dist.import_path),
            capture_output=True,
            text=True,
            timeout=TESTS_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return CheckResult("tests", False, [f"the tests took longer than {TESTS_TIMEOUT_SECONDS} s"])
    if done.returncode == 0:
        return CheckResult("tests", True, _tail(done.stdout)[-1:])  # pytest's summary line
    if done.returncode == 5:  # pytest's "no tests were collected"
        return CheckResult("tests", False, ["no tests were collected from tests/"])
    return CheckResult("tests", False, _tail(done.stdout + done.stderr))
