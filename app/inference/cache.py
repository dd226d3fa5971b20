"""A bounded, thread-safe cache of trained models loaded for serving, least recently used out.

Each entry is ready to answer: the CLIP in eval mode on its device, its preprocessing and
precision, the metadata from `clipft.json`, and the class-prompt text embeddings computed once at
load.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.core.instruments import MODEL_CACHE_HITS, MODEL_CACHE_LOADS
from app.inference.batching import RequestQueue
from app.inference.work import ImageWork, PassAnswer
from app.ml.base_models import LoadedClip, load_base_model
from app.ml.class_head import ClassHead
from app.ml.encode import encode_class_prompts
from app.ml.model_files import load_class_head, load_model_folder
from app.ml.model_metadata import METADATA_NAME, ModelMetadata
from app.ml.precision import Autocast, Precision, serving_autocast
from app.ml.preprocess import PixelSpec, pixel_spec

logger = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """The model's folder is missing or does not load; the message says which."""


@dataclass(frozen=True)
class CachedModel:
    model_id: str
    loaded_clip: LoadedClip
    pixel_spec: PixelSpec
    metadata: ModelMetadata
    device: torch.device
    autocast: Autocast
    # Unit-length embeddings of the class prompts, one row per label; None when there are no labels.
    label_embeddings: torch.Tensor | None
    logit_scale: float
    # What classifies: the head a linear probe trained, else the zero-shot head built from the
    # label embeddings and the temperature. None when there are no labels.
    class_head: ClassHead | None
    # Temperature scaling fitted on val after training (`clipft.json`): the class logits are
    # divided by it before the softmax; 1 for models without one and for zero-shot heads.
    temperature: float = 1.0
    # The model's default abstain threshold (chosen for its job's target precision), or None.
    min_confidence: float | None = None
    # One forward pass at a time per model: bounds accelerator memory, and the Rust tokenizer
    # raises "Already borrowed" when two threads call it at once.
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    # Every forward pass runs on this one thread. PyTorch's OpenMP gives each thread that runs an
    # op its own team of workers, which spin after every op: passes run by whichever request
    # thread held the lock left dozens of teams spinning, and on two cores requests stalled for
    # about 180 ms (bench/predict_throughput.py, tiny-clip, one client).
    forward_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="forward"),
        compare=False,
        repr=False,
    )
    # Requests waiting for this model, classification and similarity; they share forward passes.
    requests: RequestQueue[ImageWork, PassAnswer] = field(
        default_factory=RequestQueue, compare=False, repr=False
    )


def load_cached_model(
    model_id: str, folder: Path, device: torch.device, precision: Precision = "auto"
) -> CachedModel:
    """Load a model folder onto `device` and embed its class prompts; `ModelUnavailable` if not."""
    if not folder.is_dir():
        raise ModelUnavailable("its model folder is missing")
    if not (folder / METADATA_NAME).is_file():
        raise ModelUnavailable(f"its model folder has no {METADATA_NAME}")
    try:
        loaded_clip, metadata = load_model_folder(folder)
        spec = pixel_spec(loaded_clip.image_processor)
    except Exception as error:
        logger.exception("model %s at %s does not load", model_id, folder)
        raise ModelUnavailable(f"its files do not load ({type(error).__name__})") from error
    loaded_clip.clip.eval().to(device)
    with torch.inference_mode():
        label_embeddings = _embed_labels(loaded_clip, metadata, device)
        logit_scale = float(loaded_clip.clip.logit_scale.exp().item())
        class_head = _class_head(folder, metadata, label_embeddings, logit_scale, device)
    return CachedModel(
        model_id=model_id,
        loaded_clip=loaded_clip,
        pixel_spec=spec,
        metadata=metadata,
        device=device,
        autocast=serving_autocast(device, precision),
        label_embeddings=label_embeddings,
        logit_scale=logit_scale,
        class_head=class_head,
        temperature=metadata.temperature or 1.0,
        min_confidence=metadata.min_confidence,
    )


BASE_MODEL_KEY = "base:{}"


def load_cached_base_model(
    name: str, base_models_dir: Path | None, device: torch.device, precision: Precision = "auto"
) -> CachedModel:
    """A base model for zero-shot use: no labels of its own; each request brings them."""
    try:
        loaded_clip = load_base_model(name, base_models_dir)
        spec = pixel_spec(loaded_clip.image_processor)
    except Exception as error:
        logger.exception("base model %s does not load", name)
        raise ModelUnavailable(f"it does not load ({type(error).__name__})") from error
    loaded_clip.clip.eval().to(device)
    metadata = ModelMetadata(
        kind="captions", labels=[], prompt_template="{}", base_model=name, method="zero-shot"
    )
    with torch.inference_mode():
        logit_scale = float(loaded_clip.clip.logit_scale.exp().item())
    return CachedModel(
        model_id=BASE_MODEL_KEY.format(name),
        loaded_clip=loaded_clip,
        pixel_spec=spec,
        metadata=metadata,
        device=device,
        autocast=serving_autocast(device, precision),
        label_embeddings=None,
        logit_scale=logit_scale,
        class_head=None,
    )


