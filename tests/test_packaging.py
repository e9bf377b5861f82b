"""An installed wheel (not the checkout) finds its judges, prompts and configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json
from rlaif.resources import resource_root
from rlaif.config import load_judge_config, load_run_config
from rlaif.judging.prompting import load_template, load_constitution
from rlaif.stages.generate import load_prompts
import rlaif.audit.compute, rlaif.backends.pool, rlaif.cli.audit, rlaif.cli.train, rlaif.judging.factory, rlaif.stages.label, rlaif.store.datasets, rlaif.train.loop  # every subpackage ships
judge = load_judge_config("smollm2-pairwise")
run = load_run_config("main")
prompts, bad = load_prompts(run)
print(json.dumps({"root": str(resource_root()), "template": load_template(judge.template).version,
                  "principles": len(load_constitution(judge.constitution).principles), "prompts": len(prompts), "bad": len(bad)}))
"""


def test_wheel_ships_catalogue(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("rlaif-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["root"].startswith(str(target)) and found["root"].endswith("_data")
    assert found["template"].startswith("pairwise-") and found["principles"] >= 8
    assert found["prompts"] >= 32 and found["bad"] == 0
