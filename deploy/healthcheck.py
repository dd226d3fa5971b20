"""The image's HEALTHCHECK, for whichever clipft process the container runs.

One image runs `clipft api` or `clipft worker`, and Docker runs the same check in both. The
check finds which one this container runs in its process list, then asks that process: the
api's `/health` (503 while the database or the broker is down), or the worker's Celery node
over the broker (`inspect ping`, answered only by a worker that is consuming). A container
running neither (a one-off `clipft migrate`) counts as healthy while it runs.

Standard library only, so that it starts fast. `CLIPFT_HEALTHCHECK_ROLE` (api or worker)
skips the search, and `CLIPFT_HEALTHCHECK_PORT` names the api's port (else the `--port` it was
started with, else 8000). Once the CLI has a `clipft health` that checks either process, this file
becomes a call to it and the Dockerfile's HEALTHCHECK line stays as it is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

TIMEOUT_SECONDS = 5


def clipft_commands() -> list[list[str]]:
    """The arguments after `clipft` of every clipft process in this container."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for index, arg in enumerate(argv):
            if Path(arg).name == "clipft":
                found.append(argv[index + 1 :])
                break
    return found


def option(arguments: list[str], name: str, default: str) -> str:
    """The value of `--name value` or `--name=value` in `arguments`."""
    for index, arg in enumerate(arguments):
        if arg == name and index + 1 < len(arguments):
            return arguments[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return default


def api_is_healthy(arguments: list[str]) -> bool:
    port = os.environ.get("CLIPFT_HEALTHCHECK_PORT") or option(arguments, "--port", "8000")
    try:
        # urlopen raises on a 503 and on a refused connection.
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT_SECONDS)
    except OSError:
        return False
    return True


def worker_is_healthy() -> bool:
    # The worker names its Celery node clipft@<hostname> (`clipft worker`).
    node = f"clipft@{socket.gethostname()}"
    ping = [sys.executable, "-m", "celery", "--app", "worker.celery_app", "inspect", "ping"]
    ping += ["--destination", node, "--timeout", str(TIMEOUT_SECONDS)]
    return subprocess.run(ping, capture_output=True, check=False).returncode == 0


def main() -> int:
    role = os.environ.get("CLIPFT_HEALTHCHECK_ROLE")
    commands = clipft_commands()
    if role is None:
        roles = [arguments[0] for arguments in commands if arguments]
        role = next((name for name in ("api", "worker") if name in roles), None)
    arguments = next((args for args in commands if args[:1] == [role]), [role or ""])
    if role == "api":
        healthy = api_is_healthy(arguments)
    elif role == "worker":
        healthy = worker_is_healthy()
    else:
        healthy = True
    print(f"{role or 'no clipft api or worker'}: {'healthy' if healthy else 'unhealthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
