"""A real clipft (api + worker + embedded Redis, via `clipft serve`) and the system's Chromium.

Playwright drives Debian's Chromium (`apt-get install chromium`): Playwright's own browser
download cannot work here. Without Chromium these tests are skipped with one line saying so;
CI sets CLIPFT_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.auth.keys import create_key
from app.core.db import session_scope
from app.core.migrate import upgrade_to_head
from app.local_stack import stop_process
from tests.clipft_process import start_clipft, wait_until_answering
from tests.conftest import empty_database

REPO = Path(__file__).resolve().parents[2]


def find_chromium() -> str | None:
    """CLIPFT_CHROMIUM when set (a path; one that is not there means none), else on PATH."""
    named = os.environ.get("CLIPFT_CHROMIUM")
    if named is not None:
        return named if Path(named).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = find_chromium()
NO_CHROMIUM = (
    "the dashboard's browser tests need Chromium (Debian: apt-get install chromium), "
    "and none was found"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM is not None:
        return
    here = Path(__file__).parent
    browser_tests = [item for item in items if item.path.is_relative_to(here)]
    if browser_tests and os.environ.get("CLIPFT_REQUIRE_BROWSER"):
        raise pytest.UsageError(f"CLIPFT_REQUIRE_BROWSER is set, but {NO_CHROMIUM}")
    for item in browser_tests:
        item.add_marker(pytest.mark.skip(reason=f"{NO_CHROMIUM}: tests/ui skipped"))


@dataclass(frozen=True)
class Server:
    url: str
    key: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each page's screenshot goes: CLIPFT_SCREENSHOTS_DIR, else build/screenshots."""
    folder = Path(os.environ.get("CLIPFT_SCREENSHOTS_DIR") or REPO / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("dashboard")
    database = empty_database(data_dir / "clipft.db")
    database_url = next(database)
    upgrade_to_head(database_url)
    with session_scope(database_url) as session:
        key = create_key(session=session, name="dashboard", tenant="browser", admin=False).key
    log_path = data_dir / "serve.log"
    stack, url = start_clipft(
        "serve",
        env={
            "CLIPFT_DATA_DIR": str(data_dir),
            "CLIPFT_DATABASE_URL": database_url,
            "CLIPFT_AUTH_DISABLED": "false",
            "CLIPFT_DEVICE": "cpu",
            "CLIPFT_VAL_FRACTION": "0.25",
        },
        log_path=log_path,
    )
    try:
        wait_until_answering(stack, f"{url}/health", log_path)
        yield Server(url=url, key=key)
    finally:
        stop_process(stack, timeout_seconds=30)
        database.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        # As root (CI, containers) Chromium's sandbox cannot start; the pages are our own.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()
