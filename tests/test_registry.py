import pytest

from poemctl.errors import PoemctlError
from poemctl.registry import MODELS, OPTIMIZERS, Registry


def test_builtin_plugins_come_from_entry_points():
    assert "torch-lstm" in MODELS.names()
    assert {"sgd", "momentum", "adagrad", "adam", "adamw", "rmsprop"} <= set(OPTIMIZERS.names())
    assert {p.dist for p in MODELS.plugins() if p.name == "torch-lstm"} == {"poemctl"}


def test_unknown_name_lists_and_suggests():
    with pytest.raises(PoemctlError, match=r"unknown model 'torch-lsmt'; did you mean 'torch-lstm'\?.*available"):
        MODELS.get("torch-lsmt")


def test_register_fake_plugin_and_clean_up():
    class Fake:
        """A fake optimizer."""

    OPTIMIZERS.register("fake-opt", Fake)
    try:
        assert OPTIMIZERS.get("fake-opt") is Fake
        with pytest.raises(PoemctlError, match="already registered"):
            OPTIMIZERS.register("fake-opt", Fake)
    finally:
        OPTIMIZERS.unregister("fake-opt")
    assert "fake-opt" not in OPTIMIZERS.names()


def test_empty_group():
    reg = Registry("widget", "poemctl.no-such-group")
    assert reg.names() == []
    with pytest.raises(PoemctlError, match="unknown widget"):
        reg.get("x")
