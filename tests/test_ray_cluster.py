"""The Ray cluster under `rlaif label --runner ray`: more actors asked than a small cluster can hold are cut to fit
(the run used to wait forever: the actors held every CPU and the read task was never scheduled), a cluster that
cannot hold one is refused, a run that gets no judgment back is stopped with an error, and a local Ray that a
killed rlaif left behind is found and stopped by the next run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlaif.errors import ConfigError
from rlaif.stages.ray_cluster import OWNER_FILE, RayStalled
from rlaif.stages.ray_label import ray_label_stage
from rlaif.store.runfolder import RunFolder

JUDGE = """name: instant-ray
description: Ray test judge (instant fake backend; its labels judge nothing).
backend: {{kind: fake, latency_s: {latency}}}
principles: {{mode: fixed, ids: [helpfulness]}}
"""

pytestmark = pytest.mark.filterwarnings(r"ignore:.*deprecated.*:DeprecationWarning:ray\.data\.context")


def _files(tmp_path: Path, n: int = 40, latency: float = 0.0) -> tuple[Path, Path]:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Q {i}?", "response_1": f"yes {i}",
                                         "response_2": f"no {i}"}) + "\n" for i in range(n)))
    judge = tmp_path / "judge.yaml"
    judge.write_text(JUDGE.format(latency=latency))
    return pairs, judge


@pytest.mark.timeout(240)
def test_more_actors_than_the_cluster_holds_are_cut_to_fit(ray_cluster, tmp_path, capsys):
    pairs, judge = _files(tmp_path)
    summary = ray_label_stage(pairs, judge, RunFolder(tmp_path / "run"), batch_size=8, actors=3, progress=False)
    assert summary["labeled"] + summary["unlabeled"] == 40 and summary["judged_now"] == 40
    assert summary["ray_actors"] == 1
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["ray"]["actors"], manifest["ray"]["actors_asked"]) == (1, 3)
    err = capsys.readouterr().err
    assert "3 judge actors asked, but the Ray cluster has 2 CPUs and 0 GPUs: running 1" in err


def test_a_cluster_that_cannot_hold_one_actor_is_refused(ray_cluster, tmp_path):
    pairs, judge = _files(tmp_path)
    with pytest.raises(ConfigError, match=r"has 2 CPUs and 0 GPUs: .*give Ray at least 2 CPUs and 1 GPUs"):
        ray_label_stage(pairs, judge, RunFolder(tmp_path / "run"), actors=1, gpus_per_actor=1, progress=False)


@pytest.mark.timeout(240)
def test_no_judgment_back_stops_the_run_with_an_error(ray_cluster, tmp_path):
    pairs, judge = _files(tmp_path, n=8, latency=40)
    began = time.monotonic()
    with pytest.raises(RayStalled, match=r"no judgment came back from Ray for 4 s .*1 judge actors each need a CPU; "
                                         r"the cluster has 2 CPUs"):
        ray_label_stage(pairs, judge, RunFolder(tmp_path / "run"), batch_size=8, progress=True, stall_s=4)
    assert time.monotonic() - began < 35, "stopped by the stall timeout, not by the judge's 40 s answer"
    # the cluster is usable again at once: the stalled run's actor is gone
    (tmp_path / "again").mkdir()
    fast_pairs, fast_judge = _files(tmp_path / "again")
    again = ray_label_stage(fast_pairs, fast_judge, RunFolder(tmp_path / "again" / "run"), progress=False, stall_s=60)
    assert again["judged_now"] == 40


def _session_pids(root: Path) -> dict[str, list[int]]:
    """The live processes of each local Ray session under root (named in their command line, or holding its logs)."""
    import psutil

    sessions = {str(p) for p in root.glob("session_2*") if p.is_dir()}
    found: dict[str, list[int]] = {s: [] for s in sessions}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            seen = " ".join(proc.info["cmdline"] or []) + " ".join(f.path for f in proc.open_files())
        except psutil.Error:
            continue
        for session in sessions:
            if session + "/" in seen:
                found[session].append(proc.pid)
    return found


@pytest.mark.timeout(300)
def test_a_local_ray_left_by_a_killed_run_is_stopped_by_the_next(tmp_path):
    """kill -9 of `rlaif label --runner ray` leaves the local Ray it started running (the driver cannot stop it);
    the next Ray run on the machine finds it by its owner file, stops it and says so; a clean run leaves nothing."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(root)}
    env.pop("RAY_ADDRESS", None)
    slow_pairs, slow_judge = _files(tmp_path, n=16, latency=60)
    cli = [sys.executable, "-m", "rlaif.cli", "label", "--runner", "ray", "--quiet"]
    try:
        killed = subprocess.Popen([*cli, "--pairs", str(slow_pairs), "--judge", str(slow_judge), "--out",
                                   str(tmp_path / "slow")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not list((root / "ray").glob(f"session_2*/{OWNER_FILE}")) and time.monotonic() < deadline:
            assert killed.poll() is None, killed.stderr.read().decode()[-2000:] if killed.stderr else ""
            time.sleep(0.5)
        (owner,) = list((root / "ray").glob(f"session_2*/{OWNER_FILE}"))
        assert json.loads(owner.read_text())["pid"] == killed.pid
        time.sleep(2)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        time.sleep(2)
        stale = _session_pids(root / "ray")[str(owner.parent)]
        assert stale, "the killed run's local Ray is still running (what the next run must clean up)"

        (tmp_path / "fast").mkdir()
        pairs, judge = _files(tmp_path / "fast", n=20)
        done = subprocess.run([*cli, "--pairs", str(pairs), "--judge", str(judge), "--out", str(tmp_path / "fast" / "run")],
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"stopped a local Ray left running by an earlier rlaif (pid {killed.pid}" in done.stderr
        left = _session_pids(root / "ray")
        assert all(not pids for pids in left.values()), f"Ray processes left: {left}"
        assert not list((root / "ray").glob(f"session_2*/{OWNER_FILE}"))
        manifest = json.loads((tmp_path / "fast" / "run" / "manifest.json").read_text())
        assert manifest["ray"]["local_ray_started"] is True and manifest["counts"]["judged_now"] == 20
    finally:
        import psutil

        for pids in _session_pids(root / "ray").values():
            for pid in pids:
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    pass
        shutil.rmtree(root, ignore_errors=True)
