"""A judge's identity without a backend: `judge_identity(spec)` gives the record the built judge carries (fingerprint,
keys, manifest account, provenance) and opens nothing; the audit's fingerprint is made from it; the label stage's
output pass records judgments made elsewhere from it; an unknown backend kind is a ConfigError; one audit function."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fakes import MARKER, fake, judge_config, pair, prefers_marker, shown, verdict

from rlaif.audit.fingerprint import judge_fingerprint
from rlaif.audit.gold import GoldItem
from rlaif.audit.run import AuditOptions, JudgeSource, LabelsSource, run_audit
from rlaif.backends import BackendPool, BackendStats, SharedBackend
from rlaif.backends.fake import InstantBackend
from rlaif.backends.openai_backend import OpenAIBackend
from rlaif.backends.vllm_backend import VLLMBackend
from rlaif.config import EnsembleJudgeConfig, JudgeConfig, load_judge_spec
from rlaif.errors import ConfigError
from rlaif.judging import JudgeIdentity, ScoreItem, judge_identity, load_constitution, load_template, make_judge, spec_mode
from rlaif.models import model_identity
from rlaif.records import CandidatePair, Judgment, content_key
from rlaif.stages.label import JUDGMENTS, LabelOptions, label_stage, record_judgments
from rlaif.store.runfolder import RunFolder

CATALOGUE = ["smollm2-pairwise", "smollm2-pairwise-reasoning", "smollm2-pairwise-sc", "smollm2-ensemble",
             "smollm2-pointwise", "smollm2-pairwise-api", "smollm2-pairwise-fleet"]
BACKEND_NAMES = {"vllm": VLLMBackend.name, "openai": OpenAIBackend.name, "fake": InstantBackend.name}
PAIR = CandidatePair(id="p", prompt="Which is better?", response_1="one answer", response_2="another answer")
ITEM = ScoreItem(id="i", prompt="Which is better?", response="one answer")


@pytest.fixture
def no_backend(monkeypatch):
    """Any attempt to open a backend fails the test."""

    def refuse(config):
        raise AssertionError(f"a backend was opened: {config.kind}")

    monkeypatch.setattr("rlaif.backends.pool.open_backend", refuse)


def _expected_fingerprint(spec) -> str:
    """The fingerprint as the judges computed it before identities existed (resume keys depend on it)."""
    if isinstance(spec, EnsembleJudgeConfig):
        members = [_expected_fingerprint(load_judge_spec(name)) for name in spec.ensemble.members]
        return content_key(spec.model_dump(mode="json"), members)
    return content_key(spec.model_dump(mode="json"), load_template(spec.template).version,
                       load_constitution(spec.constitution).version)


@pytest.mark.parametrize("name", CATALOGUE)
def test_identity_without_a_backend_is_the_built_judges(name, no_backend):
    identity = judge_identity(name)
    spec = load_judge_spec(name)
    assert identity.fingerprint == _expected_fingerprint(spec)
    assert identity.name == spec.name and identity.mode == spec_mode(spec)

    judge = make_judge(name, SharedBackend(fake(prefers_marker())), identity.mode)
    assert judge.identity == identity
    assert judge.fingerprint == identity.fingerprint and judge.describe() == identity.describe()
    if identity.mode == "pointwise":
        assert judge.key(ITEM) == identity.item_key(ITEM) == content_key(ITEM.key, identity.fingerprint)
    else:
        assert judge.key(PAIR) == identity.key(PAIR) == content_key(PAIR.key, identity.fingerprint)


def test_identity_names_the_backend_and_model_its_judgments_record():
    for name in CATALOGUE:
        for single in judge_identity(name).singles:
            backend = single.config.backend  # type: ignore[union-attr]
            assert (single.backend, single.model) == (BACKEND_NAMES[backend.kind], backend.model)
    config = JudgeConfig.model_validate({**judge_config().model_dump(), "backend": {"kind": "fake", "model": "instant-x"}})
    with BackendPool() as pool:
        judgment = make_judge(config, pool).judge([PAIR])[0]
    identity = judge_identity(config)
    assert (judgment.model, judgment.backend) == (identity.model, identity.backend) == ("instant-x", "fake")
    assert judgment.provenance().model_dump(exclude={"principle_ids"}) == identity.provenance().model_dump(exclude={"principle_ids"})


def test_ensemble_identity_joins_its_members():
    identity = judge_identity("smollm2-ensemble")
    members = [judge_identity(name) for name in ("smollm2-pairwise", "smollm2-pairwise-reasoning")]
    assert identity.kind == "ensemble" and identity.members == members and identity.singles == members
    assert identity.template == "judge/pairwise.jinja+judge/pairwise-reasoning.jinja"
    assert identity.model == members[0].model and identity.backend == "vllm"  # distinct values joined
    assert JudgeIdentity.model_validate_json(identity.model_dump_json()) == identity


def test_identity_refuses_what_make_judge_refuses(no_backend):
    with pytest.raises(ConfigError, match="ensemble of pairwise judges; scoring needs a single pointwise judge"):
        judge_identity("smollm2-ensemble", "pointwise", "scoring")
    with pytest.raises(ConfigError, match="is a pointwise judge; labeling needs a pairwise judge"):
        judge_identity("smollm2-pointwise", "pairwise", "labeling")
    config = judge_config().model_copy(update={"self_consistency": judge_config().self_consistency.model_copy(update={"samples": 3})})
    with pytest.raises(ConfigError, match="samples would be identical"):
        judge_identity(config)


def test_adjust_moves_the_fingerprint_like_the_adjusted_judge():
    def reseed(config):
        return config.model_copy(update={"principles": config.principles.model_copy(update={"seed": 7})})

    identity = judge_identity("smollm2-ensemble", adjust=reseed)
    judge = make_judge("smollm2-ensemble", SharedBackend(fake(prefers_marker())), adjust=reseed)
    assert identity == judge.identity and identity.fingerprint != judge_identity("smollm2-ensemble").fingerprint


def _old_judge_fingerprint(name: str) -> dict:
    """rlaif.audit.fingerprint.judge_fingerprint as it read a built judge before identities (vllm judges)."""
    spec = load_judge_spec(name)
    singles = [load_judge_spec(m) for m in spec.ensemble.members] if isinstance(spec, EnsembleJudgeConfig) else [spec]
    models = [{"backend": "vllm", **model_identity(s.backend.model)} for s in singles]  # type: ignore[union-attr]
    templates = [load_template(s.template) for s in singles]  # type: ignore[union-attr]
    constitutions = [load_constitution(s.constitution) for s in singles]  # type: ignore[union-attr]
    config = spec.model_dump(mode="json")
    return {"name": spec.name, "kind": "ensemble" if isinstance(spec, EnsembleJudgeConfig) else config["mode"],
            "config_sha": content_key(config), "template": "+".join(t.name for t in templates),
            "template_version": "+".join(t.version for t in templates),
            "constitution": "+".join(c.name for c in constitutions),
            "constitution_version": "+".join(c.version for c in constitutions), "models": models,
            "sha": content_key(_expected_fingerprint(spec), models)}


@pytest.mark.parametrize("name", ["smollm2-pairwise", "smollm2-pointwise", "smollm2-ensemble"])
def test_audit_fingerprint_of_an_identity_is_the_one_audits_recorded(name, no_backend):
    assert judge_fingerprint(judge_identity(name)) == _old_judge_fingerprint(name)


def test_audit_fingerprint_of_a_served_judge_names_its_servers(no_backend):
    models = judge_fingerprint(judge_identity("smollm2-pairwise-fleet"))["models"]
    assert models == [{"backend": "openai", "model": "smollm2-135m-instruct", "checksum": None,
                       "servers": ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"],
                       "from": "served model: identified by name and servers"}]


def test_unknown_backend_kind_is_a_config_error():
    from rlaif.backends.pool import open_backend

    with pytest.raises(ConfigError, match=r"unknown backend kind 'tpu': the backend kinds are vllm, openai, fake"):
        open_backend(SimpleNamespace(kind="tpu", model="m"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend.kind must be 'vllm', 'openai' or 'fake'"):
        JudgeConfig.model_validate({"name": "x", "backend": {"kind": "tpu", "model": "m"}})


def test_recording_judgments_made_elsewhere_needs_only_the_identity(tmp_path, no_backend):
    """The Ray driver's output pass: judged pairs are written as a local run writes them; a pair with no judgment is
    recorded unlabeled ("not judged") with the identity's provenance; no judge is built, no backend opened."""
    config = judge_config()
    pairs = [pair(i) for i in range(4)]
    elsewhere = RunFolder(tmp_path / "elsewhere")
    label_stage(pairs[:3], config, SharedBackend(fake(prefers_marker())), elsewhere, progress=False)
    run = RunFolder(tmp_path / "run")
    run.file(JUDGMENTS).write_bytes(elsewhere.file(JUDGMENTS).read_bytes())  # as the Ray driver ingests them
    identity = judge_identity(config, "pairwise")
    stats = BackendStats(requests=6)
    summary = record_judgments(pairs, identity, run, stats, batch_size=2, progress=False,
                               options=LabelOptions(extra_manifest={"runner": "elsewhere"}))
    assert (summary["labeled"], summary["unlabeled"], summary["judged_now"]) == (3, 1, 0)
    assert summary["unlabeled_reasons"] == {"not judged": 1} and summary["backend_stats"]["requests"] == 6
    missing = [j for j in run.read(JUDGMENTS, Judgment) if j.pair_id == "pair-3"]
    assert missing[0].key == identity.key(pairs[3]) and not missing[0].labeled
    assert (missing[0].judge, missing[0].model, missing[0].backend) == (identity.name, identity.model, identity.backend)
    manifest = (run.path / "manifest.json").read_text()
    assert '"runner": "elsewhere"' in manifest and identity.template_version in manifest


