"""Checkpoints: the canonical tensors in safetensors, with everything needed to use them in the metadata.

Metadata keys (all strings): format ("poemctl/1"), model (the plugin that trained it), config (the whole
RunConfig as JSON), vocab (the ordered token list as JSON), corpus_hash, step, epoch, test_perplexity, and
logit_adjust (the τ of a post-hoc logit adjustment, poemctl/adjust.py; absent or 0: none).
Files are only ever read through safetensors: no pickle on any path a user's file reaches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from poemctl.config import DataConfig, RunConfig, TrainConfig
from poemctl.data import Vocab, vocab_from_json
from poemctl.errors import PoemctlError
from poemctl.files import atomic_write
from poemctl.models.base import PoemModel
from poemctl.registry import MODELS

FORMAT = "poemctl/1"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself."""

    model: str
    config: RunConfig
    vocab: Vocab
    corpus_hash: str
    step: int
    epoch: int
    test_perplexity: float  # nan when never evaluated
    logit_adjust: float = 0.0  # τ: the output bias was tilted by −τ·log π after training (poemctl/adjust.py)

    def to_strings(self) -> dict[str, str]:
        """The safetensors metadata form."""
        return {
            "format": FORMAT,
            "model": self.model,
            "config": json.dumps(self.config.to_dict(), ensure_ascii=False),
            "vocab": json.dumps(list(self.vocab.tokens), ensure_ascii=False),
            "corpus_hash": self.corpus_hash,
            "step": str(self.step),
            "epoch": str(self.epoch),
            "test_perplexity": repr(self.test_perplexity),
            "logit_adjust": repr(self.logit_adjust),
        }

    @classmethod
    def from_strings(cls, m: dict[str, str], path: Path) -> CheckpointMeta:
        """Parse the metadata of path; anything missing or malformed is an error."""
        if m.get("format") != FORMAT:
            raise PoemctlError(f"{path} is a safetensors file without poemctl metadata")
        try:
            return cls(
                model=m["model"],
                config=RunConfig.from_dict(json.loads(m["config"]), f"{path}: config"),
                vocab=vocab_from_json(m["vocab"]),
                corpus_hash=m["corpus_hash"],
                step=int(m["step"]),
                epoch=int(m["epoch"]),
                test_perplexity=float(m["test_perplexity"]),
                logit_adjust=float(m.get("logit_adjust", 0.0)),
            )
        except KeyError as e:
            raise PoemctlError(f"{path} has broken poemctl metadata (no {e})") from None
        except (ValueError, TypeError) as e:
            raise PoemctlError(f"{path} has broken poemctl metadata ({e})") from None


def unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of each tensor that shares memory with an earlier one (tied weights): safetensors writes
    every name as a tensor of its own and refuses shared memory."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        out[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    return out


def save(path: str | Path, model: PoemModel, meta: CheckpointMeta, dtype: torch.dtype = torch.float32) -> None:
    """Write model's canonical tensors (in dtype: float32, or float16 to halve the file) and meta to path,
    atomically. Loading turns them into the model's float32 whatever they were saved in."""
    tensors = unshared({k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta.to_strings()))


def _open(path: Path):
    if not path.is_file():
        raise PoemctlError(f"no checkpoint at {path}")
    try:
        return safe_open(path, "pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise PoemctlError(f"{path} is not a readable safetensors file ({e})") from None


def load(path: str | Path, model_name: str | None = None) -> tuple[PoemModel, CheckpointMeta]:
    """The model stored at path (as model_name if given, else the model that trained it) and its meta."""
    path = Path(path)
    with _open(path) as f:
        meta = CheckpointMeta.from_strings(f.metadata() or {}, path)
        try:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except (SafetensorError, OSError, ValueError) as e:
            raise PoemctlError(f"{path} is truncated or corrupt ({e})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise PoemctlError(f"{path}: {name} holds NaN or infinite values (the run diverged?)")
    cfg = replace(meta.config.model, vocab_size=len(meta.vocab))
    V, E, H = cfg.vocab_size, cfg.embedding, cfg.hidden
    shapes = {"embedding.weight": (V, E), "lstm.weight_hh": (4 * H, H), "output.weight": (V, H)}
    for name, shape in shapes.items():  # before a model of the metadata's shape is made: it may be huge
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise PoemctlError(
                f"{path} does not fit its own metadata: {name} is {tuple(tensors[name].shape)}, "
                f"its vocabulary and config make it {shape}"
            )
    try:
        model_cls = MODELS.get(model_name or meta.model)
    except PoemctlError as e:
        raise PoemctlError(str(e) if model_name else f"{path}: {e}") from None
    model = model_cls(cfg)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise PoemctlError(f"{path} does not fit this model: {first}") from None
    model.eval()
    return model, meta


def stored_dtype(path: str | Path) -> torch.dtype:
    """The dtype the checkpoint at path stores its output layer in (float32, or float16 for the bundled form)."""
    with _open(Path(path)) as f:
        half = f.get_slice("output.weight").get_dtype() == "F16"
    return torch.float16 if half else torch.float32


BUNDLED = Path(__file__).with_name("bundled") / "poem.safetensors"  # the poem model shipped with poemctl


def find(ckpt: str | Path | None, runs: str | Path = "runs") -> tuple[Path, bool]:
    """The checkpoint to use and whether it is the bundled one: ckpt (a file, a Hub folder, hf:USER/NAME),
    else the most recent run's best under runs, else the model bundled with poemctl."""
    if ckpt is not None:
        from poemctl import hub  # a Hub folder or hf:USER/NAME as well as a file

        return hub.resolve(ckpt), False
    try:
        return latest(runs), False
    except PoemctlError:
        if not BUNDLED.is_file():
            raise
        return BUNDLED, True


def latest(out: str | Path) -> Path:
    """The best (else last) checkpoint of the most recent run under out."""
    runs = sorted(
        (d for d in Path(out).glob("*") if (d / "best.safetensors").is_file() or (d / "last.safetensors").is_file()),
        key=lambda d: d.stat().st_mtime,
    )
    if not runs:
        raise PoemctlError(f"no checkpoint under {out}/; train one with `poemctl train` or pass --ckpt")
    best = runs[-1] / "best.safetensors"
    return best if best.is_file() else runs[-1] / "last.safetensors"


def halve(src: str | Path, dst: str | Path, portable: bool = False) -> None:
    """Write the checkpoint src again at dst with float16 tensors (the bundled model's form); portable puts
    the default folders (data/chinese-poetry, data/cache, runs) in place of the paths of the machine that
    trained it, and names the first stage a second stage started from by its file only."""
    model, meta = load(src)
    if portable:
        cfg = meta.config
        data = replace(cfg.data, corpus=DataConfig.corpus, cache_dir=DataConfig.cache_dir)
        start = Path(cfg.train.init_from).name if cfg.train.init_from else ""
        train = replace(cfg.train, out=TrainConfig.out, init_from=start)
        meta = replace(meta, config=replace(cfg, data=data, train=train))
    save(dst, model, meta, dtype=torch.float16)


if __name__ == "__main__":  # python -m poemctl.checkpoint SRC DST: the portable float16 copy that is bundled
    import sys

    halve(*sys.argv[1:3], portable=True)
