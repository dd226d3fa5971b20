"""What each fine-tuning method gains and what it costs: tiny-clip-shapes fine-tuned on digits.

`tiny-clip-shapes` knows 18 coloured shapes zero-shot. Each method fine-tunes it on synthetic
digits through the real training run (`worker.training.run`), with held-out shapes as the
job's control set. The table gives, per method, the accuracy on held-out digits of the model
as served (its head if it has one), the zero-shot accuracy on held-out shapes afterwards (it
was the "base" figure before), the parameters trained and the run's seconds. All rows run in
one process, one after another, on the same data.

Rerun: .venv/bin/python -m bench.methods [--per-class 200] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from app.ml.precision import training_autocast
from app.ml.preprocess import pixel_spec
from app.ml.synthetic import SHAPE_CLASSES, make_images
from app.ml.synthetic_digits import make_digit_images
from app.ml.tiny_clip import TINY_CLIP_SHAPES_NAME
from tests.training.synthetic_folder import write_image_folder
from worker.training.config import TrainingConfig
from worker.training.evaluate import Evaluator
from worker.training.inputs.control import control_accuracy, load_whole_set
from worker.training.run import run
from worker.training.wise_ft import load_served

TRAIN_SEED, HELD_OUT_DIGITS_SEED, HELD_OUT_SHAPES_SEED = 0, 7_001, 7_002

# Each row: a label and the hyperparameters that differ from the shared ones.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("full", {"method": "full"}),
    ("full, freeze text", {"method": "full", "freeze": "text"}),
    ("full, freeze vision", {"method": "full", "freeze": "vision"}),
    ("flyp", {"method": "flyp"}),
    ("linear_probe", {"method": "linear_probe", "head_learning_rate": 1e-2}),
    ("lp_ft", {"method": "lp_ft", "head_learning_rate": 1e-2}),
    ("lora", {"method": "lora", "learning_rate": 3e-3}),
    ("lora, freeze text", {"method": "lora", "freeze": "text", "learning_rate": 3e-3}),
    ("full + WiSE-FT", {"method": "full", "wise_ft_alphas": [0.25, 0.5, 0.75]}),
]


def write_sets(root: Path, per_class: int, held_out_per_class: int) -> dict[str, Path]:
    folders = {name: root / name for name in ("digits", "held-out digits", "held-out shapes")}
    write_image_folder(folders["digits"], make_digit_images(per_class, TRAIN_SEED))
    write_image_folder(
        folders["held-out digits"], make_digit_images(held_out_per_class, HELD_OUT_DIGITS_SEED)
    )
    write_image_folder(
        folders["held-out shapes"],
        make_images(SHAPE_CLASSES, per_class=held_out_per_class, seed=HELD_OUT_SHAPES_SEED),
    )
    return folders


def served_accuracy(model_folder: Path, dataset_dir: Path, templates: list[str]) -> float:
    """Accuracy of the registered model, as served, on every image of a classification set."""
    device = torch.device("cpu")
    served, _ = load_served(model_folder, device)
    whole = load_whole_set(dataset_dir, served.loaded, device, templates=templates)
    evaluator = Evaluator(
        clip=served.loaded.clip,
        tokenizer=served.loaded.tokenizer,
        pixel_spec=pixel_spec(served.loaded.image_processor),
        precision=training_autocast(device)(),
        device=device,
    )
    accuracy = control_accuracy(evaluator, whole, served.head)
    assert accuracy is not None
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200, help="Training digits per class.")
    parser.add_argument("--held-out-per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipft-bench-methods-") as tmp:
        root = Path(tmp)
        sets = write_sets(root, args.per_class, args.held_out_per_class)
        shared = TrainingConfig(
            base_model=TINY_CLIP_SHAPES_NAME,
            dataset_dir=sets["digits"],
            control_dataset_dir=sets["held-out shapes"],
            epochs=args.epochs,
            batch_size=32,
            learning_rate=args.learning_rate,
            weight_decay=0.05,
            device="cpu",
            prepare_workers=2,
        )
        rows = []
        curves = []
        for label, overrides in VARIANTS:
            config = TrainingConfig(**{**dict(shared), **overrides})
            started = time.perf_counter()
            result = run(config, root / "runs" / label.replace(", ", "-").replace(" ", "-"))
            seconds = time.perf_counter() - started
            assert result.best_checkpoint is not None and result.report is not None
            digits = served_accuracy(
                result.best_checkpoint, sets["held-out digits"], config.prompt_templates
            )
            retention = result.report["retention"]
            trained = max(result.report["trainable_parameters"].values())
            if result.report["wise_ft"]:
                curves.append((label, result.report["wise_ft"]))
            alpha = result.report["fine_tuned"]["wise_ft_alpha"]
            rows.append(
                (
                    label if alpha is None else f"{label} (a={alpha:g})",
                    digits,
                    retention,
                    trained,
                    seconds,
                )
            )
            print(f"  {label}: done in {seconds:.0f} s", flush=True)
    print_table(args, rows, curves)


def print_table(
    args: argparse.Namespace,
    rows: list[tuple[Any, ...]],
    curves: list[tuple[str, list[dict[str, Any]]]],
) -> None:
    print(
        f"\n{TINY_CLIP_SHAPES_NAME} fine-tuned on {args.per_class * 10} synthetic digits, "
        f"{args.epochs} epochs, CPU; held out: {args.held_out_per_class * 10} digits, "
        f"{args.held_out_per_class * 18} shapes"
    )
    before = rows[0][2]["zero_shot_accuracy_before"]
    print(f"zero-shot on held-out shapes before any fine-tuning: {before:.3f} (chance 0.056)")
    print(f"{'method':<22}{'digits':>8}{'shapes':>8}{'trained params':>16}{'seconds':>9}")
    for label, digits, retention, trained, seconds in rows:
        shapes = retention["zero_shot_accuracy_after"]
        print(f"{label:<22}{digits:8.3f}{shapes:8.3f}{trained:16,d}{seconds:9.1f}")
    print("digits: held-out accuracy as served; shapes: held-out zero-shot accuracy after")
    for label, curve in curves:
        print(f"{label}, the curve on val (digits) and the control set (shapes):")
        for point in curve:
            print(
                f"  alpha {point['alpha']:<5g} val_accuracy {point['val_accuracy']:.3f}"
                f"  shapes {point['control_zero_shot_accuracy']:.3f}"
            )
    print(
        "rerun: .venv/bin/python -m bench.methods "
        f"--per-class {args.per_class} --epochs {args.epochs}"
    )


if __name__ == "__main__":
    main()
