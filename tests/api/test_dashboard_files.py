"""The dashboard's files as the api serves them, checked without a browser."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.ui import STATIC_DIR

IMPORT = re.compile(r"""^import .* from "(\.{1,2}/[^"]+)";$""", re.MULTILINE)


def test_the_dashboard_is_served_at_ui_with_a_strict_content_policy(client: TestClient) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    script = client.get("/ui/js/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["content-security-policy"] == policy


def test_the_site_root_leads_to_the_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "ui/"


def test_a_missing_dashboard_file_is_a_404_and_paths_cannot_leave_the_folder(
    client: TestClient,
) -> None:
    assert client.get("/ui/js/nothing-here.js").status_code == 404
    assert client.get("/ui/../app/main.py").status_code == 404
    assert client.get("/ui/%2e%2e/%2e%2e/pyproject.toml").status_code == 404


def test_every_module_the_pages_import_is_there_and_nothing_loads_from_elsewhere() -> None:
    modules = sorted(STATIC_DIR.rglob("*.js"))
    assert len(modules) >= 8
    for module in modules:
        text = module.read_text()
        for target in IMPORT.findall(text):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports {target}"
        # The SVG namespace is a name, not a place anything loads from.
        text = text.replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, module.name
    index = (STATIC_DIR / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"#]+)"', index):
        assert (STATIC_DIR / reference).is_file(), reference
