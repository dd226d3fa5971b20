"""`lora`: low-rank adapters (peft) on the attention projections of both towers.

Only the adapters train. A checkpoint holds the merged weights, so the registered model is a
plain CLIP folder that `CLIPModel.from_pretrained` loads, and the adapter alone under
`adapter/`, from which a resumed run continues on top of the base model.
"""

from __future__ import annotations

import copy
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file

from app.ml.base_models import LoadedClip, load_base_model
from app.ml.model_files import ModelMetadata, save_clip_folder
from worker.training.methods.base import ParameterGroup, Phase, freeze_all_but
from worker.training.methods.full import FullFineTune

ADAPTER_DIR_NAME = "adapter"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ATTENTION_PROJECTIONS = "(q_proj|k_proj|v_proj|out_proj)"
TOWERS = {"none": "(vision_model|text_model)", "text": "vision_model", "vision": "text_model"}


def lora_target_pattern(freeze: str) -> str:
    """The attention projections of the towers that train (a frozen tower gets no adapters)."""
    return rf".*{TOWERS[freeze]}\.encoder\.layers\.\d+\.self_attn\.{ATTENTION_PROJECTIONS}"


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

    def write_model(self, folder: Path, metadata: ModelMetadata) -> None:
        assert self._peft is not None
        merged = copy.deepcopy(self._peft).merge_and_unload()
        save_clip_folder(
            LoadedClip(merged, self.loaded.tokenizer, self.loaded.image_processor),
            metadata,
            folder,
        )
        self._peft.save_pretrained(str(folder / ADAPTER_DIR_NAME))

    def after_step(self) -> None:
        """The temperature does not train here; nothing to clamp."""
