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

The plugin's code (the probe and the tests) runs in the sandbox of
:mod:`services.marketplace.sandbox`, on a copy of the distribution: as an unprivileged user, with
an empty environment, no network, nothing of the platform's files, under limits. Where the sandbox
cannot be had, those checks fail saying so and nothing of the plugin runs; only a developer
checking their own code on their own machine may run it unconfined (``unsandboxed=True``,
``guiju plugin check --unsandboxed``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import signal
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

from services.marketplace.sandbox import Outcome, Runner, Sandbox, SandboxUnavailable, Unconfined, python_paths
from services.settings import Settings, load_settings

PROBE = Path(__file__).with_name("probe.py")
#: What the probe and a plugin's tests import besides the plugin: visible, read-only, in the sandbox.
RUNTIME_MODULES = ("guiju_sdk", "pluggy", "pytest")
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
    sandbox_problem: str | None = None  # why the sandbox could not run the plugin's code, if it could not

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


@dataclass(frozen=True)
class _Execution:
    """How the plugin's code runs: where, and for how long at most."""

    runner: Runner
    load_seconds: float
    tests_seconds: float


def run_checks(path: Path, *, settings: Settings | None = None, unsandboxed: bool = False) -> CheckReport:
    """Run every check on the distribution at ``path`` (a source directory or a ``.whl``), the
    plugin's code in the sandbox that ``settings`` describe (read from the environment when not
    given). ``unsandboxed`` runs it as the caller instead: for one's own code on one's own machine
    only, never for a submission."""
    settings = settings or load_settings("admin")
    execution = _Execution(
        runner=Unconfined() if unsandboxed else Sandbox.from_settings(settings),
        load_seconds=settings.plugin_check_load_seconds,
        tests_seconds=settings.plugin_check_tests_seconds,
    )
    shown, path = str(path), Path(path).resolve()  # subprocesses run elsewhere: absolute paths
    with tempfile.TemporaryDirectory(prefix="guiju-plugin-check-") as scratch:
        if path.is_file() and path.suffix == ".whl":
            return _run(shown, _wheel(path, Path(scratch) / "wheel"), execution, Path(scratch))
        if (path / "pyproject.toml").is_file():
            try:
                return _run(shown, _source(path), execution, Path(scratch))
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


def _stage(dist: _Distribution, scratch: Path) -> _Distribution:
    """A copy of what the plugin's code runs on, readable by the sandbox's user: the checks never
    change the original, and the sandbox sees nothing beside it. Links are copied as links (they
    lead nowhere of the host's inside the sandbox), never followed."""
    target = scratch / "dist"
    if dist.tests is None and dist.import_path.is_file():  # a wheel without tests: the wheel alone
        target.mkdir()
        shutil.copyfile(dist.import_path, target / dist.import_path.name)
        staged = dataclasses.replace(dist, root=target, import_path=target / dist.import_path.name)
    else:
        ignored = shutil.ignore_patterns(".*", "__pycache__")
        shutil.copytree(dist.root, target, symlinks=True, ignore=ignored)
        staged = dataclasses.replace(
            dist,
            root=target,
            import_path=target / dist.import_path.relative_to(dist.root),
            tests=target / dist.tests.relative_to(dist.root) if dist.tests else None,
        )
    for folder, _subfolders, names in os.walk(target):
        Path(folder).chmod(0o755)
        for name in names:
            file = Path(folder) / name
            if not file.is_symlink():
                file.chmod(0o755 if file.stat().st_mode & 0o111 else 0o644)
    # The probe runs from here too, not from the platform's code.
    (scratch / "probe").mkdir(mode=0o755)
    shutil.copyfile(PROBE, scratch / "probe" / PROBE.name)
    (scratch / "probe" / PROBE.name).chmod(0o644)
    return staged


def _environment(import_path: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(import_path), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}


def _ended(outcome: Outcome) -> str:
    status = outcome.exit_status
    if status is not None and status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"ended with exit status {status}"


def _tail(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-OUTPUT_LINES_KEPT:]


# ---------------------------------------------------------------- the checks


def _run(shown: str, original: _Distribution, execution: _Execution, scratch: Path) -> CheckReport:
    imports = _check_imports(original)  # reads the code, runs none of it
    try:
        if isinstance(execution.runner, Sandbox):
            execution.runner.check_exposable([original.root])  # what is copied is exposed
        dist = _stage(original, scratch)
        probed, load_problem = _probe(dist, execution, scratch / "probe" / PROBE.name)
        tests = _check_tests(dist, execution)
    except SandboxUnavailable as exc:
        reason = f"not checked: the sandbox is unavailable ({exc}), and the plugin's code runs nowhere else"
        checks = [imports if name == "imports" else CheckResult(name, False, [reason]) for name in CHECK_NAMES]
        return CheckReport(shown, checks, sandbox_problem=str(exc))
    except (OSError, shutil.Error) as exc:
        reason = f"the distribution cannot be copied for the checks: {exc}"
        return CheckReport(shown, [imports if n == "imports" else CheckResult(n, False, [reason]) for n in CHECK_NAMES])
    return CheckReport(
        shown,
        [
            _check_manifest(dist, probed, load_problem),
            _check_api_range(probed),
            _check_hooks(probed),
            imports,
            tests,
        ],
        manifest=probed["manifest"] if probed else None,
    )


def _confined(dist: _Distribution, execution: _Execution, command: list[str], seconds: float, *also: Path) -> Outcome:
    return execution.runner.run(
        command,
        read_only=[*python_paths(*RUNTIME_MODULES), dist.root, *also],
        workdir=dist.root,
        env=_environment(dist.import_path),
        wall_seconds=seconds,
    )


def _probe(dist: _Distribution, execution: _Execution, probe: Path) -> tuple[dict[str, Any] | None, str | None]:
    """What the plugin registers (see :mod:`services.marketplace.probe`), or why it is unknown."""
    if len(dist.entry_points) != 1:
        listed = ", ".join(f"{name} = {value}" for name, value in dist.entry_points) or "none"
        return None, f"a plugin declares exactly one entry point in the group {ENTRY_POINT_GROUP!r}; found: {listed}"
    [(name, value)] = dist.entry_points
    command = [sys.executable, "-P", str(probe), name, value]
    done = _confined(dist, execution, command, execution.load_seconds, probe.parent)
    limits = [f"loading the plugin {hit}" for hit in execution.runner.limits_hit(done)]
    if done.timed_out:
        return None, "\n".join(limits)
    try:
        probed = json.loads(done.stdout)
    except ValueError:
        probed = None
    if done.exit_status != 0 or not isinstance(probed, dict):
        output = "\n".join([*limits, *_tail(done.stderr + done.stdout)])
        return None, f"loading the plugin {_ended(done)}:\n{output}"
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
        except (RecursionError, MemoryError):  # the parser's own stacks overflow on deep nesting
            problems.append(f"{shown}: cannot be parsed: nested too deeply")
            continue
        problems.extend(
            f"{shown}:{line}: imports {name}, the host's code (a plugin imports only guiju_sdk)" for line, name in found
        )
    if problems:
        return CheckResult("imports", False, problems)
    return CheckResult("imports", True, [f"{len(dist.python_files)} Python file(s) import nothing of the host"])


def _check_tests(dist: _Distribution, execution: _Execution) -> CheckResult:
    if dist.tests is None:
        if dist.import_path.suffix == ".whl":
            return CheckResult("tests", False, ["the wheel carries no tests"])
        return CheckResult("tests", False, ["the distribution has no tests/ directory"])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(dist.tests)]
    done = _confined(dist, execution, command, execution.tests_seconds)
    if done.exit_status == 0:
        return CheckResult("tests", True, _tail(done.stdout)[-1:])  # pytest's summary line
    if done.exit_status == 5:  # pytest's "no tests were collected"
        return CheckResult("tests", False, ["no tests were collected from tests/"])
    details = [f"the tests {hit}" for hit in execution.runner.limits_hit(done)]
    if done.exit_status != 1 and not done.timed_out:  # 1: some tests failed, as their output says
        details.append(f"the tests {_ended(done)}")
    return CheckResult("tests", False, [*details, *_tail(done.stdout + done.stderr)])
