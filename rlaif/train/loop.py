"""The full loop with no human in it, in one run folder, resumable stage by stage:

    split -> samples -> labels -> reward_model -> ppo -> evaluation

Each finished stage is recorded in `loop_state.json`; a rerun skips finished stages and redoes an
interrupted one (the labeling stage itself resumes pair by pair). Training and evaluation prompts are
disjoint by construction (a seeded split of the prompt set).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from rlaif.backends.base import Backend
from rlaif.backends.pool import BackendPool
from rlaif.config.backend import BackendConfig
from rlaif.config.judge import JudgeSpec, load_judge_spec
from rlaif.config.loop import LoopConfig
from rlaif.config.run import RunConfig
from rlaif.errors import ConfigError
from rlaif.judging.factory import make_judge
from rlaif.records import CandidatePair, PromptItem
from rlaif.stages.generate import PAIRS, generate_stage, load_prompts, make_pairs
from rlaif.stages.label import LabelOptions, label_stage
from rlaif.store.runfolder import RunFolder

__all__ = ["STAGES", "run_loop", "write_loop_report"]

STAGES = ("split", "samples", "labels", "reward_model", "ppo", "evaluation")


class _Context:
    def __init__(self, config: LoopConfig, run: RunFolder, progress: bool):
        self.config, self.run, self.progress = config, run, progress
        self.judge_spec: JudgeSpec = load_judge_spec(config.judge)
        self._pool: BackendPool | None = None

    @property
    def pool(self) -> BackendPool:
        """The inference engines, opened on first use (and again after `release`)."""
        if self._pool is None:
            self._pool = BackendPool()
        return self._pool

    def backend(self, backend_config: BackendConfig) -> Backend:
        return self.pool.get(backend_config)

    def release(self) -> None:
        """Close inference engines before training, so their memory goes back."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def split(self) -> dict:
        return json.loads(self.run.file("split.json").read_text())


def _split(ctx: _Context) -> dict:
    prompts, bad = load_prompts(_run_config(ctx.config))
    order = list(range(len(prompts)))
    random.Random(ctx.config.split_seed).shuffle(order)
    n_eval = ctx.config.eval.prompts
    if len(prompts) < n_eval + 2:
        raise ConfigError(f"{len(prompts)} prompts cannot give {n_eval} evaluation prompts and at least 2 training prompts")
    eval_idx, train_idx = sorted(order[:n_eval]), sorted(order[n_eval:])
    if ctx.config.train_limit:
        train_idx = train_idx[: ctx.config.train_limit]
    split = {"train": [prompts[i].model_dump() for i in train_idx], "eval": [prompts[i].model_dump() for i in eval_idx],
             "invalid_prompt_rows": len(bad)}
    ctx.run.write_json("split.json", split)
    return {"train": len(train_idx), "eval": len(eval_idx)}


def _run_config(config: LoopConfig) -> RunConfig:
    return RunConfig(prompts=config.prompts, policy=config.policy, judge=config.judge, batch_size=config.batch_size)


def _samples(ctx: _Context) -> dict:
    train = [PromptItem(**p) for p in ctx.split()["train"]]
    samples = generate_stage(train, ctx.backend(ctx.config.policy.backend), _run_config(ctx.config), ctx.run, ctx.progress)
    pairs, skipped = make_pairs(samples)
    ctx.run.write_jsonl(PAIRS, pairs)
    ctx.run.write_jsonl("skipped_pairs.jsonl", skipped)
    return {"samples": len(samples), "pairs": len(pairs), "skipped_pairs": len(skipped)}


def _labels(ctx: _Context) -> dict:
    pairs = ctx.run.read(PAIRS, CandidatePair)
    skipped = [json.loads(line) for line in ctx.run.file("skipped_pairs.jsonl").read_text().splitlines() if line.strip()]
    summary = label_stage(pairs, ctx.judge_spec, ctx.pool, ctx.run, ctx.config.batch_size, ctx.progress,
                          LabelOptions(skipped=skipped))
    return {k: summary[k] for k in ("pairs", "labeled", "unlabeled", "unlabeled_reasons", "orders_agree_rate")}


def _reward_model(ctx: _Context) -> dict:
    from datasets import load_from_disk

    from rlaif.train.reward import train_reward_model

    ctx.release()
    dataset = load_from_disk(str(ctx.run.file("dataset")))
    metrics = train_reward_model(dataset, ctx.config.reward, ctx.run.file("reward_model"))
    return {k: metrics.get(k) for k in ("accuracy", "accuracy_interval", "n_train", "n_eval") if k in metrics}


