"""Config loading and its errors, resource lookup, `rlaif validate`, the CLI's help and its import weight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rlaif
from rlaif.cli import build_parser, main
from rlaif.config import JudgeConfig, RunConfig, load_judge_config, load_run_config
from rlaif.errors import ConfigError
from rlaif.resources import resolve_resource, resource_root

REPO = Path(__file__).resolve().parent.parent
RLAIF = REPO / ".venv" / "bin" / "rlaif"
SHIPPED_JUDGE = yaml.safe_load((REPO / "judges" / "smollm2-pairwise.yaml").read_text())
SUBCOMMANDS = ["models", "validate", "generate", "label", "run"]


def write_yaml(tmp_path, data, name="cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_shipped_judge_and_run_config():
    judge = load_judge_config("smollm2-pairwise")
    assert isinstance(judge, JudgeConfig) and judge.name == "smollm2-pairwise" and judge.both_orders
    assert judge.backend.kind == "vllm" and judge.backend.max_model_len == 8192
    assert judge.principles.mode == "sample" and judge.principles.k == 1 and judge.verdict.top_logprobs == 20
    assert load_judge_config(REPO / "judges" / "smollm2-pairwise.yaml") == judge
    run = load_run_config("main")
    assert isinstance(run, RunConfig) and run.judge == "smollm2-pairwise" and run.batch_size == 16
    assert run.policy.n == 2 and run.policy.max_tokens == 160 and run.prompts == "sets/instructions-v1.jsonl"


@pytest.mark.parametrize("patch, field, words", [
    ({"verdict": {"top_logprob": 5}}, "verdict.top_logprob", "Extra inputs are not permitted"),
    ({"both_order": False}, "both_order", "Extra inputs are not permitted"),
    ({"backend": {"max_model_len": "lots"}}, "backend.max_model_len", "valid integer"),
    ({"verdict": {"temperature": 0}}, "verdict.temperature", "greater than 0"),
    ({"principles": {"mode": "random"}}, "principles.mode", "'sample', 'all' or 'fixed'"),
    ({"principles": {"mode": "fixed"}}, "principles", "needs a non-empty 'ids'"),
])
def test_bad_judge_yaml_names_the_field(tmp_path, patch, field, words):
    path = write_yaml(tmp_path, {**SHIPPED_JUDGE, **patch})
    with pytest.raises(ConfigError) as err:
        load_judge_config(path)
    message = str(err.value)
    assert str(path) in message and "JudgeConfig" in message and f"{field}:" in message and words in message


def test_bad_run_yaml_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"batch_sise: Extra inputs"):
        load_run_config(write_yaml(tmp_path, {"judge": "smollm2-pairwise", "batch_sise": 4}))
    with pytest.raises(ConfigError, match=r"policy\.n: Input should be greater than or equal to 2"):
        load_run_config(write_yaml(tmp_path, {"policy": {"n": 1}}))


def test_unreadable_yaml_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read YAML"):
        load_judge_config(write_yaml(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_judge_config(write_yaml(tmp_path, "- a\n- b\n"))


def test_resolve_resource_by_name_path_and_did_you_mean(tmp_path):
    assert resolve_resource("smollm2-pairwise", "judges") == resource_root() / "judges" / "smollm2-pairwise.yaml"
    assert resolve_resource("judge/pairwise.jinja", "prompts", suffix=".jinja").name == "pairwise.jinja"
    own = write_yaml(tmp_path, {"name": "x"})
    assert resolve_resource(own, "judges") == own
    with pytest.raises(ConfigError, match="Did you mean 'smollm2-pairwise'") as err:
        load_judge_config("smollm2-pairwse")
    assert "smollm2-pairwise" in str(err.value).split("Known: ")[1].split(", ")
    with pytest.raises(ConfigError) as err:
        resolve_resource("zzzz", "judges")
    assert "Did you mean" not in str(err.value)


def test_validate_shipped_catalogue(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "ok  " in out and "smollm2-pairwise" in out and "main.yaml" in out and "all configs valid" in out


def test_validate_copy_of_shipped_judge_from_a_path(tmp_path, capsys):
    assert main(["validate", str(write_yaml(tmp_path, SHIPPED_JUDGE))]) == 0
    assert "template pairwise-2026.11-1" in capsys.readouterr().out


@pytest.mark.parametrize("patch, words", [
    ({"verdict": {"top_logprob": 5}}, "verdict.top_logprob"),
    ({"template": "judge/nonexistent.jinja"}, "nonexistent"),
    ({"principles": {"mode": "fixed", "ids": ["no-such-principle"]}}, "no-such-principle"),
])
def test_validate_broken_judge_returns_1(tmp_path, capsys, patch, words):
    path = write_yaml(tmp_path, {**SHIPPED_JUDGE, **patch}, name="broken.yaml")
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"BAD {path}" in captured.out and "1 problem(s)" in captured.err and words in captured.err


def test_validate_run_config_with_unknown_judge_returns_1(tmp_path, capsys):
    path = write_yaml(tmp_path, {"judge": "no-such-judge"}, name="run.yaml")
    assert main(["validate", str(path)]) == 1
    assert "no-such-judge" in capsys.readouterr().err


def test_every_subcommand_help_exits_zero():
    outputs = {}
    for cmd in ["", *SUBCOMMANDS]:
        proc = subprocess.run([str(RLAIF), *([cmd] if cmd else []), "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (cmd, proc.stderr)
        assert proc.stdout.startswith(f"usage: rlaif {cmd}".rstrip()) and "--help" in proc.stdout
        outputs[cmd] = proc.stdout
    assert all(cmd in outputs[""] for cmd in SUBCOMMANDS)
    assert "--pairs" in outputs["label"] and "--limit" in outputs["run"] and "pull" in outputs["models"]


def test_parser_knows_every_subcommand():
    parser = build_parser()
    args = parser.parse_args(["label", "--pairs", "p.jsonl", "--batch-size", "8"])
    assert args.command == "label" and args.batch_size == 8 and args.judge == "smollm2-pairwise"
    assert parser.parse_args(["run", "--limit", "3"]).limit == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["label"])  # --pairs is required


HELP_PROBE = """
import contextlib, io, json, sys
import rlaif.cli
rlaif.cli.build_parser()
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        rlaif.cli.main(["--help"])
    except SystemExit as exc:
        code = exc.code
heavy = sorted(m for m in ("torch", "vllm", "transformers", "datasets", "trl") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "help": "usage: rlaif" in help_text.getvalue()}))
"""


def test_help_does_not_import_heavy_libraries():
    out = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe == {"code": 0, "heavy": [], "help": True}


def test_public_names_exist():
    if not hasattr(rlaif, "__all__"):
        pytest.skip("rlaif/__init__.py defines no __all__ yet")
    missing = [name for name in rlaif.__all__ if not hasattr(rlaif, name)]
    assert rlaif.__all__ and not missing
    assert len(set(rlaif.__all__)) == len(rlaif.__all__)
    assert issubclass(rlaif.ConfigError, rlaif.RlaifError) and rlaif.FakeBackend.name == "fake"
