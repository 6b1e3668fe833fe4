"""The API viewer at ``/docs``: Swagger UI 5 served from the package (the files PyPI's
fastapi-offline ships; its app wrapper is not used),
not from a CDN, under the same Content-Security-Policy as the web client. A privacy product does
not run a third party's script next to its tokens, and the page must work offline."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
FILES = Path(fastapi_offline.__file__).parent / "static"  # swagger-ui-bundle.js, .css, favicon
PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SecureConnect API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""
# No inline script: the page's policy allows only scripts from this origin.
START = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def install(app: FastAPI) -> None:
    """Mounts the viewer on an app created with ``docs_url=None`` and ``redoc_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=FILES), name="docs-assets")

    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def start() -> Response:
        return Response(START, media_type="text/javascript")

    app.add_api_route("/docs", page, include_in_schema=False, response_class=HTMLResponse)
    app.add_api_route("/docs/start.js", start, include_in_schema=False)
