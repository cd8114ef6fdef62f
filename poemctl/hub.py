"""Checkpoints in the Hugging Face Hub layout: export to a folder, push it, read it back (hf:USER/NAME).

A Hub folder holds what huggingface_hub's PyTorchModelHubMixin writes: model.safetensors (here the poemctl
checkpoint itself, its vocabulary and whole configuration in its metadata), config.json (the configuration
in plain JSON) and README.md, a model card with the Hub's metadata header.
"""

from __future__ import annotations

import json
from pathlib import Path

from poemctl import checkpoint
from poemctl.config import to_toml
from poemctl.errors import PoemctlError
from poemctl.files import atomic_write_bytes

WEIGHTS = "model.safetensors"
PREFIX = "hf:"


def export(ckpt: str | Path, folder: str | Path) -> Path:
    """Write the checkpoint ckpt as a Hub folder; returns the folder."""
    model, meta = checkpoint.load(ckpt)
    folder = Path(folder)
    ours = {WEIGHTS, "config.json", "README.md"}
    if folder.exists() and any(p.name not in ours for p in folder.iterdir()):
        raise PoemctlError(f"{folder} holds other files: give an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS, Path(ckpt).read_bytes())
    config = {
        "format": checkpoint.FORMAT,
        "model": meta.model,
        "vocab_size": len(meta.vocab),
        "step": meta.step,
        "test_perplexity": meta.test_perplexity,
        "config": meta.config.to_dict(),
    }
    atomic_write_bytes(folder / "config.json", json.dumps(config, indent=2, ensure_ascii=False).encode())
    atomic_write_bytes(folder / "README.md", model_card(meta).encode())
    return folder


def model_card(meta) -> str:
    """A README.md for the Hub: its metadata header, what the model is, its figures, its recipe, how to use it."""
    cfg = meta.config
    ppl = f"{meta.test_perplexity:.1f}" if meta.test_perplexity == meta.test_perplexity else "not measured"
    return f"""---
library_name: poemctl
language: zh
license: mit
tags: [poetry, tang-poetry, lstm, text-generation]
pipeline_tag: text-generation
---

# A poemctl {meta.model} model of Tang poetry

A character-level LSTM language model (E={cfg.model.embedding}, H={cfg.model.hidden}, a vocabulary of
{len(meta.vocab):,} characters) trained by poemctl on the Complete Tang Poems (全唐诗)
of chinese-poetry (MIT licence), {meta.step:,} optimizer steps. Test perplexity: {ppl} (on its own data
preset's test split).

## Use

```bash
pip install poemctl
poemctl sample 月 --ckpt hf:USER/NAME        # or --ckpt on this folder
```

```python
import poemctl
print(poemctl.load("hf:USER/NAME").write("月")[0])
```

## Recipe

Retrain it with `poemctl train --config recipe.toml`, where recipe.toml is:

```toml
{to_toml(cfg)}```
"""


def resolve(ckpt: str | Path) -> Path:
    """A checkpoint file for ckpt: a file as it is, a Hub folder's model.safetensors, or hf:USER/NAME fetched
    from the Hub (huggingface_hub's cache)."""
    text = str(ckpt)
    if text.startswith(PREFIX):
        return _download(text[len(PREFIX) :]) / WEIGHTS
    path = Path(ckpt)
    return path / WEIGHTS if path.is_dir() else path


def _download(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=[WEIGHTS, "config.json", "README.md"]))
    except Exception as e:  # the network's and the Hub's errors are many: each is one line here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PoemctlError(f"cannot fetch {PREFIX}{repo} from the Hugging Face Hub: {reason}") from None


def push(folder: str | Path, repo: str, private: bool = False) -> str:
    """Upload a Hub folder to the model repository repo (created if need be); returns its URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise PoemctlError(f"{folder} is not a Hub folder ({WEIGHTS} missing): make one with poemctl export")
    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model")
    except Exception as e:  # the network's and the Hub's errors are many: each is one line here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PoemctlError(f"cannot push {folder} to {repo} on the Hugging Face Hub: {reason}") from None
    return str(url)
