"""``guiju plugin new`` and ``guiju plugin check``: a new plugin passes every check straight away,
and each kind of broken plugin fails the check that describes it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from guiju_sdk import API_VERSION

from services.cli import main
from services.marketplace.checks import CHECK_NAMES, CheckReport, run_checks
from services.marketplace.scaffolding import ScaffoldRefused, new_plugin


def results(report: CheckReport) -> dict[str, bool]:
    return {check.name: check.ok for check in report.checks}


def details(report: CheckReport, name: str) -> list[str]:
    [check] = [c for c in report.checks if c.name == name]
    return check.details


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    return new_plugin("erp-demo", tmp_path, publisher="Acme Ltd")


def test_a_new_plugin_passes_every_check(tmp_path: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["plugin", "new", "odoo-sync", "--dir", str(tmp_path), "--publisher", "Acme 贸易"])
    assert created.exit_code == 0, created.output
    root = tmp_path / "odoo-sync"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        "src/odoo_sync/__init__.py",
        "src/odoo_sync/plugin.py",
        "tests/test_plugin.py",
    ]
    assert '[project.entry-points.guiju]\nodoo-sync = "odoo_sync.plugin"' in (root / "pyproject.toml").read_text()

    checked = runner.invoke(main, ["plugin", "check", str(root)])
    assert checked.exit_code == 0, checked.output
    assert [line.split()[1] for line in checked.output.splitlines() if line.startswith("PASS")] == list(CHECK_NAMES)
    assert "every check passed" in checked.output

    report = run_checks(root)
    assert report.ok and report.manifest is not None
    assert report.manifest["name"] == "odoo-sync" and report.manifest["publisher"] == "Acme 贸易"
    assert [a["name"] for a in report.manifest["actions"]] == ["hello"]
    as_dict = report.as_dict()
    assert as_dict["ok"] is True and [c["name"] for c in as_dict["checks"]] == list(CHECK_NAMES)
    assert as_dict["checks"][0]["details"] == ["entry point odoo-sync = odoo_sync.plugin", "odoo-sync 0.1.0"]
    assert "3 passed" in as_dict["checks"][4]["details"][0]  # pytest's summary line


def test_new_refuses_an_invalid_name_and_a_non_empty_target(plugin_dir: Path) -> None:
    with pytest.raises(ScaffoldRefused, match="'ERP_demo' is not a lower-case name"):
        new_plugin("ERP_demo", plugin_dir.parent)
    with pytest.raises(ScaffoldRefused, match="already exists and is not empty"):
        new_plugin("erp-demo", plugin_dir.parent)
    refused = CliRunner().invoke(main, ["plugin", "new", "erp-demo", "--dir", str(plugin_dir.parent)])
    assert refused.exit_code == 2 and "already exists and is not empty" in refused.output
    (plugin_dir.parent / "empty").mkdir()
    assert new_plugin("empty", plugin_dir.parent).is_dir()  # an empty directory is fine


def test_a_plugin_importing_the_host_fails_imports_naming_file_and_line(plugin_dir: Path) -> None:
    edit(
        plugin_dir / "src/erp_demo/plugin.py",
        "from typing import Any\n",
        "from typing import Any\n\nimport services.records\nfrom tenants.models import Tenant\n",
    )
    line = (plugin_dir / "src/erp_demo/plugin.py").read_text().splitlines().index("import services.records") + 1
    report = run_checks(plugin_dir)
    assert results(report)["imports"] is False and not report.ok
    assert details(report, "imports") == [
        f"src/erp_demo/plugin.py:{line}: imports services.records, the host's code (a plugin imports only guiju_sdk)",
        f"src/erp_demo/plugin.py:{line + 1}: imports tenants.models, the host's code (a plugin imports only guiju_sdk)",
    ]


def test_a_plugin_whose_tests_fail_fails_tests(plugin_dir: Path) -> None:
    edit(plugin_dir / "tests/test_plugin.py", '{"greeting": "Hi, Ada!"}', '{"greeting": "Bonjour, Ada!"}')
    report = run_checks(plugin_dir)
    assert results(report) == {"manifest": True, "api_range": True, "hooks": True, "imports": True, "tests": False}
    assert any("1 failed, 2 passed" in line for line in details(report, "tests"))


def test_a_malformed_manifest_fails_manifest_listing_every_problem(plugin_dir: Path) -> None:
    plugin = plugin_dir / "src/erp_demo/plugin.py"
    edit(plugin, 'version="0.1.0"', 'version="0.1"')
    edit(plugin, 'summary_zh="向自动化指定的人问好。"', 'summary_zh=""')
    edit(plugin, 'category="other"', 'category="crm"')
    report = run_checks(plugin_dir)
    assert results(report)["manifest"] is False
    assert details(report, "manifest") == [
        "/category: 'crm' is not one of ['erp', 'messaging', 'customs', 'accounting', 'ecommerce', 'logistics', "
        "'productivity', 'other']",
        "/summary/zh-CN: '' should be non-empty",
        "/version: '0.1' is not a semantic version MAJOR.MINOR.PATCH, optionally followed by -prerelease",
    ]


def test_a_plugin_raising_on_import_fails_manifest_with_the_message(plugin_dir: Path) -> None:
    edit(
        plugin_dir / "src/erp_demo/plugin.py",
        'DEFAULT_GREETING = "Hello"\n',
        'DEFAULT_GREETING = "Hello"\nraise RuntimeError("the ERP client is not configured")\n',
    )
    report = run_checks(plugin_dir)
    assert details(report, "manifest") == [
        "importing erp_demo.plugin failed: RuntimeError: the ERP client is not configured"
    ]
    assert results(report) == {"manifest": False, "api_range": False, "hooks": False, "imports": True, "tests": False}
    assert report.manifest is None


def test_an_api_range_excluding_ours_fails_api_range(plugin_dir: Path) -> None:
    edit(
        plugin_dir / "src/erp_demo/plugin.py",
        f'api_range=">={API_VERSION[0]}.{API_VERSION[1]},<2.0"',
        'api_range=">=9.0,<10.0"',
    )
    report = run_checks(plugin_dir)
    assert results(report)["api_range"] is False and results(report)["manifest"] is True
    version = f"{API_VERSION[0]}.{API_VERSION[1]}"
    assert details(report, "api_range") == [f"/api_range: '>=9.0,<10.0' excludes the SDK's plugin API {version}"]


def test_an_unknown_hook_fails_hooks(plugin_dir: Path) -> None:
    with (plugin_dir / "src/erp_demo/plugin.py").open("a", encoding="utf-8") as plugin:
        plugin.write("\n\n@hookimpl\ndef guiju_on_payment(register: Any) -> None:\n    pass\n")
        plugin.write("\n\n@hookimpl\ndef guiju_triggers(register: Any) -> None:\n")
        plugin.write('    register("paid", labels={"en": "Paid"})\n')
    report = run_checks(plugin_dir)
    assert results(report)["hooks"] is False
    [unknown, unlabelled] = details(report, "hooks")
    assert unknown.startswith("guiju_on_payment is not a hook of the SDK (its hooks: guiju_actions, ")
    assert unlabelled == "trigger 'paid' needs labels in zh-CN and en"


def test_a_wheel_is_checked_from_its_entry_points(tmp_path: Path) -> None:
    source = new_plugin("wheel-demo", tmp_path, publisher="Acme")
    wheel = tmp_path / "wheel_demo-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in (source / "src").rglob("*.py"):
            archive.write(file, file.relative_to(source / "src").as_posix())
        archive.writestr("wheel_demo-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: wheel-demo\n")
        archive.writestr("wheel_demo-0.1.0.dist-info/entry_points.txt", "[guiju]\nwheel-demo = wheel_demo.plugin\n")
    report = run_checks(wheel)
    assert results(report) == {"manifest": True, "api_range": True, "hooks": True, "imports": True, "tests": False}
    assert details(report, "tests") == ["the wheel carries no tests"]
    assert details(report, "imports") == ["2 Python file(s) import nothing of the host"]


def test_a_path_that_is_no_distribution_fails_every_check(tmp_path: Path) -> None:
    checked = CliRunner().invoke(main, ["plugin", "check", "--json", str(tmp_path)])
    assert checked.exit_code == 1
    report = json.loads(checked.output)
    assert report["ok"] is False and [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert report["checks"][0]["details"] == [
        f"{tmp_path} is neither a directory holding pyproject.toml nor a .whl file"
    ]


def test_exactly_one_entry_point(plugin_dir: Path) -> None:
    edit(plugin_dir / "pyproject.toml", 'erp-demo = "erp_demo.plugin"\n', 'erp-demo = "erp_demo.plugin"\nx = "x"\n')
    report = run_checks(plugin_dir)
    assert details(report, "manifest") == [
        "a plugin declares exactly one entry point in the group 'guiju'; found: erp-demo = erp_demo.plugin, x = x"
    ]


def test_deprecated_hooks_pass_the_hooks_check_with_a_warning() -> None:
    from services.marketplace.checks import _check_hooks

    probed = {
        "hooks": ["guiju_installed", "guiju_plugin_info"],
        "hook_problems": [],
        "registration_problems": [],
        "deprecations": ["guiju_installed is deprecated: use guiju_configuration_changed"],
    }
    result = _check_hooks(probed)
    assert result.ok
    assert result.details[-1] == "warning: guiju_installed is deprecated: use guiju_configuration_changed"


def test_without_the_sandbox_the_plugins_code_runs_only_when_its_developer_asks(
    plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran-as-the-caller"  # the plugin leaves this when its code runs unconfined
    edit(
        plugin_dir / "src/erp_demo/plugin.py",
        'DEFAULT_GREETING = "Hello"\n',
        f'DEFAULT_GREETING = "Hello"\nopen({str(ran)!r}, "a").close()\n',
    )
    monkeypatch.setenv("GUIJU_SANDBOX_BWRAP", str(tmp_path / "no-bwrap"))
    refused = CliRunner().invoke(main, ["plugin", "check", str(plugin_dir)])
    assert refused.exit_code == 1
    unavailable = (
        f"not checked: the sandbox is unavailable ({tmp_path / 'no-bwrap'} is not installed (Debian package "
        "bubblewrap)), and the plugin's code runs nowhere else"
    )
    for name in ("manifest", "api_range", "hooks", "tests"):
        assert f"FAIL  {name}\n      {unavailable}\n" in refused.output
    assert "PASS  imports" in refused.output  # read, not run
    assert "check your own code on your own machine with --unsandboxed" in refused.output
    assert not ran.exists()

    unconfined = CliRunner().invoke(main, ["plugin", "check", "--unsandboxed", str(plugin_dir)])
    assert unconfined.exit_code == 0, unconfined.output
    assert "every check passed" in unconfined.output
    assert ran.exists()