def _gold(n: int) -> list[GoldItem]:
    good, bad = f"A full answer: {MARKER}.", "vague"
    return [GoldItem(id=f"g{i}", prompt=f"Question {i}?", response_a=good if i % 2 else bad,
                     response_b=bad if i % 2 else good, label="A" if i % 2 else "B") for i in range(n)]


def test_run_audit_judges_or_matches_and_gates(tmp_path):
    """One audit function: a judge judging the gold now (resumable), and the same judgments matched from a label run,
    measure the same agreement; the gate's failure is reported; meta goes into metrics.json."""
    items = _gold(12)
    backend = fake(lambda r: verdict(0.9 if MARKER in shown(r)[0] else 0.1))
    options = AuditOptions(bootstrap=50, min_kappa=1.01, progress=False)
    source = JudgeSource(judge_config(), SharedBackend(backend))
    judged = run_audit(items, "gold.jsonl", tmp_path / "audit", source, options, meta={"audit_id": "a1"})
    assert judged.judge == "test-judge" and judged.n_items == 12 and judged.accuracy_no_ties == 1.0
    assert judged.fingerprints["judge"] == judge_fingerprint(judge_identity(judge_config()))
    assert judged.gate and judged.gate["verdict"] == "fail" and judged.failed == [judged.gate["detail"]]
    metrics = (tmp_path / "audit" / "metrics.json").read_text()
    assert '"audit_id": "a1"' in metrics and (tmp_path / "audit" / "report.md").is_file()
    asked = len(backend.requests)
    again = run_audit(items, "gold.jsonl", tmp_path / "audit", source, options)
    assert len(backend.requests) == asked and again.accuracy_no_ties == 1.0  # resumed: nothing judged again

    matched = run_audit(items, "gold.jsonl", tmp_path / "labels-audit", LabelsSource(tmp_path / "audit", name="labels of b1",
                        run_id="b1"), AuditOptions(bootstrap=50))
    assert matched.judge == "labels of b1" and matched.passed and matched.gate is None
    assert matched.fingerprints["judge"]["labels_run"] == "b1" and matched.accuracy_no_ties == 1.0
