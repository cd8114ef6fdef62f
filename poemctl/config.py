"""Frozen run configuration: every CLI option maps onto one field here, and the whole of it goes into
every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poemctl import gpu_modes
from poemctl.errors import PoemctlError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PoemctlError(message)


def home(path: str) -> str:
    """A default folder: under $POEMCTL_HOME when it is set (so that any folder finds the same data, cache and
    runs), else relative to the current folder."""
    root = os.environ.get("POEMCTL_HOME", "")
    return str(Path(root).expanduser() / path) if root else path


@dataclass(frozen=True)
class DataConfig:
    """Where the corpus is and how it is turned into training rows (defaults: the course preset)."""

    corpus: str = home("data/chinese-poetry")  # folder laid out like upstream (…/全唐诗/poet.tang.*.json)
    cache_dir: str = home("data/cache")
    traditional: bool = False  # keep traditional characters (default: OpenCC t2s)
    keep_commas: bool = False  # the course deletes "，" and keeps "。"
    min_freq: int = 2  # characters seen fewer times become <unk>
    seq_len: int = 80  # rows are cut to / front-padded to this many characters
    test_fraction: float = 0.2  # the 4:1 split
    split_seed: int = 0
    max_poems: int = 0  # use only the first N poems (0: all); for tests and quick looks
    control_tokens: bool = False  # write each poem's form, rhyme group and tone pattern in front of it (control.py)
    forms: tuple[str, ...] = ()  # keep only poems of these forms (control.FORMS), on both sides of the split
    rhyme_marks: bool = False  # the rhyme group's token again before the last character of each even line

    def __post_init__(self) -> None:
        from poemctl.control import FORMS

        unknown = [f for f in self.forms if f not in FORMS]
        _check(not unknown, f"--forms: unknown form '{unknown[0] if unknown else ''}' (forms: {', '.join(FORMS)})")
        _check(not self.rhyme_marks or self.control_tokens, "--rhyme-marks needs --control-tokens")
        _check(
            not self.forms or self.keep_commas or self.control_tokens,
            "--forms needs --keep-commas or --control-tokens (without either, lines cannot be told apart)",
        )
        _check(self.min_freq >= 1, f"--min-freq must be at least 1, got {self.min_freq}")
        _check(self.seq_len >= 2, f"--seq-len must be at least 2, got {self.seq_len}")
        _check(self.split_seed >= 0, f"--split-seed must be 0 or more, got {self.split_seed}")
        _check(0 < self.test_fraction < 1, f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        _check(self.max_poems >= 0, f"--max-poems must be 0 (all) or more, got {self.max_poems}")

    def preset(self) -> dict:
        """The options that change the encoded corpus (the cache key), without paths."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("corpus", "cache_dir")}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the LSTM language model; vocab_size comes from the corpus."""

    vocab_size: int = 0
    embedding: int = 128
    hidden: int = 128
    embedding_dropout: float = 0.0  # in training, drop each character's embedding row with this probability
    output_dropout: float = 0.0  # in training, drop entries of h_t before the output layer with this probability
    tie_weights: bool = False  # the output layer's W_y is the embedding matrix (needs embedding == hidden)

    def __post_init__(self) -> None:
        _check(self.embedding >= 1, f"--embedding must be at least 1, got {self.embedding}")
        _check(self.hidden >= 1, f"--hidden must be at least 1, got {self.hidden}")
        _check(
            not self.tie_weights or self.embedding == self.hidden,
            f"--tie-weights needs --embedding equal to --hidden, got {self.embedding} and {self.hidden}",
        )
        for name in ("embedding_dropout", "output_dropout"):
            p = getattr(self, name)
            _check(0 <= p < 1, f"--{name.replace('_', '-')} must be in [0, 1), got {p}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer name and hyper-parameters; `extra` holds --opt-arg key=value pairs."""

    name: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"--lr must be greater than 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        _check(all(0 <= b < 1 for b in self.betas), f"--betas must be in [0, 1), got {self.betas}")
        _check(self.eps > 0, f"--eps must be greater than 0, got {self.eps}")


SCHEDULES = ("constant", "cosine", "linear", "plateau")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings (defaults: the course's)."""

    model: str = "torch-lstm"
    epochs: int = 10
    max_steps: int = 0  # stop after this many optimizer steps (0: run all epochs)
    batch_size: int = 64
    eval_every: int = 0  # evaluate test perplexity every N steps (0: at the end of each epoch only)
    save_every: int = 100  # write the training state (for --resume) every N steps and at each epoch end
    log_every: int = 100  # when the output is not a terminal: one plain progress line every N steps
    clip: float = 5.0  # gradient-norm clipping (0: off)
    seed: int = 0
    out: str = home("runs")
    cpu: bool = False
    grad_accum: int = 1
    mixed_precision: str = "no"
    cuda_graphs: bool = False  # replay torch-lstm's recurrences from CUDA graphs (GPU only)
    fused_steps: bool = False  # torch-lstm's time steps as fused Triton kernels (GPU only)
    schedule: str = "constant"  # the learning rate after warmup: constant, cosine, linear or plateau
    warmup_steps: int = 0  # the learning rate rises linearly from lr/warmup_steps to lr over these steps
    min_lr_ratio: float = 0.0  # cosine and linear end at lr × this
    plateau_factor: float = 0.5  # plateau: the learning rate is multiplied by this …
    plateau_patience: int = 0  # … after this many evaluations without a new best, plus one
    init_from: str = ""  # start from this checkpoint's weights and vocabulary (a second stage of training)
    dist_timeout: int = 1800  # seconds a process of a multi-process run waits for the others before giving up
    report_to: tuple[str, ...] = ()  # Accelerate trackers beside metrics.jsonl: tensorboard, trackio, wandb …
    target_ppl: float = 0.0  # stop at the first evaluation at or below this test perplexity (0: off)
    time_budget: float = 0.0  # stop after this many minutes of training steps, evaluations excluded (0: off)

    def __post_init__(self) -> None:
        _check(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule}")
        _check(self.warmup_steps >= 0, f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        _check(0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(0 < self.plateau_factor < 1, f"--plateau-factor must be in (0, 1), got {self.plateau_factor}")
        _check(self.plateau_patience >= 0, f"--plateau-patience must be 0 or more, got {self.plateau_patience}")
        _check(0 <= self.seed < 2**32, f"--seed must be in [0, 2**32), got {self.seed}")  # NumPy's limit
        _check(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        _check(self.target_ppl >= 0, f"--target-ppl must be 0 (off) or more, got {self.target_ppl}")
        _check(self.time_budget >= 0, f"--time-budget must be 0 (off) or more minutes, got {self.time_budget}")
        _check(self.dist_timeout >= 1, f"--dist-timeout must be at least 1 second, got {self.dist_timeout}")
        _check(self.max_steps >= 0, f"--max-steps must be 0 (no limit) or more, got {self.max_steps}")
        _check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        _check(self.eval_every >= 0, f"--eval-every must be 0 or more, got {self.eval_every}")
        _check(self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}")
        _check(self.save_every >= 0, f"--save-every must be 0 (epoch ends only) or more, got {self.save_every}")
        _check(self.clip >= 0, f"--clip must be 0 (off) or more, got {self.clip}")
        _check(self.grad_accum >= 1, f"--grad-accum must be at least 1, got {self.grad_accum}")
        _check(
            self.mixed_precision in ("no", "fp16", "bf16"),
            f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision}",
        )


@dataclass(frozen=True)
class BenchConfig:
    """How `poemctl bench` times the models; the first model is the reference."""

    models: tuple[str, ...] = ("cudnn-lstm", "torch-lstm", "numpy-lstm")
    device: str = "cpu"
    batch_size: int = 64
    steps: int = 20  # timed steps per model and round, after 2 warm-up steps
    repeats: int = 3  # rounds, each with a fresh process per model; the processes take turns step by step
    cuda_graphs: bool = False  # models with a CUDA-graph mode (torch-lstm) train in it
    fused_steps: bool = False  # models with fused Triton steps (torch-lstm) train with them

    def __post_init__(self) -> None:
        _check(len(self.models) >= 1, "--models names no model")
        _check(self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device}")
        _check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        _check(self.steps >= 1, f"--steps must be at least 1, got {self.steps}")
        _check(self.repeats >= 1, f"--repeats must be at least 1, got {self.repeats}")
        gpu_modes.check(self, self.device == "cuda", "--device cuda")


STRATEGIES = ("course", "sample", "greedy")


@dataclass(frozen=True)
class SampleConfig:
    """How to write: the form, the strategy and the constraints."""

    lines: int = 4
    chars: int = 7
    num: int = 1
    seed: int | None = None
    strategy: str = ""  # course: top 5, then top 10; sample: temperature / top-k / top-p; greedy. "": course,
    # or sample when a temperature, top-k or top-p is given
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    acrostic: str = ""  # line k starts with its k-th character; its length sets the number of lines
    rhyme: bool = False
    tones: bool = False
    rhyme_group: str = ""  # the 平水韵 level-tone group to rhyme in (control.group_named); "": the model's choice

    def __post_init__(self) -> None:
        knobs = (self.temperature, self.top_k, self.top_p) != (1.0, 0, 1.0)
        if not self.strategy:  # frozen: set once, here
            object.__setattr__(self, "strategy", "sample" if knobs else "course")
        checks = [
            (self.chars in (5, 7), f"--chars must be 5 or 7, got {self.chars}"),
            (self.lines >= 1, f"--lines must be at least 1, got {self.lines}"),
            (self.num >= 1, f"--num must be at least 1, got {self.num}"),
            (self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy}"),
            (
                0 < self.temperature < math.inf,
                f"--temperature must be a positive number, got {self.temperature}",
            ),
            (self.seed is None or 0 <= self.seed < 2**63, f"--seed must be in [0, 2**63), got {self.seed}"),
            (self.top_k >= 0, f"--top-k must be 0 (off) or more, got {self.top_k}"),
            (0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}"),
            (
                self.strategy == "sample" or not knobs,
                f"--temperature, --top-k and --top-p apply to --strategy sample, not {self.strategy}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PoemctlError(message)
        if self.rhyme_group:
            from poemctl.control import group_named

            group_named(self.rhyme_group)  # an unknown name fails here, before any model is read


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d, source: str = "the configuration", complete: bool = False) -> RunConfig:
        """Inverse of to_dict, every value checked: anything else is a one-line error naming source and the
        field. Unknown keys (from newer versions) are ignored, missing ones take their defaults (older versions
        did not write them); complete: every part and every ESSENTIAL field must be there (a run's config.json).
        """
        if not isinstance(d, dict):
            raise PoemctlError(f"{source} is not a table of settings (got {type(d).__name__})")
        known = {}
        for part, kind in PARTS.items():
            given = d.get(part, {})
            if not isinstance(given, dict):
                raise PoemctlError(f"{source}: {part} is not a table of settings (got {type(given).__name__})")
            names = [f.name for f in dataclasses.fields(kind)]
            missing = [n for n in names if n not in given and (part, n) in ESSENTIAL]
            if complete and (part not in d or missing):
                raise PoemctlError(f"{source}: {part if part not in d else f'{part}.{missing[0]}'} is missing")
            known[part] = {k: v for k, v in given.items() if k in names}
        try:
            return with_values(RunConfig(), known, source)
        except PoemctlError as e:
            message = str(e)
            raise PoemctlError(message if message.startswith(source) else f"{source}: {message}") from None


def _tuples(v):
    # JSON turns tuples into lists; frozen configs keep tuples so they stay hashable.
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


# What a run's configuration cannot do without: the shape of its model and its optimizer's state.
ESSENTIAL = {("model", "embedding"), ("model", "hidden"), ("optim", "name"), ("train", "model"), ("data", "corpus")}
PARTS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


def with_values(cfg: RunConfig, values: dict[str, dict], source: str) -> RunConfig:
    """cfg with values ({part: {field: value}}) put in; an unknown part or field is an error naming source."""
    parts = {}
    for part, kind in PARTS.items():
        given = values.get(part, {})
        if not isinstance(given, dict):
            raise PoemctlError(f"{source}: [{part}] must be a table of settings")
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise PoemctlError(f"{source}: [{part}] has no setting '{unknown[0]}' (it has: {', '.join(sorted(names))})")
        hints = typing.get_type_hints(kind)
        for name, v in given.items():
            _check(_fits(v, hints[name]), f"{source}: [{part}] {name} must be {_kind_name(hints[name])}, got {v!r}")
        parts[part] = dataclasses.replace(getattr(cfg, part), **{k: _tuples(v) for k, v in given.items()})
    unknown = sorted(set(values) - set(PARTS))
    if unknown:
        raise PoemctlError(f"{source}: no section [{unknown[0]}] (sections: {', '.join(PARTS)})")
    return RunConfig(**parts)


def _fits(value, hint) -> bool:
    """Whether a value read from a file suits a field's type (int, float, str, bool or a tuple)."""
    base = typing.get_origin(hint) or hint
    if base is Any:
        return True
    if base is bool or value is True or value is False:
        return base is bool and isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float))
    if base is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    return isinstance(value, base)


def _kind_name(hint) -> str:
    base = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if base is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} {_kind_name(args[0]).split(' ', 1)[1]}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list"}.get(
        base, str(hint)
    )


def read_recipe(path: str | Path) -> RunConfig:
    """The RunConfig of a TOML recipe: sections [data], [model], [optim], [train], each key a field of that
    config; what a recipe leaves out keeps its default."""
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise PoemctlError(f"cannot read {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise PoemctlError(f"{path} is not valid TOML: {e}") from None
    return with_values(RunConfig(), values, str(path))


def to_toml(cfg: RunConfig) -> str:
    """cfg as a TOML recipe that read_recipe reads back to cfg."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False)  # a JSON string or integer is a TOML one

    sections = []
    for part in PARTS:
        fields = dataclasses.asdict(getattr(cfg, part))
        sections.append("\n".join([f"[{part}]", *(f"{k} = {value(v)}" for k, v in fields.items() if v is not None)]))
    return "\n\n".join(sections) + "\n"
