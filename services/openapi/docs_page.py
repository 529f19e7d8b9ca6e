"""``/docs``: Swagger UI 5 (it reads OpenAPI 3.1) from our own static files, started by a static
script: the page has no inline script and loads nothing from another site."""

from __future__ import annotations

import html
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

VENDOR = "/static/vendor/swagger-ui-dist"
START_SCRIPT = "/static/docs/swagger-init.js"
# Scripts only from our own static files. Swagger UI's stylesheet draws its icons as data: images,
# and its React views set style attributes, so those two are allowed for this page alone.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" type="image/png" href="{vendor}/favicon-32x32.png">
  <link rel="stylesheet" href="{vendor}/swagger-ui.css">
  <link rel="stylesheet" href="/static/docs/swagger.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
  <script src="{vendor}/swagger-ui-bundle.js"></script>
  <script src="{start_script}"></script>
</body>
</html>
"""


class SwaggerPage(OpenAPIRenderPlugin):
    """Serves the Swagger UI page at ``path`` under the OpenAPI path."""

    def __init__(self, *, path: str = "/") -> None:
        # No favicon or style tags: Litestar's defaults point at a CDN and an inline style.
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return PAGE.format(
            title=html.escape(str(openapi_schema["info"]["title"])),
            vendor=VENDOR,
            start_script=START_SCRIPT,
            openapi_url=html.escape(self.get_openapi_json_route(request)),
        ).encode()
