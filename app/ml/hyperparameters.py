"""Every training hyperparameter, declared once: the jobs API and the training config both use it.

A job stores its hyperparameters as JSON; reading them back through this model fills in any
field added since, and reads the older spellings (`augment: true`, `prompt_template`), so a job
stored by an earlier version still loads and resumes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.ml.prompts import DEFAULT_PROMPT_TEMPLATE, PromptTemplates

Method = Literal["full", "linear_probe", "lp_ft", "flyp", "lora"]
Freeze = Literal["none", "text", "vision"]
LrSchedule = Literal["cosine", "linear", "step", "constant"]
Augment = Literal["none", "light", "standard"]

# FLYP's objective beat cross-entropy over the class prompts on held-out classification in
# every run measured (bench/methods.py, docs/methods.md), so it is the default. Jobs stored
# before `method` existed trained with `full`, and read back so (`LEGACY_METHOD`).
DEFAULT_METHOD: Method = "flyp"
LEGACY_METHOD: Method = "full"
# Methods whose towers can be partly frozen; the probes freeze both towers by definition.
FREEZABLE_METHODS = ("full", "lora", "flyp")
# Methods that classify with a trained head: they need a classification set.
HEAD_METHODS = ("linear_probe", "lp_ft")
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout")
MAX_WISE_FT_ALPHAS = 11


class Hyperparameters(BaseModel):
    """Every field has a default and a checked range; unknown fields are refused."""

    # Strict: `"epochs": "3"` or `true` is a client's mistake, not a 3 or a 1 (a JSON int
    # still fills a float field).
    model_config = ConfigDict(extra="forbid", strict=True)

    method: Method = Field(
        DEFAULT_METHOD,
        description="`flyp` (the default) fine-tunes both towers with CLIP's contrastive loss "
        "on (image, class prompt) pairs; `full` with cross-entropy over the class prompts; "
        "`linear_probe` trains a head on frozen towers; `lp_ft` probes, then fine-tunes from "
        "that head; `lora` trains low-rank adapters. For caption sets flyp and full are one.",
    )
    freeze: Freeze = Field(
        "none", description="A tower kept frozen: `text` or `vision` (with full, flyp, lora)."
    )
    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per optimisation step.")
    grad_accum_steps: int = Field(
        1,
        ge=1,
        le=64,
        description="Batches whose gradients add up to one optimisation step: the step's "
        "global batch is `batch_size * grad_accum_steps` on any number of devices.",
    )
    devices: int = Field(
        1,
        ge=1,
        le=64,
        description="Devices (GPUs, or CPU processes) the run trains on in data parallel; "
        "`batch_size` stays the global batch, split across them.",
    )
    learning_rate: float = Field(1e-5, gt=0, le=1.0, description="Peak AdamW learning rate.")
    head_learning_rate: float = Field(
        1e-3,
        gt=0,
        le=1.0,
        description="Peak rate of the linear head (`linear_probe`, and `lp_ft`'s probe phase).",
    )
    lp_ft_probe_epochs: int | None = Field(
        None,
        ge=1,
        le=999,
        description="`lp_ft`: epochs of the probe phase before fine-tuning (default: half).",
    )
    weight_decay: float = Field(0.1, ge=0, le=1.0, description="AdamW weight decay.")
    lr_schedule: LrSchedule = Field(
        "cosine", description="Decay after warmup: `cosine`, `linear`, `step` or `constant`."
    )
    warmup_ratio: float = Field(0.1, ge=0, le=0.5, description="Share of steps warming up.")
    step_size_epochs: int = Field(
        1, ge=1, le=1000, description="`step` schedule: epochs between rate drops."
    )
    gamma: float = Field(0.1, gt=0, le=1.0, description="`step` schedule: factor of each drop.")
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Stop after this many epochs without a better val metric (off when unset).",
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, le=1.0, description="The least gain in the val metric that counts as better."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1.0, description="Label smoothing of the classification loss."
    )
    augment: Augment = Field(
        "light",
        description="`none`; `light`: random resized crops keeping most of the image, no flip; "
        "`standard`: wider crops and horizontal flips.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds shuffling and augmentation.")
    prompt_templates: PromptTemplates = Field(
        default_factory=lambda: [DEFAULT_PROMPT_TEMPLATE],
        # A factory's value is not in the schema by itself; clients (the dashboard's form)
        # show the schema's default.
        json_schema_extra={"default": [DEFAULT_PROMPT_TEMPLATE]},
        description="Class prompts; `{}` becomes the class name. Each class's text embedding "
        "is the mean over the templates.",
    )
    lora_rank: int = Field(8, ge=1, le=256, description="`lora`: rank of the adapters.")
    lora_alpha: float = Field(16.0, gt=0, le=1024, description="`lora`: scale of the adapters.")
    lora_dropout: float = Field(0.0, ge=0, lt=1.0, description="`lora`: dropout on adapters.")
    wise_ft_alphas: list[float] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        max_length=MAX_WISE_FT_ALPHAS,
        description="WiSE-FT: after training, mix base and fine-tuned weights at each alpha "
        "(0 = base, 1 = fine-tuned), evaluate each, register the best by val.",
    )

    target_precision: float | None = Field(
        None,
        gt=0,
        le=1.0,
        description="Classification: the precision the model's default abstain threshold aims "
        "for. After training, the lowest calibrated confidence whose val precision (accuracy "
        "among the images kept) reaches it becomes the model's `min_confidence`; `/predict` "
        "answers `label: null` below it. Unset: no default threshold.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_older_spellings(cls, data: Any) -> Any:
        """Jobs stored before `augment` took names and before templates became a list."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("augment"), bool):
            data["augment"] = "standard" if data["augment"] else "none"
        if "prompt_template" in data:
            if "prompt_templates" in data:
                raise ValueError("give prompt_templates or prompt_template, not both")
            data["prompt_templates"] = [data.pop("prompt_template")]
        return data

    @field_validator("wise_ft_alphas")
    @classmethod
    def _alphas_in_unit_interval(cls, alphas: list[float]) -> list[float]:
        if any(not 0.0 <= alpha <= 1.0 for alpha in alphas):
            raise ValueError("every WiSE-FT alpha must lie in [0, 1]")
        if len(set(alphas)) != len(alphas):
            raise ValueError("WiSE-FT alphas must be distinct")
        return sorted(alphas)

    @model_validator(mode="after")
    def _options_fit_the_method(self) -> Hyperparameters:
        if self.freeze != "none" and self.method not in FREEZABLE_METHODS:
            raise ValueError(
                f"freeze={self.freeze!r} works with {', '.join(FREEZABLE_METHODS)}, "
                f"not method={self.method!r}"
            )
        # By value, not by "was it sent": a stored job carries every field, defaults included.
        set_lora = [
            name
            for name in LORA_FIELDS
            if getattr(self, name) != type(self).model_fields[name].default
        ]
        if set_lora and self.method != "lora":
            raise ValueError(f"{', '.join(set_lora)} only apply to method='lora'")
        if self.lp_ft_probe_epochs is not None:
            if self.method != "lp_ft":
                raise ValueError("lp_ft_probe_epochs only applies to method='lp_ft'")
            if self.lp_ft_probe_epochs >= self.epochs:
                raise ValueError("lp_ft_probe_epochs must be less than epochs")
        if self.batch_size < self.devices:
            raise ValueError(
                f"batch_size ({self.batch_size}) is the global batch: it needs at least one "
                f"image for each of the {self.devices} devices"
            )
        if self.method == "lp_ft" and self.epochs < 2:
            raise ValueError("method='lp_ft' needs at least 2 epochs: one to probe, one to tune")
        return self

    @property
    def probe_epochs(self) -> int:
        """`lp_ft`'s probe phase: as asked, or half the epochs."""
        return self.lp_ft_probe_epochs or max(1, self.epochs // 2)

    @property
    def flips(self) -> bool:
        return self.augment == "standard"
