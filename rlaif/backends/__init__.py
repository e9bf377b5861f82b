"""Backends: one small protocol (`complete`, `close`), implemented by each engine."""

from __future__ import annotations

from rlaif.backends.base import Backend, BackendBase, Choice, Completion, CompletionRequest
from rlaif.backends.fake import FakeBackend

__all__ = ["Backend", "BackendBase", "Choice", "Completion", "CompletionRequest", "FakeBackend", "open_backend"]


def open_backend(config) -> Backend:
    """Open the backend a config names (heavy engines are imported only here)."""
    if config.kind == "vllm":
        from rlaif.backends.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    if config.kind == "openai":
        from rlaif.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(config)
    raise ValueError(f"unknown backend kind {config.kind!r}")
