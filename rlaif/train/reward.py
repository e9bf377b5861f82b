"""Reward model training on the AI-labelled preference dataset, with TRL's RewardTrainer.

Three losses on the judge's labels (RewardConfig.loss):
- hard: Bradley-Terry on chosen/rejected, TRL's default: -log sigmoid(r_c - r_r);
- margin: TRL's margin variant, -log sigmoid(r_c - r_r - m) with m = logit(probability), bounded;
- soft: the RLAIF paper's soft labels, -(p log sigmoid(r_c - r_r) + (1 - p) log sigmoid(r_r - r_c)).

Pairs are tokenized here (not by TRL) so the reward is read at the end-of-turn token of
`chat_template(prompt, add_generation_prompt=True) + response`, exactly where PPO reads it.
"""

from __future__ import annotations

import functools
import math
import random
from pathlib import Path

from rlaif.config.train import RewardConfig
from rlaif.errors import ConfigError
from rlaif.train.common import (
    Timer,
    encode_response,
    jsonl_callback,
    load_tokenizer,
    resolve,
    trl_args,
    write_json,
)
from rlaif.train.scoring import RewardScorer, pairwise_accuracy, wilson_interval

__all__ = [
    "filter_preferences", "prepare_preferences", "tokenize_pairs", "soft_preference_loss", "train_reward_model",
    "RewardScorer", "wilson_interval",
]


def _as_dataset(dataset):
    from datasets import Dataset

    return dataset if isinstance(dataset, Dataset) else Dataset.from_list(list(dataset))


def filter_preferences(dataset, min_probability: float = 0.5, require_orders_agree: bool = False):
    """Rows kept by the judge-confidence filters, and a report of what was dropped and why.

    A row is dropped for `low_probability` when its probability is missing or below `min_probability`;
    otherwise for `orders_disagree` when `require_orders_agree` is set and orders_agree is not True
    (None, from a single-order judge, cannot be checked and is dropped too).
    """
    dataset = _as_dataset(dataset)
    if "probability" not in dataset.column_names:
        # Plain TRL preference data (e.g. `rlaif revise`'s revision-over-original rows) has no judge probability.
        if min_probability > 0.5 or require_orders_agree:
            raise ConfigError(f"the dataset has no judge `probability` column, so min_probability {min_probability} / "
                              f"require_orders_agree cannot be applied: set min_probability 0.5 and "
                              f"require_orders_agree false, or label the pairs with `rlaif label`")
        return dataset, {"n_input": len(dataset), "n_kept": len(dataset), "dropped": {},
                         "note": "no probability column: every row kept"}
    probs = dataset["probability"] if len(dataset) else []
    agree = dataset["orders_agree"] if require_orders_agree and len(dataset) else [True] * len(dataset)
    keep, low, disagree = [], 0, 0
    for i, (p, a) in enumerate(zip(probs, agree)):
        if p is None or p < min_probability:
            low += 1
        elif require_orders_agree and a is not True:
            disagree += 1
        else:
            keep.append(i)
    report = {"n_input": len(dataset), "n_kept": len(keep),
              "dropped": {"low_probability": low, "orders_disagree": disagree}}
    return dataset.select(keep), report


def _split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    n_eval = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def prepare_preferences(dataset, cfg: RewardConfig):
    """(train, eval, report): the filtered rows, split by a seeded shuffle into train and held-out eval."""
    kept, report = filter_preferences(dataset, cfg.min_probability, cfg.require_orders_agree)
    train_idx, eval_idx = _split_indices(len(kept), cfg.eval_fraction, cfg.seed)
    report.update(n_train=len(train_idx), n_eval=len(eval_idx), split_seed=cfg.seed)
    return kept.select(train_idx), kept.select(eval_idx), report


def _margin(p: float, bound: float) -> float:
    p = min(max(float(p), 1e-9), 1 - 1e-9)
    return max(-bound, min(bound, math.log(p / (1 - p))))


def tokenize_pairs(dataset, tokenizer, cfg: RewardConfig):
    """A tokenized Dataset (chosen_ids, rejected_ids [+ margin | probability]) and the count dropped as too long."""
    from datasets import Dataset

    columns: dict[str, list] = {"chosen_ids": [], "rejected_ids": []}
    extra = {"margin": "margin", "soft": "probability"}.get(cfg.loss)
    if extra and "probability" not in _as_dataset(dataset).column_names:
        raise ConfigError(f"loss {cfg.loss!r} needs the judge's `probability` column, which this dataset lacks; "
                          f"use loss 'hard'")
    if extra:
        columns[extra] = []
    too_long = 0
    for row in dataset:
        chosen = encode_response(tokenizer, row["prompt"], row["chosen"])
        rejected = encode_response(tokenizer, row["prompt"], row["rejected"])
        if cfg.max_length is not None and max(len(chosen), len(rejected)) > cfg.max_length:
            too_long += 1
            continue
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
        if extra == "margin":
            columns["margin"].append(_margin(row["probability"], cfg.max_margin))
        elif extra == "probability":
            columns["probability"].append(float(row["probability"]))
    return Dataset.from_dict(columns), too_long


