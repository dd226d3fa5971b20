"""The `clipft` command: serve, api, worker, webhooks, migrate, create-bucket, demo."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from app.client.commands import datasets_app, jobs_app, models_app
from app.client.commands import predict as predict_command
from app.core.config import Settings, get_settings
from app.core.metrics_dir import use_private_metrics_dir

app = typer.Typer(help="clipft: fine-tune CLIP on your own images.", no_args_is_help=True)

HostOption = Annotated[str, typer.Option(help="Address the api listens on.")]
PortOption = Annotated[int, typer.Option(help="Port the api listens on.")]


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def migrated_database_url() -> str:
    """The configured database, brought to the latest migration (the SQLite file made)."""
    from app.core.migrate import upgrade_to_head

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    return settings.resolved_database_url


@app.command()
def migrate() -> None:
    """Apply the database migrations (creates the SQLite file when that is the database)."""
    migrated_database_url()
    typer.echo("database is at the latest migration")


@app.command()
def api(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    no_migrate: Annotated[bool, typer.Option("--no-migrate", help="Skip migrations.")] = False,
) -> None:
    """Run the HTTP api (applies migrations first)."""
    import uvicorn

    from app.main import create_app

    configure_logging()
    if not no_migrate:
        migrate()
    settings = get_settings()
    workers = settings.api_workers
    if workers == 1:
        uvicorn.run(create_app(), host=host, port=port, log_level="info")
    else:
        # Each worker keeps its Prometheus counters in files there; /metrics sums them.
        use_private_metrics_dir(settings=settings, role="api")
        # Each worker process imports the app factory itself; uvicorn supervises them.
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            timeout_worker_healthcheck=settings.api_worker_healthcheck_seconds,
        )


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs at once; use 1 per GPU.")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Run a Celery worker that takes training jobs from the `train` queue."""
    settings = get_settings()
    if not settings.redis_url:
        raise typer.BadParameter(
            "CLIPFT_REDIS_URL is not set; `clipft serve` starts an embedded Redis for you"
        )
    if settings.worker_metrics_port is not None:
        serve_worker_metrics(settings)
    from worker.celery_app import celery_app

    celery_app.worker_main(
        [
            "worker",
            f"--queues={settings.train_queue}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--loglevel={loglevel}",
            "--hostname=clipft@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command("create-bucket")
def create_bucket() -> None:
    """Create the bucket CLIPFT_STORAGE_URL names, if the server lacks it (a new SeaweedFS or
    MinIO); nothing to do for a folder store."""
    from app.core.objects.factory import open_store
    from app.core.objects.s3 import S3ObjectStore

    store = open_store(get_settings())
    if not isinstance(store, S3ObjectStore):
        typer.echo(f"{store.location} is a folder: no bucket to create")
        return
    created = store.ensure_bucket()
    typer.echo(f"bucket {store.bucket} {'created' if created else 'already exists'}")


@app.command()
def webhooks() -> None:
    """Send webhook deliveries until stopped (`clipft serve` starts one; run more anywhere)."""
    import signal
    import threading

    from app.webhooks.sender import run_sender

    configure_logging()
    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(stop_signal, lambda _signum, _frame: stop.set())
    # Attempts under way finish (each within CLIPFT_WEBHOOK_TIMEOUT_SECONDS), then it exits.
    run_sender(get_settings(), stop)


@app.command()
def health(
    role: Annotated[
        str,
        typer.Option(help="api, worker, or auto: a worker when its liveness file exists here."),
    ] = "auto",
    url: Annotated[
        str | None,
        typer.Option(
            help="The api's /health (for the api role); default: the port of the api here, or 8000."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 5.0,
) -> None:
    """Exit 0 if this container's api or worker is healthy, else 1 (for HEALTHCHECK)."""
    # The image's own check runs the same probe without the CLI (deploy/healthcheck.py).
    from app.health.probe import ROLES, ProbeSettings, probe

    if role not in ROLES:
        raise typer.BadParameter("--role is api, worker or auto")
    verdict = probe(
        ProbeSettings.from_environment(),
        role=role,  # type: ignore[arg-type]
        url=url,
        timeout_seconds=timeout,
    )
    typer.echo(verdict.line, err=verdict.problem is not None)
    raise typer.Exit(verdict.exit_code)


@app.command()
def serve(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """Run everything locally: api, a worker, and an embedded Redis when none is configured."""
    import uvicorn

    from app.local_stack import local_stack
    from app.main import create_app

    configure_logging()
    settings = get_settings()
    with local_stack(settings) as env:
        os.environ.update(env)
        get_settings.cache_clear()
        typer.echo(f"clipft is serving on http://{host}:{port} (data in {settings.data_dir})")
        uvicorn.run(create_app(), host=host, port=port, log_level="info")


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's data here (default: a temporary folder).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 6,
) -> None:
    """Fine-tune tiny-clip on synthetic shapes over HTTP, then predict held-out images."""
    from app.demo import run_demo

    raise typer.Exit(run_demo(data_dir=data_dir, epochs=epochs, base_settings=Settings()))


app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.command("predict")(predict_command)

keys_app = typer.Typer(help="API keys: create, list and revoke them.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for (shown in the listing).")],
    tenant: Annotated[
        str, typer.Option(help="The tenant whose datasets, jobs and models the key reaches.")
    ] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="The key sees every tenant.")] = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from app.auth.keys import create_key
    from app.core.db import session_scope

    try:
        with session_scope(migrated_database_url()) as session:
            new = create_key(session=session, name=name, tenant=tenant, admin=admin)
            key_id = new.record.id
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(new.key)
    typer.echo(
        f"key {key_id} for tenant {tenant}{' (admin)' if admin else ''}: store it now, it is "
        "not shown again",
        err=True,
    )


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, tenant, admin, name, created, revoked (never the key itself)."""
    from app.auth.keys import list_keys
    from app.core.db import session_scope

    with session_scope(migrated_database_url()) as session:
        for record in list_keys(session=session):
            revoked = record.revoked_at.isoformat() if record.revoked_at else "-"
            typer.echo(
                f"{record.id}\t{record.tenant}\t{'admin' if record.admin else '-'}\t"
                f"{record.name}\t{record.created_at.isoformat()}\t{revoked}"
            )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `list`).")]) -> None:
    """Revoke a key: it stops working within CLIPFT_AUTH_CACHE_SECONDS on every api."""
    from app.auth.keys import revoke_key
    from app.core.db import session_scope

    with session_scope(migrated_database_url()) as session:
        record = revoke_key(session=session, key_id=key_id)
    if record is None:
        raise typer.BadParameter(f"no key {key_id}")
    typer.echo(f"key {key_id} revoked")


def serve_worker_metrics(settings: Settings) -> None:
    """Prometheus metrics of this worker and its pool processes, on their own port."""
    # Before the instruments are made: the pool's processes write their values there.
    use_private_metrics_dir(settings=settings, role="worker")
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    # The instruments exist (at zero) before the first job: a scrape sees every series.
    import app.core.instruments  # noqa: F401

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(settings.worker_metrics_port or 0, registry=registry)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
