from __future__ import annotations

import torch

from app.ml.tiny_clip import build_tiny_clip, learn_merges


def test_tiny_clip_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    first, _, _ = build_tiny_clip()
    assert torch.equal(torch.rand(1), expected_next)
    second, _, _ = build_tiny_clip()
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_tokenizer_is_a_real_bpe_with_clip_special_tokens() -> None:
    clip, tokenizer, _ = build_tiny_clip()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a photo of a red circle").input_ids)
    assert tokens == [
        "<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "red</w>", "circle</w>",
        "<|endoftext|>",
    ]  # fmt: skip
    # Unseen words still tokenize (byte-level), as several pieces.
    assert len(tokenizer("zxqv").input_ids) > 3
    assert clip.config.text_config.eos_token_id == tokenizer.eos_token_id
    assert clip.config.text_config.vocab_size == len(tokenizer)


def test_learn_merges_prefers_frequent_pairs_then_lexicographic_order() -> None:
    merges = learn_merges(["ab", "ab", "cd"], num_merges=2)
    assert merges == [("a", "b</w>"), ("c", "d</w>")]
