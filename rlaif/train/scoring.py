"""Scoring with a trained reward model: `RewardScorer`, held-out pairwise accuracy and its interval.

A response is scored at its end-of-turn token after `chat_template(prompt, add_generation_prompt=True)`,
the same token the reward model was trained on and PPO reads (see rlaif.train.common).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlaif.audit.metrics import wilson_interval  # one implementation, shared with the audit
from rlaif.train.common import encode_response, load_tokenizer

__all__ = ["RewardScorer", "wilson_interval", "score_ids", "pairwise_accuracy"]


def score_ids(model, pad_token_id: int, sequences: Sequence[Sequence[int]], batch_size: int = 8) -> list[float]:
    """Rewards of token-id sequences (right-padded batches; the model reads its last non-pad token)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = [list(s) for s in sequences[start:start + batch_size]]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, :len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
    model.train(was_training)
    return scores


def pairwise_accuracy(model, pad_token_id: int, chosen_ids, rejected_ids, batch_size: int = 8) -> dict:
    """Share of pairs with reward(chosen) > reward(rejected), with its 95% Wilson interval."""
    n = len(chosen_ids)
    if n == 0:
        return {"accuracy": None, "accuracy_interval": None, "n_eval": 0, "mean_margin": None}
    chosen = score_ids(model, pad_token_id, chosen_ids, batch_size)
    rejected = score_ids(model, pad_token_id, rejected_ids, batch_size)
    correct = sum(c > r for c, r in zip(chosen, rejected))
    lo, hi = wilson_interval(correct, n)
    return {
        "accuracy": correct / n,
        "accuracy_interval": [lo, hi],
        "interval_method": "wilson-95",
        "n_eval": n,
        "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
    }


class RewardScorer:
    """Loads a reward model folder (train_reward_model's out_dir/model) and scores responses."""

    def __init__(self, model_dir: str | Path, device: str | None = None, batch_size: int = 8):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.model_dir = Path(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(self.model_dir))
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_dir} is not a reward model: it has {self.model.config.num_labels} outputs")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    def encode(self, item: Any) -> list[int]:
        """Token ids of one item: a (prompt, response) tuple, a conversation ending with the assistant's
        reply, or a plain text (scored as-is, with an end-of-turn token appended)."""
        tok = self.tokenizer
        if isinstance(item, tuple):
            prompt, response = item
            return encode_response(tok, prompt, response)
        if isinstance(item, str):
            ids = list(tok(item, add_special_tokens=False)["input_ids"])
            return ids if ids and ids[-1] == tok.eos_token_id else ids + [tok.eos_token_id]
        messages = list(item)
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("a conversation to score must end with the assistant's response")
        return encode_response(tok, messages[:-1], messages[-1]["content"])

    def score(self, items: Sequence[Any]) -> list[float]:
        """One reward per item (see `encode` for the accepted forms)."""
        return score_ids(self.model, self.tokenizer.pad_token_id, [self.encode(i) for i in items], self.batch_size)

    __call__ = score
