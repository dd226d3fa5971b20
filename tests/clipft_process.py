"""A real `clipft` command (api, serve) in a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from app.core.embedded_redis import free_tcp_port
from app.local_stack import clipft_command


def start_clipft(
    *arguments: str, env: Mapping[str, str], log_path: Path, new_session: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `clipft <arguments> --port <free port>` with only `env`'s CLIPFT_ settings (none
    of the test run's own leak in); its output goes to `log_path`. Returns it and its URL."""
    port = free_tcp_port()
    clean = {name: value for name, value in os.environ.items() if not name.startswith("CLIPFT_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            clipft_command(*arguments, "--port", str(port)),
            env={**clean, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    return process, f"http://127.0.0.1:{port}"


def wait_until_answering(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 120
) -> None:
    """Until `url` answers 200; the process's log is the message if it dies or never does."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log_path.read_text()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered:\n{log_path.read_text()}"
        time.sleep(0.25)


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
