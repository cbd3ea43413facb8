"""/docs: Swagger UI served from this app, so it works offline and under a strict CSP.

FastAPI's own /docs loads Swagger UI from a CDN: blank without internet, and a page of this
origin running another origin's script. The `fastapi-offline` package (MIT; it bundles
Swagger UI 5, Apache-2.0, which reads FastAPI's OpenAPI 3.1 schema) ships the built files
in its `static/` folder; the three files /docs needs are served at /docs/assets/, no other.

Swagger UI starts from a short inline script that FastAPI's `get_swagger_ui_html` writes.
Its text is the same for every request of an app, so /docs allows exactly that script by
its sha256 hash, computed from the very HTML served: a nonce would need a new page per
request for nothing, and 'unsafe-inline' would allow any injected script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from personavlm.server.headers import content_security_policy

__all__ = ["ASSETS", "ASSETS_PATH", "DOCS_PATH", "DocsPage", "docs_page", "install_docs"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
# The files /docs loads, with their types: under `nosniff` a script or stylesheet served
# with another type is refused.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
# Package data, found through the import system like any other (a wheel installs it as files).
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)  # the one without a src


@dataclass(frozen=True, slots=True)
class DocsPage:
    html: str
    csp: str


def docs_page(title: str, openapi_url: str) -> DocsPage:
    """The Swagger UI page over `openapi_url`, and the policy that lets exactly it run."""
    html = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        # No validator badge: it would send the schema's URL to swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    ).body
    text = bytes(html).decode()
    hashes = " ".join(f"'{_sha256(script)}'" for script in INLINE_SCRIPT.findall(text))
    return DocsPage(text, content_security_policy({"script-src": f"'self' {hashes}"}))


def _sha256(script: str) -> str:
    digest = hashlib.sha256(script.encode()).digest()
    return "sha256-" + base64.b64encode(digest).decode()


def install_docs(app: FastAPI) -> None:
    """Adds /docs and its assets to `app` (made with `docs_url=None`)."""
    page = docs_page(f"{app.title} - API", app.openapi_url or "/openapi.json")

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page.html, headers={"Content-Security-Policy": page.csp})

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404, f"no docs asset {name!r}")
        return FileResponse(ASSETS_DIR / name, media_type=media_type)
