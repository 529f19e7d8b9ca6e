"""Bounds on what a submitted distribution unpacks to, measured before anything unpacks it.

A 20 MiB ``.tar.gz`` can inflate to gigabytes (a compression bomb): reading its members at
submission, or extracting it on the worker's disk for the checks, would fill the disk or hold a
process for minutes. :func:`unpacked_size_problem` inflates a gzip stream at most one limit's worth
(and stops there), and reads a wheel's sizes from its central directory, which :mod:`zipfile`
holds each member to when it reads it.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from typing import Final

#: What one distribution may unpack to, in all. The built-in plugins unpack to well under 2 MiB.
MAX_UNPACKED_BYTES: Final = 64 * 1024 * 1024
#: How many files one distribution may hold.
MAX_MEMBERS: Final = 5000
_CHUNK: Final = 1024 * 1024


def unpacked_size_problem(filename: str, data: bytes) -> str | None:
    """Why the distribution ``data`` unpacks to too much, or None when it stays within the limits."""
    if filename.endswith(".whl"):
        return _wheel_problem(data)
    return _gzip_problem(data)


def _gzip_problem(data: bytes) -> str | None:
    # wbits 16 + MAX_WBITS: a gzip header and trailer around the deflate stream.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    inflated = 0
    pending = data
    try:
        while pending and not inflater.eof:
            # max_length bounds each step's output: a bomb is noticed one chunk past the limit,
            # never after inflating all of it.
            inflated += len(inflater.decompress(pending, _CHUNK))
            if inflated > MAX_UNPACKED_BYTES:
                return f"the archive unpacks to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MiB"
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        return f"the archive is not gzip-compressed as a .tar.gz is: {exc}"
    # Within the size, reading every header is bounded too.
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = sum(1 for _ in archive)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"the archive cannot be read: {exc}"
    if members > MAX_MEMBERS:
        return f"the archive holds more than {MAX_MEMBERS} files"
    return None


def _wheel_problem(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            members = wheel.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"the wheel cannot be read: {exc}"
    if len(members) > MAX_MEMBERS:
        return f"the wheel holds more than {MAX_MEMBERS} files"
    if sum(member.file_size for member in members) > MAX_UNPACKED_BYTES:
        return f"the wheel unpacks to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MiB"
    return None
