import pytest

from poemctl.config import BenchConfig, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from poemctl.errors import PoemctlError


@pytest.mark.parametrize(
    "make, text",
    [
        (lambda: TrainConfig(batch_size=0), "--batch-size"),
        (lambda: TrainConfig(epochs=0), "--epochs"),
        (lambda: TrainConfig(mixed_precision="fp8"), "--mixed-precision"),
        (lambda: OptimConfig(lr=0), "--lr"),
        (lambda: OptimConfig(lr=-1), "--lr"),
        (lambda: OptimConfig(momentum=1.0), "--momentum"),
        (lambda: DataConfig(seq_len=1), "--seq-len"),
        (lambda: DataConfig(min_freq=0), "--min-freq"),
        (lambda: ModelConfig(hidden=0), "--hidden"),
        (lambda: BenchConfig(models=()), "--models"),
        (lambda: BenchConfig(device="tpu"), "--device"),
        (lambda: BenchConfig(steps=0), "--steps"),
        (lambda: BenchConfig(repeats=0), "--repeats"),
        (lambda: BenchConfig(cuda_graphs=True), "--cuda-graphs needs --device cuda"),
        (lambda: BenchConfig(fused_steps=True), "--fused-steps needs --device cuda"),
    ],
)
def test_invalid_values_are_one_line_errors(make, text):
    with pytest.raises(PoemctlError, match=text):
        make()


def test_defaults_are_the_course():
    cfg = RunConfig()
    assert (cfg.train.batch_size, cfg.model.hidden, cfg.model.embedding) == (64, 128, 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.train.epochs) == ("adam", 0.01, 10)
    assert (cfg.data.seq_len, cfg.data.min_freq, cfg.data.keep_commas, cfg.data.traditional) == (80, 2, False, False)


def test_round_trip_through_dict():
    cfg = RunConfig(optim=OptimConfig(betas=(0.8, 0.9), extra=(("nesterov", 1.0),)), train=TrainConfig(seed=3))
    import json

    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