def soft_preference_loss(rewards_chosen, rewards_rejected, probability):
    """Mean soft-label cross-entropy: -(p log s(r_c - r_r) + (1 - p) log s(r_r - r_c)); p=1 is Bradley-Terry."""
    import torch.nn.functional as F

    diff = rewards_chosen - rewards_rejected
    p = probability.to(diff.dtype)
    return -(p * F.logsigmoid(diff) + (1 - p) * F.logsigmoid(-diff)).mean()


@functools.cache
def _soft_classes():
    """(collator, trainer) classes for the soft loss, built on first use (TRL is heavy to import)."""
    import torch
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class SoftPreferenceCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            batch = super().torch_call(examples)
            batch["probability"] = torch.tensor([e["probability"] for e in examples], dtype=torch.float)
            return batch

    class SoftRewardTrainer(RewardTrainer):
        """RewardTrainer whose loss is the soft-label cross-entropy against the judge probability."""

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:  # type: ignore[has-type]
                self._signature_columns = ["chosen_ids", "rejected_ids", "probability"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            probability = inputs.pop("probability")
            inputs["use_cache"] = False
            outputs = model(**inputs)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = soft_preference_loss(chosen, rejected, probability)
            if self.args.center_rewards_coefficient is not None:
                loss += self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            with torch.no_grad():
                self._metrics[mode]["accuracy"].append((chosen > rejected).float().mean().item())
                self._metrics[mode]["margin"].append((chosen - rejected).mean().item())
            return (loss, outputs) if return_outputs else loss

    return SoftPreferenceCollator, SoftRewardTrainer


def _load_base(path: Path, tokenizer, seed: int):
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    set_seed(seed)  # the new score head is random: seed it
    with suppress_seqcls_warning():  # float32 like TRL (mixed precision comes from trainer_args bf16)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _trainer(cfg: RewardConfig, model, tokenizer, train, evalset, out_dir: Path, callbacks):
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    args = trl_args(TRLRewardConfig, out_dir, cfg.trl_fields(), cfg.trainer_args)
    kwargs = dict(model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=callbacks,
                  eval_dataset=evalset if len(evalset) else None)
    if cfg.loss == "soft":
        collator_cls, trainer_cls = _soft_classes()
        collator = collator_cls(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of)
        return trainer_cls(data_collator=collator, **kwargs)
    return RewardTrainer(**kwargs)


def train_reward_model(dataset, cfg: RewardConfig, out_dir: str | Path) -> dict:
    """Train a reward model; save it to out_dir/model and its metrics to out_dir/metrics.json."""
    timer, out = Timer(), Path(out_dir)
    train_rows, eval_rows, report = prepare_preferences(dataset, cfg)
    base = resolve(cfg.base_model)
    tokenizer = load_tokenizer(base)
    train, long_train = tokenize_pairs(train_rows, tokenizer, cfg)
    evalset, long_eval = tokenize_pairs(eval_rows, tokenizer, cfg)
    report["dropped"]["too_long"] = long_train + long_eval
    report.update(n_train=len(train), n_eval=len(evalset))
    if len(train) == 0:
        raise ValueError(f"no preference pairs left to train on after filtering: {report}")
    model = _load_base(base, tokenizer, cfg.seed)
    logger = jsonl_callback(out / "log.jsonl")
    trainer = _trainer(cfg, model, tokenizer, train, evalset, out, [logger])
    result = trainer.train()
    trained = trainer.model
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    held_out = pairwise_accuracy(trained, tokenizer.pad_token_id, evalset["chosen_ids"] if len(evalset) else [],
                                 evalset["rejected_ids"] if len(evalset) else [])
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    metrics = {
        "loss_type": cfg.loss, "base_model": str(base), "model_dir": str(out / "model"),
        **held_out, **report, "n_eval": len(evalset), "train_loss": result.training_loss,
        "train_loss_history": losses, "steps": trainer.state.global_step, "seconds": timer.seconds,
        "config": cfg.model_dump(mode="json"),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
