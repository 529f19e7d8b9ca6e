"""The files' page: a small preview of an uploaded image, for the pages that show evidence photos.

Pages show thumbnails lazily (``<img loading="lazy">``), each within 30 KB; the full file stays
behind the API's download, for whoever opens it.
"""

from __future__ import annotations

import uuid

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from services.files import service
from services.http import PRIVATE_CACHE_OPT
from services.web.viewer import Viewer


class FilePages(Controller):
    include_in_schema = False

    @get("/files/{file_id:uuid}/thumbnail", opt={PRIVATE_CACHE_OPT: True})
    async def thumbnail(
        self, file_id: FromPath[uuid.UUID], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Response[bytes]:
        """A JPEG preview of an image of the viewer's workspace (404 for another's, or a file that
        is no image). A file never changes under its id, so the browser keeps the answer."""
        member.member.require_tenant()
        data = await service.thumbnail(db, file_id)
        return Response(
            data,
            media_type="image/jpeg",
            headers={
                "Cache-Control": "private, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )


PAGES = [FilePages]
