"""`lora`: low-rank adapters (peft) on the attention projections of both towers.

Only the adapters train. A checkpoint holds the merged weights, so the registered model is a
plain CLIP folder that `CLIPModel.from_pretrained` loads, and the adapter alone under
`adapter/`, from which a resumed run continues on top of the base model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file

from app.ml.base_models import LoadedClip, load_base_model
from app.ml.model_metadata import ModelMetadata
from worker.training.checkpoints.snapshot import ClipFolderSnapshot, ModelSnapshot, host_copy
from worker.training.methods.base import ParameterGroup, Phase, freeze_all_but
from worker.training.methods.full import FullFineTune

ADAPTER_DIR_NAME = "adapter"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ATTENTION_PROJECTIONS = "(q_proj|k_proj|v_proj|out_proj)"
TOWERS = {"none": "(vision_model|text_model)", "text": "vision_model", "vision": "text_model"}


def lora_target_pattern(freeze: str) -> str:
    """The attention projections of the towers that train (a frozen tower gets no adapters)."""
    return rf".*{TOWERS[freeze]}\.encoder\.layers\.\d+\.self_attn\.{ATTENTION_PROJECTIONS}"


@dataclass
class AdapterSnapshot:
    merged: ClipFolderSnapshot
    # Only its configuration is read while writing; the weights come from `adapter_weights`.
    peft: PeftModel
    adapter_weights: dict[str, torch.Tensor]

    def write(self, folder: Path) -> None:
        self.merged.write(folder)
        self.peft.save_pretrained(str(folder / ADAPTER_DIR_NAME), state_dict=self.adapter_weights)


class LowRankAdapters(FullFineTune):
    name = "lora"

    _peft: PeftModel | None = None

    def load(self, resume_from: Path | None) -> LoadedClip:
        # Always the base weights: a checkpoint's merged weights already contain its adapter.
        loaded = load_base_model(self.config.base_model, self.config.base_models_dir)
        adapter_config = LoraConfig(
            r=self.config.lora_rank,
            # peft's stub says int; the scale alpha / r is computed in floats either way.
            lora_alpha=self.config.lora_alpha,  # type: ignore[arg-type]
            lora_dropout=self.config.lora_dropout,
            target_modules=lora_target_pattern(self.config.freeze),
        )
        # peft wraps the CLIP model but adds its adapters inside it: `loaded.clip` stays the
        # CLIPModel the loop calls, now with adapters in its attention layers.
        self._peft = get_peft_model(loaded.clip, adapter_config)
        if resume_from is not None:
            weights = load_file(str(resume_from / ADAPTER_DIR_NAME / ADAPTER_WEIGHTS_NAME))
            set_peft_model_state_dict(self._peft, weights)
        loaded.clip.to(self.device)  # type: ignore[arg-type]
        self._loaded = loaded
        return loaded

    def start_phase(self, phase: Phase) -> list[ParameterGroup]:
        clip = self.loaded.clip
        adapters = [(n, p) for n, p in clip.named_parameters() if "lora_" in n]
        freeze_all_but(clip, adapters)
        return [ParameterGroup(adapters, self.config.learning_rate)]

    def snapshot_model(self, metadata: ModelMetadata) -> ModelSnapshot:
        """The merged weights as a plain CLIP model in host memory, and the adapter alone."""
        assert self._peft is not None
        merged = copy.deepcopy(self._peft).merge_and_unload().to("cpu")
        # Only the adapter's tensors: peft picks its own from whatever state dict it is given.
        adapter = host_copy({k: v for k, v in self._peft.state_dict().items() if "lora_" in k})
        return AdapterSnapshot(
            merged=ClipFolderSnapshot(
                loaded=LoadedClip(merged, self.loaded.tokenizer, self.loaded.image_processor),
                weights=None,
                metadata=metadata,
            ),
            peft=self._peft,
            adapter_weights=adapter,
        )

    def after_step(self) -> None:
        """The temperature does not train here; nothing to clamp."""