def with_labels(base: CachedModel, labels: list[str], templates: list[str]) -> CachedModel:
    """The base model classifying over a request's labels (zero-shot).

    It shares the base's weights, lock and forward thread, but not its request queue: passes
    are shared only among requests that classify over the same head.
    """
    with base.lock:
        embeddings = base.forward_thread.submit(_encode_labels, base, labels, templates).result()
    return dataclasses.replace(
        base,
        metadata=dataclasses.replace(
            base.metadata, kind="classification", labels=labels, prompt_templates=templates
        ),
        label_embeddings=embeddings,
        class_head=ClassHead.zero_shot(embeddings.float(), base.logit_scale).to(base.device),
        requests=RequestQueue(),
    )


def _encode_labels(base: CachedModel, labels: list[str], templates: list[str]) -> torch.Tensor:
    # As a trained model's labels are embedded at load: in float32.
    with torch.inference_mode():
        return encode_class_prompts(
            base.loaded_clip.clip, base.loaded_clip.tokenizer, labels, templates, base.device
        )


def _embed_labels(
    loaded_clip: LoadedClip, metadata: ModelMetadata, device: torch.device
) -> torch.Tensor | None:
    if not metadata.labels:
        return None
    return encode_class_prompts(
        loaded_clip.clip, loaded_clip.tokenizer, metadata.labels, metadata.templates, device
    )


def _class_head(
    folder: Path,
    metadata: ModelMetadata,
    label_embeddings: torch.Tensor | None,
    logit_scale: float,
    device: torch.device,
) -> ClassHead | None:
    if label_embeddings is None:
        return None
    try:
        trained = load_class_head(folder, metadata)
    except Exception as error:
        logger.exception("the class head in %s does not load", folder)
        raise ModelUnavailable(f"its class head does not load ({type(error).__name__})") from error
    if trained is None:
        return ClassHead.zero_shot(label_embeddings.float(), logit_scale).to(device)
    if trained.weight.shape[0] != len(metadata.labels):
        raise ModelUnavailable(
            f"its head has {trained.weight.shape[0]} classes for {len(metadata.labels)} labels"
        )
    return trained.to(device)


class ModelCache:
    """Up to `capacity` loaded models keyed by model id; a model is loaded once however many ask."""

    def __init__(
        self, *, capacity: int, device: torch.device, precision: Precision = "auto"
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self.precision: Precision = precision
        self._entries: OrderedDict[str, CachedModel] = OrderedDict()
        self._lock = threading.Lock()
        # Per-model locks so that loading one model never waits for another model's load.
        self._load_locks: dict[str, threading.Lock] = {}
        self._loads = 0

    @property
    def loads(self) -> int:
        """How many times a model folder has been loaded, for tests and metrics."""
        return self._loads

    def model_ids(self) -> list[str]:
        """Cached model ids, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, model_id: object) -> bool:
        with self._lock:
            return model_id in self._entries

    def get(self, model_id: str, folder: Path) -> CachedModel:
        """The cached model, loading it from `folder` first if needed; blocks while it loads."""
        return self.get_or_load(model_id, lambda: folder)

    def get_or_load(self, model_id: str, find_folder: Callable[[], Path]) -> CachedModel:
        """The cached model; on a miss, `find_folder()` says where its folder is (and may fetch
        it first) and it loads from there. A hit calls nothing."""
        return self._get(
            model_id,
            lambda: load_cached_model(model_id, find_folder(), self.device, self.precision),
        )

    def get_base(self, name: str, base_models_dir: Path | None) -> CachedModel:
        """A base model for zero-shot requests, cached beside the trained ones."""
        return self._get(
            BASE_MODEL_KEY.format(name),
            lambda: load_cached_base_model(name, base_models_dir, self.device, self.precision),
        )

    def loaded(self, model_id: str) -> CachedModel | None:
        """The model if it is loaded already (a base model under `BASE_MODEL_KEY`); never loads."""
        return self._lookup(model_id)

    def _get(self, model_id: str, load: Callable[[], CachedModel]) -> CachedModel:
        cached = self._lookup(model_id)
        if cached is not None:
            MODEL_CACHE_HITS.inc()
            return cached
        with self._lock:
            load_lock = self._load_locks.setdefault(model_id, threading.Lock())
        with load_lock:
            try:
                # Another thread may have loaded it while this one waited for the lock.
                cached = self._lookup(model_id)
                if cached is None:
                    cached = load()
                    MODEL_CACHE_LOADS.inc()
                    self._insert(cached)
                return cached
            finally:
                with self._lock:
                    if self._load_locks.get(model_id) is load_lock:
                        del self._load_locks[model_id]

    def evict(self, model_id: str) -> bool:
        """Drop a model (e.g. after its files change or it is deleted); True if it was cached."""
        with self._lock:
            return self._entries.pop(model_id, None) is not None

    def _lookup(self, model_id: str) -> CachedModel | None:
        with self._lock:
            cached = self._entries.get(model_id)
            if cached is not None:
                self._entries.move_to_end(model_id)
            return cached

    def _insert(self, cached: CachedModel) -> None:
        with self._lock:
            self._loads += 1
            self._entries[cached.model_id] = cached
            self._entries.move_to_end(cached.model_id)
            while len(self._entries) > self.capacity:
                evicted_id, _ = self._entries.popitem(last=False)
                logger.info("evicted model %s from the serving cache", evicted_id)
