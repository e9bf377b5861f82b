"""The bulk steps' child processes (rlaif.service.offload) and the chunk reply lines read from the dataset's rows.

Our own logic on a fake judge: the service tests (test_service*.py) run the same steps end to end on real servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from fakes import fake, judge_config, pair, prefers_marker, verdict

from rlaif.backends import Choice, Completion, SharedBackend
from rlaif.judging.identity import judge_identity
from rlaif.records import CandidatePair
from rlaif.service.batch_input import PAIRS, chunk_folder, cut_into_chunks
from rlaif.service.batch_output import write_chunk_replies, write_parquet
from rlaif.service.engines import Engines, JobCancelled
from rlaif.service.offload import Offload, OffloadFailed, Remote
from rlaif.stages.label import label_stage
from rlaif.store.inputs import iter_input
from rlaif.store.runfolder import RunFolder

ENDPOINT = "/v1/judge/pairwise"


def _line(custom_id: str, p: CandidatePair) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": {"pairs": [
        {"prompt": p.prompt, "response_1": p.response_1, "response_2": p.response_2}]}}) + "\n"


def _answers(request):
    """Labels most pairs; a tie where both responses carry the marker; no verdict where the prompt says so."""
    if "NO VERDICT" in request.messages[-1].content:
        return Completion(choices=[Choice(text="", logprobs=[{"zzz": 0.0}], tokens=1)], prompt_tokens=10)
    if "tie" in request.messages[-1].content:
        return verdict(0.5)
    return prefers_marker()(request)


def _chunk(tmp_path: Path) -> tuple[Path, object]:
    """A labeled chunk with labeled pairs, a tie, an unlabeled pair, a duplicate of a labeled pair and a bad line."""
    source = tmp_path / "input.jsonl"
    pairs = [pair(i, marker_first=i % 2 == 0) for i in range(12)]
    tie = CandidatePair(id="t", prompt="A tie question?", response_1="EXCELLENT tie one", response_2="EXCELLENT tie two")
    none = CandidatePair(id="n", prompt="NO VERDICT here?", response_1="one", response_2="two")
    with source.open("w") as fh:
        for i, p in enumerate(pairs):
            fh.write(_line(f"req-{i}", p))
        fh.write(_line("req-tie", tie))
        fh.write(_line("req-none", none))
        fh.write(_line("req-dup", pairs[3]))  # the same content as req-3: judged once, answered twice
        fh.write("{not json\n")
    folder = tmp_path / "batch"
    folder.mkdir()
    config = judge_config()
    cut_into_chunks(source, folder, ENDPOINT, config.name, 64, 1000, lambda: False)
    chunk = chunk_folder(folder, 1)
    label_stage(iter_input(chunk / PAIRS, CandidatePair), config, SharedBackend(fake(_answers)), RunFolder(chunk),
                batch_size=4, progress=False)
    return chunk, judge_identity(config)


def _bodies(path: Path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:  # ids are fresh on every write
        line.pop("id")
        line["response"].pop("request_id")
    return lines


def test_reply_lines_from_the_dataset_rows_equal_those_from_the_judgments(tmp_path):
    chunk, identity = _chunk(tmp_path)
    counts = write_chunk_replies(chunk, identity, True)
    from_rows = _bodies(chunk / "output.jsonl"), _bodies(chunk / "errors.jsonl")
    assert counts == (14, 1, 1)  # 12 pairs and the duplicate labeled, the tie answered "tie"; no verdict; a bad line
    labels = {line["custom_id"]: line["response"]["body"]["results"][0]["label"] for line in from_rows[0]}
    assert labels["req-tie"] == "tie" and labels["req-dup"] == labels["req-3"] in ("response_1", "response_2")
    assert {line["custom_id"] for line in from_rows[1]} == {"req-none", None}

    shutil.move(chunk / "dataset", tmp_path / "dataset-aside")  # without rows every line is read from the judgments
    assert write_chunk_replies(chunk, identity, True) == counts
    assert (_bodies(chunk / "output.jsonl"), _bodies(chunk / "errors.jsonl")) == from_rows


def test_parquet_row_groups_are_sized_by_bytes_not_by_the_dataset_batches(tmp_path):
    import pyarrow.parquet as pq

    chunk, _ = _chunk(tmp_path)
    write_parquet(chunk, group_bytes=1)
    small = pq.ParquetFile(chunk / "dataset.parquet").metadata
    write_parquet(chunk)
    whole = pq.ParquetFile(chunk / "dataset.parquet").metadata
    from rlaif.store.datasets import saved_batches

    rows = sum(b.num_rows for b in saved_batches(chunk / "dataset"))
    assert small.num_rows == whole.num_rows == rows >= 12
    assert small.num_row_groups > 1 and whole.num_row_groups == 1


# the child processes ------------------------------------------------------------------------------------------
def _pid(remote: Remote) -> int:
    return os.getpid()


def _pid_slowly(remote: Remote) -> int:
    import time

    time.sleep(1.0)
    return os.getpid()


def _fails(remote: Remote) -> None:
    raise ValueError("line 3 is bad")


def _dies(remote: Remote) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _asks_stop(remote: Remote) -> bool:
    return remote.stop()


def _labels(remote: Remote, config, pairs: list) -> list:
    backend = remote.backends().get(config.backend)
    return [c.choices[0].text for c in backend.complete(pairs)]


@pytest.fixture
def offload():
    engines = Engines()
    off = Offload(engines)
    yield off
    off.close()
    engines.close()


def test_a_step_runs_in_a_kept_child_and_its_errors_come_back(offload):
    first = offload.call(_pid, stop=lambda: False)
    assert first != os.getpid()
    assert offload.call(_pid, stop=lambda: False) == first  # the child is kept between steps
    with pytest.raises(ValueError, match="line 3 is bad"):
        offload.call(_fails, stop=lambda: False)
    assert offload.call(_pid, stop=lambda: False) == first  # a step's own error does not cost the child
    assert offload.call(_asks_stop, stop=lambda: True) is True


def test_a_child_that_dies_fails_its_step_and_the_next_step_gets_a_new_child(offload):
    first = offload.call(_pid, stop=lambda: False)
    with pytest.raises(OffloadFailed, match="died"):
        offload.call(_dies, stop=lambda: False)
    assert offload.call(_pid, stop=lambda: False) not in (first, os.getpid())


def test_engine_calls_come_back_to_the_workers_engine_and_stop_there(offload):
    from rlaif.backends.base import CompletionRequest
    from rlaif.config.backend import FakeBackendConfig
    from rlaif.records import Message

    config = judge_config().model_copy(update={"backend": FakeBackendConfig(kind="fake")})
    requests = [CompletionRequest(messages=[Message(role="user", content=f"q{i}")], top_logprobs=2) for i in range(5)]
    texts = offload.call(_labels, config, requests, stop=lambda: False)
    assert len(texts) == 5 and set(texts) <= {"A", "B"}
    worker = next(iter(offload.engines.workers.values()))
    assert worker.batched_requests == 5  # answered by the worker's engine, as bulk work
    with pytest.raises(JobCancelled):
        offload.call(_labels, config, requests, stop=lambda: True)
    assert worker.batched_requests == 5


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has died (its new parent has not reaped it yet)


def test_a_child_is_killed_with_its_worker_even_by_sigkill(tmp_path):
    """PR_SET_PDEATHSIG: a step never outlives the worker that started it (another worker may take its task)."""
    import subprocess
    import sys
    import time

    script = tmp_path / "worker.py"
    script.write_text(
        "import sys, time\n"
        "from rlaif.service.engines import Engines\n"
        "from rlaif.service.offload import Offload\n"
        "from test_service_offload import _pid\n"
        "if __name__ == '__main__':\n"
        "    off = Offload(Engines())\n"
        "    print(off.call(_pid, stop=lambda: False), flush=True)\n"
        "    time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        child = int(worker.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child)
        worker.kill()
        worker.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(child):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"child {child} outlived its SIGKILLed worker")
    finally:
        worker.kill()


def test_two_slots_run_their_steps_in_two_children_at_once(offload):
    pids: list[int] = []
    threads = [threading.Thread(target=lambda: pids.append(offload.call(_pid_slowly, stop=lambda: False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(pids)) == 2 and len(offload.children()) == 2
