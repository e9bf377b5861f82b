"""Policy samples: N responses per prompt, and candidate pairs built from them (`rlaif generate`).

A rerun into the same folder samples only the prompts that have no samples yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import combinations

from tqdm.auto import tqdm

from rlaif.backends.base import Backend, CompletionRequest
from rlaif.config.run import PolicyConfig, RunConfig
from rlaif.records import CandidatePair, Message, PromptItem, Sample, content_key
from rlaif.resources import resolve_resource
from rlaif.store.runfolder import RowError, RunFolder, read_rows

__all__ = ["sample_requests", "iter_samples", "make_pairs", "load_prompts", "generate_stage", "SAMPLES", "PAIRS"]

SAMPLES, PAIRS = "samples.jsonl", "pairs.jsonl"


def sample_requests(prompts: list[PromptItem], policy: PolicyConfig) -> list[CompletionRequest]:
    """One request per prompt asking for `n` samples; the seed is tied to the prompt's position."""
    system = [Message(role="system", content=policy.system_prompt)] if policy.system_prompt else []
    return [
        CompletionRequest(
            messages=[*system, Message(role="user", content=item.prompt)], n=policy.n,
            max_tokens=policy.max_tokens, temperature=policy.temperature, top_p=policy.top_p,
            seed=policy.seed + index,
        )
        for index, item in enumerate(prompts)
    ]


def iter_samples(
    prompts: list[PromptItem], backend: Backend, policy: PolicyConfig, batch_size: int = 64, progress: bool = True
) -> Iterator[tuple[list[Sample], list[dict]]]:
    """Per batch of prompts: the samples, and one failure record (prompt id, reason) per prompt with none."""
    requests = sample_requests(prompts, policy)
    bar = tqdm(total=len(prompts), desc="sampling policy", unit="prompt", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        samples: list[Sample] = []
        failures: list[dict] = []
        for item, completion in zip(chunk, backend.complete(requests[start : start + batch_size])):
            if completion.error:
                failures.append({"prompt_id": item.id, "reason": completion.error})
                continue
            samples.extend(
                Sample(prompt_id=item.id, prompt=item.prompt, index=i, response=c.text, model=backend.model,
                       finish_reason=c.finish_reason, tokens=c.tokens)
                for i, c in enumerate(completion.choices)
            )
        bar.update(len(chunk))
        yield samples, failures
    bar.close()


def make_pairs(samples: list[Sample]) -> tuple[list[CandidatePair], list[dict]]:
    """Every pair of samples of the same prompt; empty or identical responses are skipped with a reason."""
    by_prompt: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:  # keyed by id AND text: responses to different prompts are never paired
        by_prompt.setdefault((sample.prompt_id, sample.prompt), []).append(sample)
    pairs, skipped = [], []
    clash = Counter(prompt_id for prompt_id, _ in by_prompt)
    for (prompt_id, prompt), group in by_prompt.items():
        # a prompt id reused for another text still gives unique pair ids
        base = prompt_id if clash[prompt_id] == 1 else f"{prompt_id}#{content_key(prompt)[:8]}"
        for a, b in combinations(sorted(group, key=lambda s: s.index), 2):
            pair_id = f"{base}:{a.index}-{b.index}"
            if not a.response.strip() or not b.response.strip():
                skipped.append({"pair_id": pair_id, "reason": "empty response"})
            elif a.response.strip() == b.response.strip():
                skipped.append({"pair_id": pair_id, "reason": "identical responses"})
            else:
                pairs.append(CandidatePair(id=pair_id, prompt=a.prompt, response_1=a.response, response_2=b.response,
                                           source={"prompt_id": prompt_id, "samples": [a.index, b.index], "model": a.model}))
    return pairs, skipped


def load_prompts(config: RunConfig) -> tuple[list[PromptItem], list[RowError]]:
    """The run config's prompt set (its first `limit` prompts), and the rows that could not be used."""
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    return (prompts[: config.limit] if config.limit else prompts), errors


def generate_stage(prompts: list[PromptItem], backend: Backend, config: RunConfig, run: RunFolder,
                   progress: bool = True) -> list[Sample]:
    """Samples for every prompt; prompts already sampled in this folder are not sampled again."""
    have = {s.prompt_id for s in run.read(SAMPLES, Sample)}
    todo = [p for p in prompts if p.id not in have]
    for samples, failures in iter_samples(todo, backend, config.policy, config.batch_size, progress):
        run.append(SAMPLES, samples)
        run.append("generation_failures.jsonl", failures)
    wanted = {p.id for p in prompts}
    return [s for s in run.read(SAMPLES, Sample) if s.prompt_id in wanted]
