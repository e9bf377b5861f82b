"""A tiny random-weight Llama with the embedded model's tokenizer, for fast tests of the training stages.

2 layers, hidden size 64: it trains a reward model, runs PPO, DPO and GRPO in seconds on a CPU. Its
outputs are noise; it proves the plumbing, never the quality.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_tiny_llama"]


def build_tiny_llama(out_dir: str | Path, tokenizer_from: str = "smollm2-135m-instruct", seed: int = 0,
                     num_labels: int | None = None) -> Path:
    """Save a random LlamaForCausalLM (or LlamaForSequenceClassification when num_labels is set) and the
    tokenizer of `tokenizer_from` (pad token distinct from EOS) to out_dir; return out_dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from rlaif.train.common import load_tokenizer, resolve

    out = Path(out_dir)
    tokenizer = load_tokenizer(resolve(tokenizer_from))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    if num_labels is None:
        model = LlamaForCausalLM(config)
    else:
        config.num_labels = num_labels
        model = LlamaForSequenceClassification(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
