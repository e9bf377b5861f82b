"""Direct preference optimisation straight from the AI-labelled preference dataset, with trl.DPOTrainer.

The dataset is already in TRL's conversational prompt/chosen/rejected format; the judge-confidence filters
of the reward stage apply here too, and only the three TRL columns are passed on (the provenance columns
stay in the dataset files).
"""

from __future__ import annotations

from pathlib import Path

from rlaif.config.train import DPOStageConfig
from rlaif.train.common import Timer, jsonl_callback, load_tokenizer, resolve, trl_args, write_json
from rlaif.train.reward import filter_preferences

__all__ = ["train_dpo", "dpo_columns"]

TRL_COLUMNS = ["prompt", "chosen", "rejected"]


def dpo_columns(dataset):
    """Only prompt/chosen/rejected: TRL would otherwise try to interpret or collate the provenance columns."""
    missing = [c for c in TRL_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"preference dataset lacks column(s) {missing}")
    return dataset.select_columns(TRL_COLUMNS)


def _last(records: list[dict], key: str):
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


def train_dpo(dataset, cfg: DPOStageConfig, out_dir: str | Path) -> dict:
    """Train the policy with DPO on the filtered pairs; save it to out_dir/policy and metrics.json."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    timer, out = Timer(), Path(out_dir)
    kept, report = filter_preferences(dataset, cfg.min_probability, cfg.require_orders_agree)
    if len(kept) == 0:
        raise ValueError(f"no preference pairs left to train on after filtering: {report}")
    policy_dir = resolve(cfg.policy_model)
    tokenizer = load_tokenizer(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    args = trl_args(DPOConfig, out, cfg.trl_fields(), cfg.trainer_args)
    logger = jsonl_callback(out / "log.jsonl")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dpo_columns(kept), processing_class=tokenizer,
                         callbacks=[logger])
    result = trainer.train()
    trainer.save_model(str(out / "policy"))
    tokenizer.save_pretrained(str(out / "policy"))
    history = [r for r in logger.records if "loss" in r]
    metrics = {
        "policy_model": cfg.policy_model, "policy_dir": str(out / "policy"), **report,
        "train_loss": result.training_loss, "train_loss_history": [r["loss"] for r in history],
        "reward_accuracy_last": _last(history, "rewards/accuracies"),
        "reward_margin_last": _last(history, "rewards/margins"),
        "steps": trainer.state.global_step, "seconds": timer.seconds, "config": cfg.model_dump(mode="json"),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
