"""Settings for every clipft process, read once from `CLIPFT_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.liveness import DEFAULT_BEAT_SECONDS, DEFAULT_LIVENESS_FILE
from app.core.objects.location import parse_storage_url


class PoolLimits(NamedTuple):
    """How many database connections a process keeps, and how long a session waits for one."""

    size: int = 5
    max_overflow: int = 10
    timeout_seconds: float = 30.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPFT_", extra="ignore")

    environment: Literal["dev", "production"] = Field(
        "dev", description="`production` refuses the single-machine defaults (SQLite, no broker)."
    )
    data_dir: Path = Field(Path("clipft-data"), description="Datasets, checkpoints and models.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means a SQLite file inside the data dir."
    )
    redis_url: str | None = Field(
        None, description="Broker URL; unset means `serve`/`demo` start an embedded Redis."
    )
    database_pool_size: int = Field(
        PoolLimits().size, ge=1, description="Database connections the api keeps open."
    )
    database_max_overflow: int = Field(
        PoolLimits().max_overflow, ge=0, description="Extra connections the api opens at peaks."
    )
    database_pool_timeout_seconds: float = Field(
        PoolLimits().timeout_seconds,
        gt=0,
        description="How long a request waits for a free connection before failing.",
    )
    base_models_dir: Path | None = Field(
        None, description="Folder of local base models (each a `save_pretrained` folder)."
    )
    train_queue: str = Field("train", description="Celery queue the training tasks go to.")

    # Artefacts (app/core/objects): a folder by default, a bucket for several machines.
    storage_url: str | None = Field(
        None,
        description="Where artefacts are stored: `s3://bucket/prefix` for an S3-compatible "
        "bucket, `file:///folder` for a folder; unset means the folder `objects` in the data dir.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="The S3 server's URL (SeaweedFS, MinIO, …); unset means AWS S3 itself.",
    )
    s3_access_key_id: str | None = Field(
        None, description="Access key of the bucket; unset means boto3's own credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="Secret key that goes with `s3_access_key_id`."
    )
    s3_region: str | None = Field(None, description="The bucket's region (unset: us-east-1).")
    cache_dir: Path | None = Field(
        None,
        description="Local folder of the cache of objects read from the store (unset: `cache` "
        "in the data dir); the processes of one machine share it.",
    )
    cache_max_bytes: int = Field(
        10 * 1024**3,
        ge=0,
        description="Bytes the local cache of objects may hold; the least recently used go first.",
    )
    store_retry_seconds: float = Field(
        120.0,
        ge=0,
        description="How long a worker keeps retrying a store that does not answer before a "
        "write or read counts as failed (a checkpoint is then kept only locally).",
    )

    # Upload limits: a zip is checked against these before anything is extracted.
    max_upload_bytes: int = Field(2 * 1024**3, gt=0)
    # Uploads are refused (507) while the data directory's disk has less than this free, so
    # that checkpoints of running jobs keep room to be written.
    min_free_disk_bytes: int = Field(1024**3, ge=0)
    max_archive_entries: int = Field(100_000, gt=0)
    # Resumable uploads (`/uploads`): the largest chunk one request may carry, and how long an
    # upload may sit without a new chunk before the janitor removes it and its chunks.
    upload_chunk_max_bytes: int = Field(64 * 1024**2, gt=0)
    upload_expiry_seconds: float = Field(24 * 3600.0, gt=0)
    max_uncompressed_bytes: int = Field(8 * 1024**3, gt=0)
    max_compression_ratio: float = Field(200.0, gt=1)
    max_archive_entry_bytes: int = Field(
        256 * 1024**2,
        gt=0,
        description="Unpacked size one zip entry may declare: each is read whole into memory, "
        "so one larger than any acceptable image is refused before it is read (an uncompressed "
        "RGBA image of max_image_pixels is 200 MB).",
    )
    max_metadata_bytes: int = Field(
        64 * 1024**2, gt=0, description="Unpacked size of a metadata.csv or metadata.jsonl."
    )
    max_image_pixels: int = Field(50_000_000, gt=0)
    stored_image_max_side: int = Field(
        512, ge=64, description="Uploaded images are stored downscaled to this longest side."
    )
    ingest_threads: int = Field(
        default_factory=lambda: min(8, os.cpu_count() or 1),
        ge=1,
        description="Threads decoding an upload's images.",
    )
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)

    # Jobs.
    job_max_attempts: int = Field(3, ge=1)
    heartbeat_timeout_seconds: float = Field(600.0, gt=0)
    queued_resend_after_seconds: float = Field(300.0, gt=0)
    reconcile_interval_seconds: float = Field(60.0, gt=0)
    # A training process that sends no sign of progress (a step, an evaluation, a checkpoint)
    # for this long is taken for hung: its heartbeat stops, so the reconciler gives the job
    # to a new attempt and the old one is stopped. Long enough for a slow first download.
    training_stall_seconds: float = Field(1800.0, gt=0)
    # How long a training process asked to stop gets before it is terminated.
    training_stop_grace_seconds: float = Field(30.0, gt=0)
    # The janitor (with the reconciler) removes a dataset folder without a row once nothing in
    # it changed for this long, and the checkpoints of failed and cancelled jobs this long
    # after they ended.
    orphan_upload_grace_seconds: float = Field(3600.0, gt=0)
    ended_job_checkpoints_ttl_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    broker_visibility_timeout_seconds: float = Field(
        7 * 24 * 3600.0, gt=0, description="Longer than the longest job, or Redis redelivers it."
    )
    device: str = Field("auto", description="`auto`, `cpu`, `cuda` or `cuda:N` for training.")
    worker_devices: int = Field(
        1,
        ge=1,
        le=64,
        description="Devices a worker owns (its GPUs, or CPU processes): a job may ask for up "
        "to this many `devices`; the api refuses more (set it alike on api and workers).",
    )
    distributed_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="How long a rank waits in a collective for the others before the attempt "
        "fails: a dead or hung rank ends the run instead of hanging it.",
    )
    # A worker proves its consumer loop turns this often: it touches `worker_liveness_file`
    # (what `clipft health` reads in its container) and marks itself seen in the broker (what
    # /health reports); three missed beats make it dead.
    worker_liveness_seconds: float = Field(DEFAULT_BEAT_SECONDS, gt=0)
    worker_liveness_file: Path = Field(
        DEFAULT_LIVENESS_FILE,
        description="File a worker touches while alive; `clipft health` reads it.",
    )

    # `clipft serve` restarts a child (worker, embedded Redis) that dies, after a delay that
    # doubles from `serve_restart_delay_seconds` up to 30 s; a child that dies more than
    # `serve_restart_limit` times within `serve_restart_window_seconds` makes serve exit 1.
    serve_restart_delay_seconds: float = Field(1.0, gt=0)
    serve_restart_limit: int = Field(5, ge=0)
    serve_restart_window_seconds: float = Field(300.0, gt=0)

    # Serving.
    model_cache_size: int = Field(2, ge=1, description="Models kept loaded for /predict.")
    predict_max_images: int = Field(64, ge=1)
    predict_max_texts: int = Field(256, ge=1)
    predict_max_text_chars: int = Field(
        1000,
        ge=1,
        description="Characters in one text of /predict or /embed. CLIP reads only its first "
        "77 tokens, but the tokenizer goes through the whole text first.",
    )
    predict_max_image_bytes: int = Field(20 * 1024**2, gt=0)
    predict_threads: int = Field(
        default_factory=lambda: min(8, os.cpu_count() or 1),
        ge=1,
        description="Threads decoding and preprocessing /predict images, shared by all requests.",
    )
    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port on which `clipft worker` serves Prometheus metrics (unset: none).",
    )
    metrics_dir: Path | None = Field(
        None,
        description="Local folder in which each multi-process api and each worker with "
        "metrics makes a folder of its own for Prometheus files, removed when it stops "
        "(unset: the system temp dir, $TMPDIR or /tmp). Never inside the data dir, which "
        "machines share and whose pid-named files two containers would mix.",
    )
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes `clipft api` serves HTTP with. Each has its own event loop, "
        "model cache and pixel threads; on a GPU machine several keep one process's GIL from "
        "capping /predict (the reconciler's updates are conditional, so each may run one).",
    )
    api_worker_healthcheck_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="With several api processes: how long uvicorn's supervisor waits for a "
        "process to answer its ping before it kills and replaces it. uvicorn's own 5 s is "
        "shorter than a process importing torch takes on a busy machine (the compose check, "
        "on two loaded cores, saw every api process killed in a loop and the api never "
        "healthy).",
    )
    predict_early_decode: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Decode a multipart request's images while the rest of its body arrives. "
        "`auto`: on when the machine has at least twice as many cores as `predict_threads`, "
        "since with fewer the early decoding only contends with receiving the body.",
    )
    predict_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="`auto`: bf16 autocast on a GPU or a CPU with bf16 instructions, else fp32.",
    )

    allow_hub_downloads: bool | None = Field(
        None,
        description="Whether jobs may name any Hugging Face hub model (the worker downloads it); "
        "unset means yes in `dev` and no in `production`.",
    )
    hub_model_allowlist: list[str] = Field(
        default_factory=list,
        description="Hub ids jobs may name even when hub downloads are off (JSON list).",
    )

    auth_disabled: bool | None = Field(
        None,
        description="Serve without API keys, everything in one tenant (local demos); unset "
        "means off in `dev` and on in `production`, which refuses to turn it off.",
    )
    model_lookup_seconds: float = Field(
        5.0,
        ge=0,
        description="How long /predict trusts a model's row without reading it again (a model "
        "deleted through another api process is served at most this long after; 0: always "
        "read).",
    )
    auth_cache_seconds: float = Field(
        10.0,
        ge=0,
        description="How long a checked API key is trusted without asking the database again "
        "(so a revoked key works at most this long after).",
    )

    tenant_max_active_jobs: int | None = Field(
        None, ge=1, description="Queued and running jobs one tenant may have (unset: no limit)."
    )
    tenant_max_upload_bytes: int | None = Field(
        None,
        ge=1,
        description="Bytes one tenant's datasets may keep on disk, their stored images and "
        "manifests, plus what its uploads in progress reserved (unset: no limit).",
    )
    tenant_max_stored_bytes: int | None = Field(
        None,
        ge=1,
        description="Bytes one tenant may keep on the data disk: its datasets' stored images, "
        "manifests and prepared arrays, its models' folders, its jobs' checkpoints and what "
        "its uploads in progress reserved; over it new uploads and jobs are refused (unset: "
        "no limit).",
    )
    tenant_predict_per_second: float | None = Field(
        None,
        gt=0,
        description="/predict requests per second one tenant may send to one api process, "
        "with bursts of as many (unset: no limit).",
    )

    # Webhooks (app/webhooks/): sent by `clipft webhooks`, never from inside a request.
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach loopback, link-local and private addresses (a receiver "
        "on this machine or the local network); off, such a URL is refused when it is "
        "registered and again at each delivery, since the server makes these requests.",
    )
    webhook_retry_hours: float = Field(
        24.0,
        gt=0,
        description="How long a delivery the receiver does not accept keeps being retried, "
        "from its event; then it is marked failed.",
    )
    webhook_retry_first_delay_seconds: float = Field(
        10.0, gt=0, description="The wait after a delivery's first failed attempt; it doubles."
    )
    webhook_retry_max_delay_seconds: float = Field(
        3600.0, gt=0, description="The longest wait between two attempts at a delivery."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="How long one delivery waits for the receiver."
    )
    webhook_sender_threads: int = Field(
        8,
        ge=1,
        le=256,
        description="Deliveries one `clipft webhooks` sends at once: a slow receiver holds one.",
    )
    webhook_poll_seconds: float = Field(
        1.0, gt=0, description="How often `clipft webhooks` looks for due deliveries."
    )
    webhook_max_per_tenant: int = Field(
        20, ge=1, description="Webhooks one tenant may register (job webhooks not counted)."
    )

    @property
    def decodes_early(self) -> bool:
        """Whether /predict decodes multipart images as they arrive (`predict_early_decode`)."""
        if self.predict_early_decode == "auto":
            return (os.cpu_count() or 1) >= 2 * self.predict_threads
        return self.predict_early_decode == "on"

    @property
    def auth_required(self) -> bool:
        if self.auth_disabled is None:
            return self.environment == "production"
        return not self.auth_disabled

    def hub_model_allowed(self, hub_id: str) -> bool:
        allowed = self.allow_hub_downloads
        if allowed is None:
            allowed = self.environment == "dev"
        return allowed or hub_id in self.hub_model_allowlist

    @field_validator(
        "storage_url",
        "s3_endpoint_url",
        "s3_access_key_id",
        "s3_secret_access_key",
        "s3_region",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # docker compose passes `${CLIPFT_STORAGE_URL:-}` through as "" when the shell has none.
        return None if value == "" else value

    @field_validator("storage_url")
    @classmethod
    def _storage_url_names_a_backend(cls, url: str | None) -> str | None:
        parse_storage_url(url, data_dir=Path("."))
        return url

    @model_validator(mode="after")
    def _s3_keys_come_in_pairs(self) -> Settings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set both CLIPFT_S3_ACCESS_KEY_ID and CLIPFT_S3_SECRET_ACCESS_KEY, or neither "
                "(then boto3 finds credentials itself)"
            )
        return self

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"

    @model_validator(mode="after")
    def _keep_metrics_off_the_data_dir(self) -> Settings:
        if self.metrics_dir is not None and self.metrics_dir.resolve().is_relative_to(
            self.data_dir.resolve()
        ):
            raise ValueError(
                "CLIPFT_METRICS_DIR must be on local disk outside CLIPFT_DATA_DIR, which "
                "machines share"
            )
        return self

    @model_validator(mode="after")
    def _refuse_dev_defaults_in_production(self) -> Settings:
        if self.environment == "production":
            if not self.database_url or self.database_url.startswith("sqlite"):
                raise ValueError("production needs CLIPFT_DATABASE_URL pointing at PostgreSQL")
            if not self.redis_url:
                raise ValueError("production needs CLIPFT_REDIS_URL")
            if self.auth_disabled:
                raise ValueError("production serves only with API keys: unset CLIPFT_AUTH_DISABLED")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'clipft.db').resolve()}"

    @property
    def database_pool(self) -> PoolLimits:
        return PoolLimits(
            self.database_pool_size,
            self.database_max_overflow,
            self.database_pool_timeout_seconds,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
