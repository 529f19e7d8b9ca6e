"""The committed front-end packages under services/web/static/vendor agree with npm's lock."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.web import assets


def test_committed_copies_match_the_lock_and_the_manifest() -> None:
    assert assets.vendor_problems() == []
    manifest = json.loads((assets.vendor_dir() / assets.MANIFEST).read_text())
    locked = assets.locked_packages()
    assert locked, "package.json names no package"
    for name, pinned in locked.items():
        assert manifest[name]["version"] == pinned["version"]
        assert manifest[name]["integrity"] == pinned["integrity"]
    # The API docs page is Swagger UI 5, the first that reads OpenAPI 3.1.
    assert locked["swagger-ui-dist"]["version"].startswith("5.")


@pytest.fixture
def web_copy(tmp_path: Path) -> Path:
    """A copy of services/web's package files and vendored copies, to tamper with."""
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(assets.WEB_DIR / name, tmp_path / name)
    shutil.copytree(assets.vendor_dir(), assets.vendor_dir(tmp_path))
    assert assets.vendor_problems(tmp_path) == []
    return tmp_path


def test_a_changed_or_extra_file_is_found(web_copy: Path) -> None:
    bundle = assets.vendor_dir(web_copy) / "swagger-ui-dist" / "swagger-ui-bundle.js"
    bundle.write_bytes(bundle.read_bytes() + b"\n// changed")
    (assets.vendor_dir(web_copy) / "swagger-ui-dist" / "extra.js").write_text("1")
    problems = assets.vendor_problems(web_copy)
    assert "swagger-ui-dist/swagger-ui-bundle.js: differs from the copy the manifest records" in problems
    assert "swagger-ui-dist/extra.js: not in the manifest" in problems


def test_a_lock_moved_to_another_version_is_found(web_copy: Path) -> None:
    lock_path = web_copy / "package-lock.json"
    lock = json.loads(lock_path.read_text())
    lock["packages"]["node_modules/swagger-ui-dist"]["version"] = "5.0.0"
    lock["packages"]["node_modules/swagger-ui-dist"]["integrity"] = "sha512-other"
    lock["packages"][""]["dependencies"]["left-pad"] = "1.3.0"
    lock["packages"]["node_modules/left-pad"] = {"version": "1.3.0", "integrity": "sha512-left-pad"}
    lock_path.write_text(json.dumps(lock))
    problems = assets.vendor_problems(web_copy)
    assert any(p.startswith("swagger-ui-dist: vendored 5.") and p.endswith("pins 5.0.0") for p in problems)
    assert "swagger-ui-dist: vendored from another tarball than the lock's integrity" in problems
    assert "left-pad: locked but not vendored" in problems


def test_copying_takes_the_listed_files_and_the_licence(web_copy: Path, tmp_path: Path) -> None:
    """What ``make assets`` does after ``npm ci``, from a node_modules made here. A package without
    a licence file (Alpine's CSP build ships none) carries its package.json as the licence record."""
    locked = assets.locked_packages(web_copy)
    wanted = assets.wanted_files(web_copy)
    for name, pinned in locked.items():
        package = tmp_path / "node_modules" / name
        package.mkdir(parents=True)
        (package / "package.json").write_text(
            json.dumps({"name": name, "version": pinned["version"], "license": "MIT"})
        )
        for relative in wanted.get(name, []):
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            (package / relative).write_text(f"contents of {relative}")
        if name != "@alpinejs/csp":
            (package / "LICENSE").write_text("licence text")
        (package / "index.js").write_text("not listed, not copied")
    shutil.rmtree(assets.vendor_dir(web_copy))
    assets.vendor_dir(web_copy).mkdir()

    manifest = assets.copy_packages(tmp_path / "node_modules", web_copy)

    copied = sorted(p.name for p in (assets.vendor_dir(web_copy) / "swagger-ui-dist").iterdir())
    assert copied == sorted([*wanted["swagger-ui-dist"], "LICENSE"])
    assert sorted(manifest["@alpinejs/csp"]["files"]) == sorted([*wanted["@alpinejs/csp"], "package.json"])
    assert manifest["swagger-ui-dist"]["version"] == locked["swagger-ui-dist"]["version"]
    assert assets.vendor_problems(web_copy) == []

    # npm installing another version than the lock's is refused.
    package = tmp_path / "node_modules" / "swagger-ui-dist"
    (package / "package.json").write_text(json.dumps({"name": "swagger-ui-dist", "version": "0.0.1"}))
    with pytest.raises(RuntimeError, match="the lock pins"):
        assets.copy_packages(tmp_path / "node_modules", web_copy)
