"""The training commands: `rlaif train rm|ppo|dpo|grpo` and `rlaif loop`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rlaif.cli.common import existing_folder, out_folder, read_input
from rlaif.errors import InputError, RlaifError

__all__ = ["add_parsers", "remote_reward"]

DEFAULT_GRPO_JUDGE = "smollm2-pairwise"


def _stage_config(cls, path: str | None):
    from rlaif.config import load_yaml_model
    from rlaif.resources import resolve_resource

    return load_yaml_model(resolve_resource(path, "configs"), cls) if path else cls()


def _prompts(path: str) -> list:
    from rlaif.records import PromptItem
    from rlaif.resources import resolve_resource

    items, _ = read_input(resolve_resource(path, "prompts", suffix=".jsonl"), PromptItem, "JSONL rows {id, prompt}")
    return [[{"role": "user", "content": p.prompt}] for p in items]


def _dataset(args: argparse.Namespace):
    if not args.dataset:
        raise InputError(f"train {args.stage} needs --dataset: the dataset/ folder of a `rlaif label` or `rlaif run` "
                         "folder (or the run folder itself)")
    from rlaif.store.datasets import load_preferences

    return load_preferences(Path(args.dataset))


def _show(metrics: dict, out: str) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, list)) and k not in ("train_loss_history",)}
    print(json.dumps(shown, indent=2, default=str)[:3000])
    print(f"outputs in {out}")


def remote_reward(args: argparse.Namespace):
    """grpo --remote-judge: the service's /v1/reward as the reward function, checked to answer (address, key,
    a pairwise judge) before anything loads."""
    from rlaif.client import RemoteJudgeReward

    key = os.environ.get(args.remote_key_env) or None
    reward = RemoteJudgeReward(args.remote_judge, api_key=key, judge=args.judge, reference=args.reference)
    try:
        reward.check()
    except RlaifError as exc:
        reward.close()
        hint = "" if key else f" (no key: ${args.remote_key_env} is not set)"
        raise InputError(f"--remote-judge {args.remote_judge}: {exc}{hint}") from exc
    return reward


def cmd_train(args: argparse.Namespace) -> int:
    from rlaif.config import train as C

    if args.stage == "rm":
        from rlaif.train.reward import train_reward_model

        config = _stage_config(C.RewardConfig, args.config)  # a wrong --config is named before the dataset loads
        metrics = train_reward_model(_dataset(args), config, args.out)
    elif args.stage == "dpo":
        from rlaif.train.dpo import train_dpo

        config = _stage_config(C.DPOStageConfig, args.config)
        metrics = train_dpo(_dataset(args), config, args.out)
    elif args.stage == "ppo":
        from rlaif.train.ppo import train_ppo

        cfg = _stage_config(C.PPOStageConfig, args.config)
        if args.reward_model:
            cfg = cfg.model_copy(update={"reward_model": str(args.reward_model)})
        metrics = train_ppo(_prompts(args.prompts), cfg, args.out)
    else:
        from rlaif.train.judge_reward import train_grpo

        prompts, cfg = _prompts(args.prompts), _stage_config(C.GRPOStageConfig, args.config)  # checked before the judge loads
        if args.remote_judge:
            reward = remote_reward(args)  # checked (address, key, judge) before the policy loads
            try:
                metrics = train_grpo(prompts, reward, cfg, args.out)
            finally:
                reward.close()
            metrics["remote_judge"] = reward.url
        else:
            from rlaif.backends import BackendPool
            from rlaif.judging import make_judge
            from rlaif.train.judge_reward import JudgeReward

            with BackendPool() as pool:
                reward = JudgeReward(make_judge(args.judge or DEFAULT_GRPO_JUDGE, pool, "pairwise", "`rlaif train grpo`"),
                                     reference=args.reference)
                metrics = train_grpo(prompts, reward, cfg, args.out)
        metrics["judge_calls"], metrics["judge_unlabeled"] = reward.calls, dict(reward.unlabeled)
    _show(metrics, args.out)
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    from rlaif.config import load_loop_config
    from rlaif.train.loop import run_loop

    state = run_loop(load_loop_config(args.config), args.out, progress=not args.quiet, stop_after=args.stop_after)
    for stage, info in state["done"].items():
        print(f"{stage:>13}: {json.dumps(info, default=str)[:300]}")
    report = Path(args.out) / "report.md"
    if report.is_file():
        print("\n" + report.read_text())
    return 0


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[shared], help="train a reward model, PPO, DPO, or GRPO with the judge as reward",
                       description="rm: TRL RewardTrainer on a preference dataset (filters and soft-label options in the "
                                   "config); ppo: TRL PPO against a reward model; dpo: TRL DPOTrainer straight from the "
                                   "dataset; grpo: TRL GRPOTrainer whose reward is the judge itself (direct RLAIF), pairwise "
                                   "against a reference response (loaded here, or a running `rlaif serve`'s with "
                                   "--remote-judge URL). --config is a YAML of the stage config (rlaif.config.train); "
                                   "its trainer_args go straight into TRL's own config class.")
    p.add_argument("stage", choices=["rm", "ppo", "dpo", "grpo"])
    p.add_argument("--config", help="stage config YAML (default: the stage's defaults on the embedded model)")
    p.add_argument("--dataset", help="rm/dpo: a preference dataset: runs/X/dataset (rlaif label, run, score, rank), "
                                     "runs/X/preferences (rlaif revise), the run folder itself, or its preferences.jsonl")
    p.add_argument("--prompts", default="sets/instructions-v1.jsonl", help="ppo/grpo: JSONL prompt set (default: %(default)s)")
    p.add_argument("--reward-model", type=existing_folder, help="ppo: reward model folder (rlaif train rm's OUT/model)")
    p.add_argument("--judge", help=f"grpo: judge used as the reward (default: {DEFAULT_GRPO_JUDGE}; with --remote-judge, "
                                    "a pairwise judge of that service, by default its first)")
    p.add_argument("--reference", default="I don't know.", help="grpo: reference response the judge compares against")
    p.add_argument("--remote-judge", metavar="URL",
                   help="grpo: use the judge of a running `rlaif serve` at URL (e.g. http://127.0.0.1:8000) through its "
                        "/v1/reward instead of loading one here; the training machine needs no engine")
    p.add_argument("--remote-key-env", metavar="NAME", default="RLAIF_API_KEY",
                   help="grpo --remote-judge: environment variable holding the service's API key (default: %(default)s)")
    p.add_argument("--out", type=out_folder, required=True, help="output folder (model, metrics.json, log.jsonl)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("loop", parents=[shared], help="the whole RLAIF loop: samples -> AI labels -> reward model -> PPO -> evaluation",
                       description="Run every stage into one folder; rerunning resumes from the last finished stage. "
                                   "Training and evaluation prompts are disjoint. Ends with report.md and metrics.json: "
                                   "reward-model held-out accuracy, the PPO policy's win rate against the starting policy, "
                                   "reward, KL and length before/after, with 95% intervals.")
    p.add_argument("--config", default="loop", help="loop config in configs/ or a path (default: %(default)s)")
    p.add_argument("--out", type=out_folder, default=Path("runs/loop"), help="run folder (default: %(default)s)")
    p.add_argument("--stop-after", choices=["split", "samples", "labels", "reward_model", "ppo", "evaluation"],
                   help="stop after this stage (rerun to continue)")
    p.set_defaults(func=cmd_loop)
