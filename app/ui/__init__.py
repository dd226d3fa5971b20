"""The dashboard: static pages served by the api at `/ui`, driving the same JSON API.

No build step and no CDN: the HTML, CSS and JavaScript modules under `static/` are the whole
dashboard, so it works offline. The pages hold no data; every call they make carries the API
key the user typed (kept in the browser's local storage), so they sit behind the same keys as
the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

# The pages load nothing from elsewhere and run no inline script: a policy that says so keeps
# an injected string from ever running as code. Images may be blob: URLs (the try-it panel's
# previews of the user's own files).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
        "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardFiles(StaticFiles):
    """The static files, with the security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        # Revalidate each time (cheap: ETag): a server upgrade never runs with stale modules.
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI) -> None:
    app.mount("/ui", DashboardFiles(directory=STATIC_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        # Relative, so it still lands on the dashboard behind a proxy that adds a path prefix.
        return RedirectResponse("ui/", status_code=307)
