"""The real api (`clipft api` under uvicorn), or another server, in a subprocess on a free
loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_api(
    *, env: Mapping[str, str], ready_path: str, log_file: Path, timeout: float = 120
) -> Iterator[str]:
    """Start `clipft api`, wait until `ready_path` answers 200, yield its base URL, stop it."""
    # `python -m app.cli` rather than the `clipft` script: the benchmark also runs from a source
    # tree on PYTHONPATH (the GPU machine), where no script is installed.
    with running_server(
        ["-m", "app.cli", "api"], env=env, ready_path=ready_path, log_file=log_file, timeout=timeout
    ) as base_url:
        yield base_url


@contextmanager
def running_server(
    module_args: list[str],
    *,
    env: Mapping[str, str],
    ready_path: str,
    log_file: Path,
    timeout: float = 120,
) -> Iterator[str]:
    """Run `python <module_args> --host 127.0.0.1 --port <free port>` until the block ends."""
    port = free_port()
    command = [sys.executable, *module_args, "--host", "127.0.0.1", "--port", str(port)]
    base_url = f"http://127.0.0.1:{port}"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(process, f"{base_url}{ready_path}", timeout, log_file)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer {url} within {timeout} s; see {log}")
