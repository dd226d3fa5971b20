"""One factory picks serving's precision; bf16 answers come back as float32 close to fp32's."""

from __future__ import annotations

import pytest
import torch

from app.inference.cache import CachedModel, load_cached_model
from app.inference.engine import serve_pass
from app.inference.work import ImageWork
from app.ml import precision as precision_module
from app.ml.precision import serving_autocast
from app.ml.preprocess import resize_and_crop
from app.ml.synthetic import make_images
from tests.model_factory import write_model_folder

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    ("device", "precision", "bf16_supported", "expected"),
    [
        (CPU, "auto", False, None),
        (CPU, "auto", True, torch.bfloat16),
        (CPU, "fp32", True, None),
        (CPU, "bf16", False, torch.bfloat16),
        (CUDA, "auto", True, torch.bfloat16),
        (CUDA, "auto", False, None),
        (CUDA, "fp32", True, None),
    ],
)
def test_bf16_by_default_where_the_hardware_has_it_and_fp32_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
    device: torch.device,
    precision: str,
    bf16_supported: bool,
    expected: torch.dtype | None,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: bf16_supported)

    autocast = serving_autocast(device, precision)  # type: ignore[arg-type]

    assert autocast.device_type == device.type
    assert autocast.dtype == expected


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CachedModel]:
    folder = tmp_path_factory.mktemp("model")
    write_model_folder(folder)
    return {
        precision: load_cached_model(precision, folder, CPU, precision)
        for precision in ("fp32", "bf16")
    }


def test_bf16_runs_the_model_in_bf16_and_answers_in_float32(
    models: dict[str, CachedModel],
) -> None:
    cached = models["bf16"]
    images = [sample.image for sample in make_images(per_class=2, seed=3)]
    pixels = torch.stack([resize_and_crop(image, cached.pixel_spec) for image in images])
    texts = ["a red circle", "a blue triangle"]
    with cached.autocast():
        features = cached.loaded_clip.clip.get_image_features(
            pixel_values=torch.zeros(1, 3, 32, 32)
        ).pooler_output
    assert features.dtype == torch.bfloat16

    bf16_answers = serve_pass(cached, [ImageWork(pixels), ImageWork(pixels, texts)])
    fp32_answers = serve_pass(models["fp32"], [ImageWork(pixels), ImageWork(pixels, texts)])

    for bf16, fp32 in zip(bf16_answers, fp32_answers, strict=True):
        assert bf16.probabilities.dtype == torch.float32
        assert torch.allclose(bf16.probabilities.sum(dim=-1), torch.ones(len(images)))
        # Measured: 0.0007 (labels) and 0.004 (texts) apart at most.
        assert torch.allclose(bf16.probabilities, fp32.probabilities, atol=0.02)
    cosine, fp32_cosine = bf16_answers[1].cosine, fp32_answers[1].cosine
    assert cosine is not None and fp32_cosine is not None
    assert cosine.dtype == torch.float32
    assert torch.allclose(cosine, fp32_cosine, atol=0.01)  # measured 0.0025


def test_training_runs_bf16_on_a_gpu_and_float32_on_the_cpu() -> None:
    assert precision_module.training_autocast(torch.device("cpu")).dtype is None
    cuda = precision_module.training_autocast(torch.device("cuda"))
    assert (cuda.device_type, cuda.dtype) == ("cuda", torch.bfloat16)
