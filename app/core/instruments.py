"""Prometheus instruments shared by the api and the worker.

Counters and histograms live in each process. `clipft api` with several workers sets
`PROMETHEUS_MULTIPROC_DIR`, and `/metrics` then sums every process's files.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICT_SECONDS = Histogram(
    "clipft_predict_seconds",
    "Time to answer a /predict or /embed request, from its body read to its answer.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FORWARD_PASS_IMAGES = Histogram(
    "clipft_forward_pass_images",
    "Images in one shared forward pass (requests for the same model share passes).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
MODEL_CACHE_HITS = Counter(
    "clipft_model_cache_hits_total", "Requests that found their model already loaded."
)
MODEL_CACHE_LOADS = Counter("clipft_model_cache_loads_total", "Models loaded for serving.")
TRAINING_IMAGES_PER_SECOND = Gauge(
    "clipft_training_images_per_second",
    "The running job's training throughput at its latest progress point (worker).",
    ["job_id"],
    multiprocess_mode="livesum",
)
TRAINING_STEPS = Counter("clipft_training_steps_total", "Optimizer steps reported (worker).")
