"""Checkpoints rebuild the model from the file alone; bad files are clear errors."""

from __future__ import annotations

import pytest
import torch

from gigaseg import CheckpointError, UNet, UNetConfig, load_checkpoint, load_model, preset, save_checkpoint


def test_round_trip_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    config = UNetConfig(2, (2, 3), (4, 2), (9, 5), (3, 3), activation="silu")
    model = UNet(config)
    path = save_checkpoint(tmp_path / "run" / "last.pt", model, mpp=0.5, step=7)
    rebuilt, mpp = load_model(path)
    payload = load_checkpoint(path)
    assert rebuilt.config == config and mpp == payload["mpp"] == 0.5 and payload["step"] == 7
    assert not hasattr(rebuilt, "mpp")  # the resolution travels beside the model, not on it
    x = torch.rand(1, 3, 40, 50)
    torch.testing.assert_close(rebuilt(x), model(x))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    save_checkpoint(corrupt, UNet(preset("tiny")), mpp=None)
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not a gigaseg checkpoint"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    save_checkpoint(future, UNet(preset("tiny")), mpp=None, version=99)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", UNet(preset("tiny")), mpp=0.5, step=1)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is intact"):
        save_checkpoint(path, UNet(preset("tiny")), mpp=0.5, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_load_model_without_a_training_mpp(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", UNet(preset("tiny")), mpp=None)
    model, mpp = load_model(path)
    assert mpp is None and model.config == preset("tiny") and not model.training
