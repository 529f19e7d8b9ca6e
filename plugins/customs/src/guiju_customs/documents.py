"""One document of one kind in one format, as the SDK's :class:`~guiju_sdk.Document`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from guiju_sdk import Document

from guiju_customs.fonts import Font
from guiju_customs.layouts import build_layout
from guiju_customs.order import Order

FORMATS: tuple[str, ...] = ("pdf", "xlsx")
CONTENT_TYPES = {
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def filename(kind: str, order: Order, format: str, version: int | None = None) -> str:
    """``commercial_invoice-SO-2026-0042-v2.pdf``: the kind, the order's number (made safe for file
    systems) and, when the document is kept in versions, its version."""
    number = _UNSAFE.sub("-", order.order_number).strip("-") or "order"
    suffix = f"-v{version}" if version is not None else ""
    return f"{kind}-{number}{suffix}.{format}"


def render(kind: str, order: Order, format: str, font: Font | None, version: int | None = None) -> Document:
    """Document ``kind`` of ``order`` as ``format`` (``pdf`` needs ``font``)."""
    layout = build_layout(kind, order)
    if format == "pdf":
        if font is None:
            raise ValueError("a PDF needs a font")
        from guiju_customs.pdf import render_pdf  # imported when used: fpdf2 is slow to import

        content = render_pdf(layout, font)
    elif format == "xlsx":
        from guiju_customs.xlsx import render_xlsx  # imported when used: openpyxl is slow to import

        content = render_xlsx(layout)
    else:
        raise ValueError(f"unknown format {format!r}: {', '.join(FORMATS)}")
    return Document(filename(kind, order, format, version), CONTENT_TYPES[format], content)


def render_set(
    order: Order, kinds: Sequence[str], font: Font, versions: Mapping[str, int] | None = None
) -> list[Document]:
    """Every document of ``kinds`` in every format (for each kind its PDF, then its XLSX), in memory.

    The PDFs are made together, so the font is cut down once for the whole set.
    """
    layouts = [build_layout(kind, order) for kind in kinds]
    # Imported when used: fpdf2 and openpyxl would slow every process that loads the plugin.
    from guiju_customs.pdf import render_pdfs
    from guiju_customs.xlsx import render_xlsx

    pdfs = render_pdfs(layouts, font)
    documents: list[Document] = []
    for kind, layout, pdf in zip(kinds, layouts, pdfs, strict=True):
        version = versions[kind] if versions is not None else None
        documents.append(Document(filename(kind, order, "pdf", version), CONTENT_TYPES["pdf"], pdf))
        xlsx = render_xlsx(layout)
        documents.append(Document(filename(kind, order, "xlsx", version), CONTENT_TYPES["xlsx"], xlsx))
    return documents
