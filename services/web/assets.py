"""Pinned front-end packages, served from ``static/vendor/`` and committed, so that serving pages
needs no Node and nothing is fetched at run time.

``package.json`` names each package at an exact version and, under ``vendor``, the files of it the
pages use; ``package-lock.json`` (npm's lock) pins what npm installs, with its ``integrity``.
``make assets`` (``python -m services.web.assets``) installs the lock with ``npm ci --ignore-scripts``
in a temporary directory and copies those files, and each package's licence files, into
``static/vendor/<package>/``, recording in ``static/vendor/manifest.json`` each package's version,
its lock ``integrity`` and the sha256 of every copied file. :func:`vendor_problems` checks the
committed copies against the lock and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

WEB_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
LICENSE_PREFIXES = ("LICENSE", "LICENCE", "NOTICE", "COPYING")
PACKAGE_RECORD = "package.json"


def vendor_dir(web_dir: Path = WEB_DIR) -> Path:
    return web_dir / "static" / "vendor"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wanted_files(web_dir: Path = WEB_DIR) -> dict[str, list[str]]:
    """The files to copy from each package, as ``package.json``'s ``vendor`` lists them."""
    spec: dict[str, list[str]] = _json(web_dir / "package.json").get("vendor", {})
    return spec


def locked_packages(web_dir: Path = WEB_DIR) -> dict[str, dict[str, Any]]:
    """The packages ``package.json`` depends on directly, as the lock pins them."""
    lock = _json(web_dir / "package-lock.json")
    direct = lock["packages"][""].get("dependencies", {})
    return {name: lock["packages"][f"node_modules/{name}"] for name in direct}


def _license_files(package_dir: Path) -> list[str]:
    found = sorted(p.name for p in package_dir.iterdir() if p.is_file() and p.name.upper().startswith(LICENSE_PREFIXES))
    # A package that ships no licence file (Alpine's CSP build) declares it in its package.json,
    # which then travels as the licence record.
    return found or [PACKAGE_RECORD]


def copy_packages(installed: Path, web_dir: Path = WEB_DIR) -> dict[str, Any]:
    """Copy the wanted files of every package under ``installed`` (a ``node_modules``) into the
    vendor directory, replacing what was there; returns the manifest written beside them."""
    locked = locked_packages(web_dir)
    wanted = wanted_files(web_dir)
    target_root = vendor_dir(web_dir)
    manifest: dict[str, Any] = {}
    for name, pinned in sorted(locked.items()):
        source = installed / name
        version = _json(source / "package.json")["version"]
        if version != pinned["version"]:
            raise RuntimeError(f"{name}: npm installed {version}, the lock pins {pinned['version']}")
        target = target_root / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        files: dict[str, str] = {}
        for relative in sorted({*wanted.get(name, []), *_license_files(source)}):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, destination)
            files[relative] = sha256(destination)
        manifest[name] = {"version": version, "integrity": pinned["integrity"], "files": files}
    for stale in sorted(p for p in target_root.iterdir() if p.is_dir() and not _is_vendored(p, target_root, locked)):
        shutil.rmtree(stale)
    (target_root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _is_vendored(directory: Path, root: Path, locked: dict[str, Any]) -> bool:
    name = directory.relative_to(root).as_posix()
    # A scope's directory (@scope) holds vendored packages (@scope/name).
    return name in locked or any(package.startswith(f"{name}/") for package in locked)


def build(web_dir: Path = WEB_DIR) -> dict[str, Any]:
    """Install the lock with npm in a temporary directory and copy the wanted files (``make assets``)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: `make assets` needs Node's npm (serving the copies does not)")
    with tempfile.TemporaryDirectory(prefix="guiju-assets-") as tmp:
        workdir = Path(tmp)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(web_dir / name, workdir / name)
        # --ignore-scripts: no package runs code on this machine while being installed.
        subprocess.run(  # noqa: S603
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=workdir, check=True
        )
        return copy_packages(workdir / "node_modules", web_dir)


def vendor_problems(web_dir: Path = WEB_DIR) -> list[str]:
    """Everything about the committed copies that disagrees with the lock or the manifest."""
    problems: list[str] = []
    root = vendor_dir(web_dir)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path.name} is missing: run `make assets`"]
    manifest: dict[str, Any] = _json(manifest_path)
    locked = locked_packages(web_dir)
    wanted = wanted_files(web_dir)
    for name in sorted(set(wanted) - set(locked)):
        problems.append(f"{name}: listed under `vendor` in package.json but not a locked dependency")
    for name, pinned in sorted(locked.items()):
        entry = manifest.get(name)
        if entry is None:
            problems.append(f"{name}: locked but not vendored")
            continue
        if entry["version"] != pinned["version"]:
            problems.append(f"{name}: vendored {entry['version']}, the lock pins {pinned['version']}")
        if entry["integrity"] != pinned["integrity"]:
            problems.append(f"{name}: vendored from another tarball than the lock's integrity")
        recorded: dict[str, str] = entry["files"]
        for relative in wanted.get(name, []):
            if relative not in recorded:
                problems.append(f"{name}/{relative}: wanted but not vendored")
        if not any(f.upper().startswith(LICENSE_PREFIXES) or f == PACKAGE_RECORD for f in recorded):
            problems.append(f"{name}: no licence file vendored")
        on_disk = {p.relative_to(root / name).as_posix() for p in (root / name).rglob("*") if p.is_file()}
        for relative in sorted(on_disk - set(recorded)):
            problems.append(f"{name}/{relative}: not in the manifest")
        for relative, digest in sorted(recorded.items()):
            path = root / name / relative
            if not path.is_file():
                problems.append(f"{name}/{relative}: missing")
            elif sha256(path) != digest:
                problems.append(f"{name}/{relative}: differs from the copy the manifest records")
    for name in sorted(set(manifest) - set(locked)):
        problems.append(f"{name}: vendored but not locked")
    return problems


def main() -> None:
    manifest = build()
    for name, entry in manifest.items():
        print(f"{name} {entry['version']}: {', '.join(entry['files'])}")
    problems = vendor_problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
