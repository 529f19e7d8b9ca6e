"""Finding the CJK font the PDFs embed (subset: only the glyphs a document uses).

In order: the plugin setting ``font_path``, the environment variable ``GUIJU_CUSTOMS_FONT``, Noto Sans
SC from the ``pylopdf-fonts-zh-cn`` package (installed with the plugin), then the Noto CJK and
WenQuanYi fonts of Debian's ``fonts-noto-cjk``, ``fonts-wqy-zenhei`` and ``fonts-wqy-microhei``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from fontTools.ttLib import TTCollection, TTFont, TTLibError  # type: ignore[import-untyped]
from guiju_sdk import ActionFailed

FONT_ENVIRONMENT_VARIABLE = "GUIJU_CUSTOMS_FONT"
FONT_SETTING = "font_path"
#: The package whose Noto Sans SC is the default, and the function giving its path.
FONT_PACKAGE = "pylopdf_fonts_zh_cn"
SYSTEM_FONTS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)
#: Characters every document prints: a font without them would print empty boxes.
REQUIRED_CHARACTERS = "境内发货人报关单"
SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
#: Tables a PDF's horizontal, unshaped text never reads (layout rules, vertical metrics, bitmaps).
UNUSED_TABLES = ("GSUB", "GPOS", "GDEF", "BASE", "JSTF", "MATH", "VORG", "vhea", "vmtx", "FFTM", "meta")


class FontMissing(ActionFailed):
    """No usable CJK font: the message says where the plugin looked and how to give it one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Font:
    """A font file and, in a collection, the face to use (the Simplified Chinese one when there is one)."""

    path: Path
    face: int = 0


def find_font(config: Mapping[str, Any]) -> Font:
    """The font the PDFs use, per the order above; raises :class:`FontMissing` when there is none,
    or when the font named by the setting or the environment cannot print Chinese."""
    configured = str(config.get(FONT_SETTING) or "").strip()
    if configured:
        return _checked(Path(configured), f"the setting {FONT_SETTING}")
    from_environment = os.environ.get(FONT_ENVIRONMENT_VARIABLE, "").strip()
    if from_environment:
        return _checked(Path(from_environment), f"the environment variable {FONT_ENVIRONMENT_VARIABLE}")
    for candidate in (*_packaged(), *SYSTEM_FONTS):
        if candidate.is_file():
            return _checked(candidate, "the default font")
    looked = ", ".join(str(path) for path in (*_packaged(), *SYSTEM_FONTS)) or "nowhere"
    raise FontMissing(
        "no CJK font for the PDFs: install the plugin with its dependencies (pylopdf-fonts-zh-cn), or "
        f"Debian's fonts-noto-cjk, or name a .ttf/.otf/.ttc font with the setting {FONT_SETTING} or the "
        f"environment variable {FONT_ENVIRONMENT_VARIABLE} (looked at: {looked})"
    )


def _packaged() -> list[Path]:
    try:
        module = importlib.import_module(FONT_PACKAGE)
    except ImportError:
        return []
    return [Path(module.sans_path())]


def _checked(path: Path, source: str) -> Font:
    return _load(path.expanduser().resolve(), source)


@cache
def _load(path: Path, source: str) -> Font:
    # Cached: opening a CJK font and reading its character map takes tens of milliseconds.
    if not path.is_file():
        raise FontMissing(f"the font {path} named by {source} does not exist")
    if path.suffix.lower() not in SUFFIXES:
        raise FontMissing(f"the font {path} named by {source} is not a .ttf, .otf, .ttc or .otc file")
    try:
        if path.suffix.lower() in (".ttc", ".otc"):
            faces = TTCollection(str(path), lazy=True).fonts
            face = next((i for i, f in enumerate(faces) if " SC" in str(f["name"].getDebugName(1))), 0)
            font = faces[face]
        else:
            face, font = 0, TTFont(str(path), lazy=True)
        character_map = font.getBestCmap() or {}
    except (TTLibError, OSError, KeyError) as exc:
        raise FontMissing(f"the font {path} named by {source} cannot be read: {exc}") from exc
    missing = [char for char in REQUIRED_CHARACTERS if ord(char) not in character_map]
    if missing:
        raise FontMissing(f"the font {path} named by {source} has no Chinese glyphs (none for {''.join(missing)})")
    return Font(path, face)


@contextmanager
def subset_font_file(font: Font, characters: Iterable[str]) -> Iterator[Path]:
    """A temporary font file holding only the glyphs of ``characters`` from ``font``.

    Every PDF of a document set embeds this small font instead of reading the whole CJK font
    (tens of thousands of glyphs) once per PDF. Characters the font lacks are left out, as they
    would be from the full font: the PDF prints nothing for them.
    """
    # Imported when used: the subsetter is slow to import, and most processes never cut a font.
    from fontTools.subset import Options, Subsetter  # type: ignore[import-untyped]

    options = Options(notdef_outline=True, recommended_glyphs=True, layout_features=[], desubroutinize=True)
    source = TTFont(str(font.path), fontNumber=font.face, lazy=True, recalcBBoxes=False, recalcTimestamp=False)
    try:
        # Removed before subsetting, unread: the subsetter would first parse a CJK font's large
        # layout tables only to drop them.
        for tag in UNUSED_TABLES:
            if tag in source:
                del source[tag]
        subsetter = Subsetter(options)
        subsetter.populate(unicodes=sorted({ord(character) for character in characters}))
        subsetter.subset(source)
        with TemporaryDirectory(prefix="guiju-customs-font-") as directory:
            path = Path(directory) / ("subset.otf" if "CFF " in source or "CFF2" in source else "subset.ttf")
            source.save(str(path))
            yield path
    finally:
        source.close()
