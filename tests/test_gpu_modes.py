"""gpu_modes.py: the GPU fast paths checked in one place."""

import pytest

from poemctl import gpu_modes
from poemctl.config import TrainConfig
from poemctl.errors import PoemctlError
from poemctl.models.cudnn_lstm import CudnnLSTM
from poemctl.models.torch_lstm import TorchLSTM


@pytest.mark.parametrize(
    "asked, on_gpu, models, text",
    [
        ({"cuda_graphs": True}, False, {}, "--cuda-graphs needs a GPU here"),
        ({"fused_steps": True}, False, {}, "--fused-steps needs a GPU here"),
        ({"cuda_graphs": True}, True, {"cudnn-lstm": CudnnLSTM}, "cudnn-lstm has no CUDA-graph mode"),
    ],
)
def test_a_mode_that_cannot_run_is_one_line(asked, on_gpu, models, text):
    with pytest.raises(PoemctlError, match=text):
        gpu_modes.check(TrainConfig(**asked), on_gpu, "a GPU here", models)


def test_modes_are_turned_on_where_the_model_has_them(monkeypatch):
    turned = []
    monkeypatch.setattr(TorchLSTM, "use_cuda_graphs", lambda self: turned.append("graphs"), raising=True)
    gpu_modes.check(TrainConfig(cuda_graphs=True), True, "a GPU", {"torch-lstm": TorchLSTM})  # no error
    gpu_modes.use(object.__new__(TorchLSTM), TrainConfig(cuda_graphs=True))
    gpu_modes.use(object.__new__(CudnnLSTM), TrainConfig(cuda_graphs=True))  # has none: nothing happens
    assert turned == ["graphs"]
