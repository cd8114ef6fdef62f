"""hub.py: the Hugging Face Hub layout, read back; fetching and pushing tested up to the network."""

import json

import pytest
from typer.testing import CliRunner

import poemctl
from poemctl import hub
from poemctl.cli import app
from poemctl.errors import PoemctlError

runner = CliRunner()


@pytest.fixture
def folder(trained, tmp_path):
    return hub.export(trained / "best.safetensors", tmp_path / "hub")


def test_export_writes_the_hub_layout(folder, trained):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: poemctl\n") and "license: mit" in card
    assert "[model]\n" in card and "hidden = 16" in card  # the recipe that retrains it
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model"] == "torch-lstm" and config["config"]["model"]["hidden"] == 16


def test_a_hub_folder_writes_the_same_poems_as_its_checkpoint(folder, trained):
    original = poemctl.load(trained / "best.safetensors").write("山", num=3, seed=5)
    assert poemctl.load(folder).write("山", num=3, seed=5) == original
    result = runner.invoke(app, ["sample", "山", "--ckpt", str(folder), "--num", "3", "--seed", "5"])
    assert result.exit_code == 0 and result.output.strip() == "\n\n".join(original)


def test_export_refuses_a_folder_with_other_files(trained, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PoemctlError, match="holds other files"):
        hub.export(trained / "best.safetensors", tmp_path / "busy")


def test_hf_names_go_through_huggingface_hub(folder, trained, monkeypatch):
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **k: asked.append(repo) or str(folder))
    poems = poemctl.load("hf:someone/tang-poems").write("山", seed=5)
    assert asked == ["someone/tang-poems"]
    assert poems == poemctl.load(trained / "best.safetensors").write("山", seed=5)


def test_without_the_network_hf_names_and_push_fail_in_one_line(folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # these machines cannot reach the Hub: never try
    result = runner.invoke(app, ["sample", "月", "--ckpt", "hf:someone/tang-poems"])
    assert result.exit_code == 2 and "cannot fetch hf:someone/tang-poems from the Hugging Face Hub" in result.output


def test_push_uploads_the_folder_to_the_repository(folder, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo, **k: calls.append(("create", repo, k)) or "URL"
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **k: calls.append(("upload", k)))
    result = runner.invoke(app, ["push", str(folder), "--repo", "someone/tang-poems"])
    assert result.exit_code == 0, result.output
    assert calls[0] == ("create", "someone/tang-poems", {"repo_type": "model", "private": False, "exist_ok": True})
    assert calls[1] == ("upload", {"repo_id": "someone/tang-poems", "folder_path": str(folder), "repo_type": "model"})
    bad = runner.invoke(app, ["push", str(folder.parent), "--repo", "someone/x"])
    assert bad.exit_code == 2 and "is not a Hub folder" in bad.output
