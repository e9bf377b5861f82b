"""Shared fixtures and opt-in flags.

Markers are defined once in pyproject.toml: `vllm` tests run the real engine on the embedded model (one
engine shared by the whole session); `slow` tests run only with --runslow.
"""

from __future__ import annotations

import os

import pytest

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

    def close(self):
        pass


@pytest.fixture
def counting(vllm_backend):
    return CountingBackend(vllm_backend)