def _ppo(ctx: _Context) -> dict:
    from rlaif.train.ppo import train_ppo

    ctx.release()
    cfg = ctx.config.ppo.model_copy(update={"reward_model": str(ctx.run.file("reward_model") / "model")})
    prompts = [[{"role": "user", "content": p["prompt"]}] for p in ctx.split()["train"]]
    metrics = train_ppo(prompts, cfg, ctx.run.file("ppo"))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}


def _evaluation(ctx: _Context) -> dict:
    from rlaif.train.common import resolve
    from rlaif.train.evaluate import evaluate_policies

    judge = make_judge(ctx.judge_spec, ctx.pool, "pairwise", "the loop's evaluation")
    e = ctx.config.eval
    metrics = evaluate_policies([p["prompt"] for p in ctx.split()["eval"]], resolve(ctx.config.ppo.policy_model),
                                ctx.run.file("ppo") / "policy", ctx.run.file("reward_model") / "model", judge,
                                ctx.run.file("evaluation"), e.max_new_tokens, e.temperature, e.seed)
    return {"win_rate": metrics["win_rate_trained_vs_start"]["value"], "reward_change": metrics["reward_change"]["value"]}


_STAGE_FUNCS: dict[str, Callable[[_Context], dict]] = {
    "split": _split, "samples": _samples, "labels": _labels, "reward_model": _reward_model, "ppo": _ppo, "evaluation": _evaluation,
}


def run_loop(config: LoopConfig, out: str | Path, progress: bool = True, stop_after: str | None = None) -> dict:
    """Run every unfinished stage in order; returns the loop state (stages done, with their summaries)."""
    run = RunFolder(out)
    state_path = run.file("loop_state.json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"config": config.model_dump(mode="json"), "done": {}}
    ctx = _Context(config, run, progress)
    try:
        for stage in STAGES:
            if stage in state["done"]:
                continue
            started = time.perf_counter()
            info = _STAGE_FUNCS[stage](ctx)
            state["done"][stage] = {**info, "seconds": round(time.perf_counter() - started, 1)}
            run.write_json("loop_state.json", state)
            if stage == stop_after:
                break
    finally:
        ctx.release()
    if "evaluation" in state["done"]:
        write_loop_report(run, state)
    return state


def _ci(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    lo, hi = entry.get("ci95") or (None, None)
    return f"{entry['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def write_loop_report(run: RunFolder, state: dict) -> dict:
    """metrics.json and report.md at the top of the loop's run folder."""
    rm = json.loads(run.file("reward_model/metrics.json").read_text())
    ev = json.loads(run.file("evaluation/metrics.json").read_text())
    rm_acc = {"value": rm.get("accuracy"), "ci95": rm.get("accuracy_interval")}
    metrics = {"stages": state["done"], "reward_model_heldout_accuracy": rm_acc, "evaluation": ev}
    run.write_json("metrics.json", metrics)
    win = ev["win_rate_trained_vs_start"]
    lines = [
        "# RLAIF loop report", "",
        "| what | value [95% CI] |", "|---|---|",
        f"| reward model: held-out pairwise accuracy (n={rm.get('n_eval')}) | {_ci(rm_acc)} |",
        f"| PPO policy vs starting policy: judge win rate ({win['wins']} wins, {win['losses']} losses, "
        f"{win['identical']} identical responses (ties, not judged), {win['unlabeled']} unlabeled) | {_ci(win)} |",
        f"| win rate counting identical responses as half a win | {_ci({'value': win['value_ties_half']})} |",
        f"| mean reward before (RM) | {_ci(ev['reward_before'])} |",
        f"| mean reward after (RM) | {_ci(ev['reward_after'])} |",
        f"| reward change (paired) | {_ci(ev['reward_change'])} |",
        f"| KL to the reference (nats per response) | {_ci(ev['kl_to_reference'])} |",
        f"| response tokens before | {_ci(ev['tokens_before'])} |",
        f"| response tokens after | {_ci(ev['tokens_after'])} |", "",
        f"Evaluation prompts: {ev['prompts']}, held out of training. Win rate interval: Wilson; the others: bootstrap.", "",
        "| stage | seconds | summary |", "|---|---|---|",
    ]
    lines += [f"| {name} | {info.get('seconds')} | {json.dumps({k: v for k, v in info.items() if k != 'seconds'})} |"
              for name, info in state["done"].items()]
    run.file("report.md").write_text("\n".join(lines) + "\n")
    return metrics
