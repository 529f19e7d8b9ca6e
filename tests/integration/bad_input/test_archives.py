"""A submitted distribution that inflates to too much is refused before anything unpacks it."""

from __future__ import annotations

import io
import tarfile
import zipfile

from services.marketplace import archives
from tests.integration.test_publishing import Platform, _publisher_and_admin, platform  # noqa: F401

PYPROJECT = b'[project]\nname = "bomb"\nversion = "0.1.0"\n[project.entry-points.guiju]\nbomb = "bomb.plugin"\n'
# Zeros deflate about a thousandfold: a few hundred KiB on the wire, this much once unpacked.
INFLATED = archives.MAX_UNPACKED_BYTES + 1024 * 1024


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def _tar_gz(members: list[tuple[str, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=9) as archive:
        info = tarfile.TarInfo("bomb-0.1.0/pyproject.toml")
        info.size = len(PYPROJECT)
        archive.addfile(info, io.BytesIO(PYPROJECT))
        for name, size in members:
            member = tarfile.TarInfo(f"bomb-0.1.0/{name}")
            member.size = size
            archive.addfile(member, io.BufferedReader(_Zeros(size)))
    return out.getvalue()


def _wheel(size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as wheel:
        wheel.writestr("bomb-0.1.0.dist-info/entry_points.txt", "[guiju]\nbomb = bomb.plugin\n")
        wheel.writestr("bomb-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: bomb\nVersion: 0.1.0\n")
        with wheel.open("bomb/zeros.bin", "w", force_zip64=True) as member:
            zeros = _Zeros(size)
            while chunk := zeros.read(1024 * 1024):
                member.write(chunk)
    return out.getvalue()


def test_the_bounds_see_through_the_compression() -> None:
    small = _tar_gz([("bomb/plugin.py", 100)])
    assert archives.unpacked_size_problem("bomb-0.1.0.tar.gz", small) is None
    bomb = _tar_gz([("bomb/zeros.bin", INFLATED)])
    assert len(bomb) < archives.MAX_UNPACKED_BYTES // 100
    assert "unpacks to more than 64 MiB" in str(archives.unpacked_size_problem("bomb-0.1.0.tar.gz", bomb))
    crowded = _tar_gz([(f"bomb/f{i}.py", 0) for i in range(archives.MAX_MEMBERS + 1)])
    assert "more than 5000 files" in str(archives.unpacked_size_problem("bomb-0.1.0.tar.gz", crowded))
    assert "not gzip" in str(archives.unpacked_size_problem("bomb-0.1.0.tar.gz", b"plain text"))
    assert archives.unpacked_size_problem("bomb-0.1.0-py3-none-any.whl", _wheel(1000)) is None
    wheel_bomb = _wheel(INFLATED)
    assert "unpacks to more than" in str(archives.unpacked_size_problem("bomb-0.1.0-py3-none-any.whl", wheel_bomb))


async def test_a_compression_bomb_is_refused_at_submission_and_claims_nothing(platform: Platform) -> None:  # noqa: F811
    publisher, _admin, _ = await _publisher_and_admin(platform)
    for filename, data in [
        ("bomb-0.1.0.tar.gz", _tar_gz([("bomb/zeros.bin", INFLATED)])),
        ("bomb-0.1.0-py3-none-any.whl", _wheel(INFLATED)),
    ]:
        refused = await publisher.post(
            "/api/v1/publisher/plugins/source", files={"file": (filename, data, "application/octet-stream")}
        )
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["code"] == "invalid_source"
        assert [(e["pointer"], e["code"]) for e in body["errors"]] == [("/file", "too_large")], body
    assert (await publisher.get("/api/v1/publisher/plugins")).json() == []
