"""The one health probe: the image's HEALTHCHECK (`deploy/healthcheck.py`) and `clipft health`.

An api is healthy when its `/health` answers 200 (a 503 while the database or the broker is
down). A worker is healthy when its consumer loop touched its liveness file within three beats
and its broker answers a PING. `auto` takes the process for a worker where the liveness file
exists (an api never writes one, and each container has its own /tmp), else for an api.

Standard library only, and it reads its few settings straight from the same `CLIPFT_*`
variables as `Settings` (whose defaults it shares through `app.core.liveness`): Docker runs the
check every few seconds in every container, and importing pydantic, httpx or redis, let alone
torch, would cost each run more than the check itself. `tests/test_health_probe.py` holds it to
that.
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.core.liveness import (
    DEFAULT_BEAT_SECONDS,
    DEFAULT_LIVENESS_FILE,
    MISSED_BEATS,
    file_age_seconds,
)

Role = Literal["auto", "api", "worker"]
ROLES = ("auto", "api", "worker")
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_API_PORT = "8000"
# The clipft commands whose process answers /health on its `--port`.
HTTP_COMMANDS = ("api", "serve")


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe reads: the few settings it needs, from the environment."""

    liveness_file: Path
    beat_seconds: float
    redis_url: str | None
    # Overrides `auto` (CLIPFT_HEALTHCHECK_ROLE), and the api's port (CLIPFT_HEALTHCHECK_PORT).
    role: Role = "auto"
    api_port: str | None = None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> ProbeSettings:
        env = os.environ if environ is None else environ
        role = env.get("CLIPFT_HEALTHCHECK_ROLE") or "auto"
        if role not in ROLES:
            raise ValueError(f"CLIPFT_HEALTHCHECK_ROLE is api, worker or auto, not {role!r}")
        return cls(
            liveness_file=Path(env.get("CLIPFT_WORKER_LIVENESS_FILE") or DEFAULT_LIVENESS_FILE),
            beat_seconds=float(env.get("CLIPFT_WORKER_LIVENESS_SECONDS") or DEFAULT_BEAT_SECONDS),
            redis_url=env.get("CLIPFT_REDIS_URL") or None,
            role=role,  # type: ignore[arg-type]
            api_port=env.get("CLIPFT_HEALTHCHECK_PORT") or None,
        )


@dataclass(frozen=True)
class Verdict:
    role: Literal["api", "worker"]
    # Why the process is not healthy; None when it is.
    problem: str | None

    @property
    def exit_code(self) -> int:
        return 0 if self.problem is None else 1

    @property
    def line(self) -> str:
        return (
            f"{self.role}: ok"
            if self.problem is None
            else f"{self.role}: unhealthy: {self.problem}"
        )


def probe(
    settings: ProbeSettings,
    *,
    role: Role = "auto",
    url: str | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> Verdict:
    """Check this container's api or worker; `role` and `url` given override the settings."""
    resolved = resolve_role(role if role != "auto" else settings.role, settings)
    if resolved == "worker":
        return Verdict("worker", worker_problem(settings, timeout_seconds))
    return Verdict("api", api_problem(url or api_url(settings), timeout_seconds))


def resolve_role(role: Role, settings: ProbeSettings) -> Literal["api", "worker"]:
    if role != "auto":
        return role
    return "worker" if settings.liveness_file.exists() else "api"


def api_url(settings: ProbeSettings) -> str:
    """This container's /health: on CLIPFT_HEALTHCHECK_PORT, else on the `--port` the api here
    was started with, else on 8000."""
    port = settings.api_port or running_api_port() or DEFAULT_API_PORT
    return f"http://127.0.0.1:{port}/health"


def api_problem(url: str, timeout_seconds: float) -> str | None:
    """Why the api at `url` is not healthy, or None if it is."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        detail = error.read(200).decode(errors="replace")
        return f"the api at {url} answers {error.code}: {detail}"
    except (OSError, ValueError) as error:
        return f"the api at {url} does not answer ({type(error).__name__})"
    if status != 200:
        return f"the api at {url} answers {status}"
    return None


def worker_problem(settings: ProbeSettings, timeout_seconds: float) -> str | None:
    """Why the worker of this container is not healthy, or None if it is."""
    age = file_age_seconds(settings.liveness_file)
    limit = settings.beat_seconds * MISSED_BEATS
    if age is None:
        return f"no worker has started here ({settings.liveness_file} is missing)"
    if age > limit:
        return f"the worker's consumer loop has been silent for {age:.0f}s (limit {limit:.0f}s)"
    if not settings.redis_url:
        return "CLIPFT_REDIS_URL is not set"
    return broker_problem(settings.redis_url, timeout_seconds)


def broker_problem(redis_url: str, timeout_seconds: float) -> str | None:
    """Why the Redis at `redis_url` does not answer a PING (after AUTH when the URL has a
    password), or None if it does."""
    parts = urllib.parse.urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        return f"cannot check a {parts.scheme or 'schemeless'} broker URL (redis:// or rediss://)"
    commands = []
    if parts.password is not None:
        credentials = [urllib.parse.unquote(parts.password)]
        if parts.username:
            credentials.insert(0, urllib.parse.unquote(parts.username))
        commands.append(["AUTH", *credentials])
    commands.append(["PING"])
    try:
        with _connect(parts, timeout_seconds) as connection:
            replies = connection.makefile("rb")
            for command in commands:
                connection.sendall(_resp(command))
                reply = replies.readline().decode(errors="replace").strip()
                if reply.startswith("-"):
                    return f"the broker refuses {command[0]}: {reply[1:200]}"
                if not reply.startswith("+"):
                    return f"the broker answers {command[0]} with {reply[:200]!r}"
    except OSError as error:
        return f"the broker does not answer ({type(error).__name__})"
    return None


def _connect(parts: urllib.parse.SplitResult, timeout_seconds: float) -> socket.socket:
    connection = socket.create_connection(
        (parts.hostname or "localhost", parts.port or 6379), timeout=timeout_seconds
    )
    if parts.scheme != "rediss":
        return connection
    context = ssl.create_default_context()
    query = urllib.parse.parse_qs(parts.query)
    if query.get("ssl_cert_reqs", [""])[0].lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(connection, server_hostname=parts.hostname)


def _resp(command: list[str]) -> bytes:
    """A command in Redis's wire format: an array of bulk strings."""
    encoded = [part.encode() for part in command]
    return b"".join(
        [f"*{len(encoded)}\r\n".encode()]
        + [b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded]
    )


def running_api_port() -> str | None:
    """The `--port` of a `clipft api` or `clipft serve` running here (its default: 8000)."""
    for arguments in _clipft_commands():
        if arguments[:1] and arguments[0] in HTTP_COMMANDS:
            return _option(arguments, "--port") or DEFAULT_API_PORT
    return None


def _clipft_commands() -> list[list[str]]:
    """The arguments after `clipft` of every clipft process visible here."""
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


def _option(arguments: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in `arguments`."""
    for index, arg in enumerate(arguments):
        if arg == name and index + 1 < len(arguments):
            return arguments[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def main() -> int:
    """The container's check: one line on stdout, exit 0 when healthy, else 1."""
    verdict = probe(ProbeSettings.from_environment())
    print(verdict.line)
    return verdict.exit_code
