"""`clipft health`: one health command for the image, whichever process it runs.

An api is healthy when its `/health` answers 200. A worker is healthy when its consumer loop
touched its liveness file within three beats and its broker answers. `auto` takes the process
for a worker when the liveness file exists in this container (an api never writes one).
"""

from __future__ import annotations

from typing import Literal

import httpx
import redis

from app.core.config import Settings
from app.core.liveness import MISSED_BEATS, file_age_seconds

Role = Literal["auto", "api", "worker"]


def resolve_role(role: Role, settings: Settings) -> Literal["api", "worker"]:
    if role != "auto":
        return role
    return "worker" if settings.worker_liveness_file.exists() else "api"


def api_problem(url: str, timeout_seconds: float) -> str | None:
    """Why the api at `url` is not healthy, or None if it is."""
    try:
        response = httpx.get(url, timeout=timeout_seconds)
    except httpx.HTTPError as error:
        return f"the api at {url} does not answer ({type(error).__name__})"
    if response.status_code != 200:
        return f"the api at {url} answers {response.status_code}: {response.text[:200]}"
    return None


def worker_problem(settings: Settings, timeout_seconds: float) -> str | None:
    """Why the worker of this container is not healthy, or None if it is."""
    age = file_age_seconds(settings.worker_liveness_file)
    limit = settings.worker_liveness_seconds * MISSED_BEATS
    if age is None:
        return f"no worker has started here ({settings.worker_liveness_file} is missing)"
    if age > limit:
        return f"the worker's consumer loop has been silent for {age:.0f}s (limit {limit:.0f}s)"
    if not settings.redis_url:
        return "CLIPFT_REDIS_URL is not set"
    try:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
        )
        client.ping()
        client.close()
    except redis.RedisError as error:
        return f"the broker does not answer ({type(error).__name__})"
    return None
