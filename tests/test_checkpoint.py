"""Checkpoints rebuild the model from the file alone; bad files are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gigaseg import CheckpointError, ConfigError, UNet, UNetConfig, load_checkpoint, load_model, preset, save_checkpoint
from gigaseg.checkpoint import save_weights


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


@pytest.mark.parametrize("bits", [16, 8, 6, 3])
def test_weights_files_round_trip_within_half_a_step_per_kernel(tmp_path, bits):
    torch.manual_seed(0)
    model = UNet(UNetConfig(2, (4, 6), (4, 2), (9, 5), (3, 3)))
    with torch.no_grad():
        model.encoder[1].conv.weight[0, 0].zero_()  # an all-zero kernel stays zero
        model.encoder[1].conv.weight[1] *= 100  # kernels of one channel far apart in size
    path = save_weights(tmp_path / "w.npz", model, mpp=2.0, info={"run": "r"}, bits=bits)
    rebuilt, mpp = load_model(path)
    payload = load_checkpoint(path)
    assert mpp == 2.0 and payload["info"] == {"run": "r"} and rebuilt.config == model.config
    for (name, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert b.dtype == torch.float32
        if a.ndim < 2 or bits == 16:  # float16
            torch.testing.assert_close(b, a, atol=2 ** -24, rtol=2 ** -11)  # float16 subnormals: 2^-24 apart
        else:  # within half a quantization step of the weight's own kernel
            kernels = a.reshape(-1, a[0, 0].numel())
            step = kernels.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
            err = (b.reshape(kernels.shape) - kernels).abs()
            assert (err <= step * 0.5 * (1 + 2 ** -10) + 1e-12).all(), name
    assert not rebuilt.encoder[1].conv.weight[0, 0].any()
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temporary left


def test_weights_files_refuse_bad_bits_and_damaged_quantized_arrays(tmp_path):
    model = UNet(preset("tiny"))
    with pytest.raises(ConfigError, match="bits=12"):
        save_weights(tmp_path / "w.npz", model, mpp=None, bits=12)
    path = save_weights(tmp_path / "w.npz", model, mpp=None, bits=6)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].item().decode())
    key = next(iter(meta["quantized"]["shapes"]))
    for damage in ("short", "shape", "bits"):
        broken = dict(arrays)
        m = json.loads(json.dumps(meta))
        if damage == "short":
            broken[key] = arrays[key][:-1]
        elif damage == "shape":
            m["quantized"]["shapes"][key][0] += 1
        else:
            m["quantized"]["bits"] = 40
        broken["__meta__"] = np.array(json.dumps(m).encode())
        np.savez(tmp_path / "bad.npz", **broken)
        with pytest.raises(CheckpointError, match="bad.npz.*(quantized|damaged)"):
            load_model(tmp_path / "bad.npz")


def test_a_weights_file_that_unzips_to_far_more_than_its_size_is_refused_unread(tmp_path):
    model = UNet(preset("tiny"))
    with np.load(save_weights(tmp_path / "w.npz", model, mpp=None)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["encoder.0.conv.bias"] = np.zeros(64 * 2**20, np.uint8)  # 64 MB of zeros: ~64 kB deflated
    np.savez_compressed(tmp_path / "bomb.npz", **arrays)
    assert (tmp_path / "bomb.npz").stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"bomb.npz unzips to 67,1\d\d,\d+ bytes"):
        load_model(tmp_path / "bomb.npz")
    np.savez_compressed(tmp_path / "small.npz", **{k: v for k, v in arrays.items() if v.size < 2**20},
                        **{"encoder.0.conv.bias": np.zeros(model.encoder[0].conv.bias.shape, np.float16)})
    load_model(tmp_path / "small.npz")  # a compressed file of real size loads


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


# --- safe loading (NOTE [Safe loading]) --------------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the shape of a crafted checkpoint's attack."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(tmp_path, how: str):
    marker = tmp_path / "pwned"
    path = tmp_path / f"crafted-{how}.pt"
    payload = {"format": "gigaseg-checkpoint", "version": 1, "config": {}, "state_dict": {}, "x": _Payload(marker)}
    if how == "torch":
        torch.save(payload, path)
    else:
        import pickle

        path.write_bytes(pickle.dumps(payload))
    return path, marker


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_a_crafted_checkpoint_runs_no_code(tmp_path, how):
    path, marker = _crafted(tmp_path, how)
    with pytest.raises(CheckpointError, match="never unpickles code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_a_crafted_checkpoint_runs_no_code_through_the_command(tmp_path, capsys):
    from gigaseg.cli import main

    path, marker = _crafted(tmp_path, "torch")
    image = tmp_path / "slide.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (240, 240, 240)).save(image)
    code = main(["predict", str(image), "--model", str(path), "--out", str(tmp_path / "out"), "--mpp", "1",
                 "--no-progress"])
    assert code != 0 and not marker.exists()
    assert "never unpickles code" in capsys.readouterr().err


def test_checkpoints_hold_only_plain_values(tmp_path):
    """What gigaseg writes loads with PyTorch's restricted unpickler and no allow-list at all."""
    from gigaseg import TrainConfig, train
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "store")
    prepare_synthetic(store, 2, (64, 64), seed=1, val=1, progress=False)
    train(TrainConfig(data=str(store.path), out=str(tmp_path / "run"), preset="tiny", steps=1, ckpt_every=1,
                      val_every=1, progress=False, device="cpu"))
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert payload["step"] == 1 and isinstance(payload["rng"]["numpy"][1], list)


def test_checkpoints_of_gigaseg_0_1_still_load(tmp_path):
    """They hold numpy's RNG state as an array: read through the same safe path, allow-listing
    numpy's array reconstruction and nothing else."""
    from pathlib import Path

    old = Path(__file__).resolve().parents[1] / "results" / "demo-model" / "checkpoint.pt"
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(old, weights_only=True)  # what a plain safe load says of them
    model, mpp = load_model(old)
    assert mpp == 0.5 and model.config == preset("paper")
    assert load_checkpoint(old)["rng"]["numpy"][1].shape == (624,)


# --- gigaseg train --init: training starts from a model's weights --------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two 64 x 64 synthetic regions at 0.5 um/px, one of them held out."""
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path_factory.mktemp("init") / "store")
    prepare_synthetic(store, 2, (64, 64), seed=1, val=1, progress=False)
    return store.path


def _init_checkpoint(tmp_path, name: str = "tiny"):
    """A model of preset ``name`` whose weights no seeded initialization gives, saved at the store's mpp."""
    torch.manual_seed(1234)
    model = UNet(preset(name))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0).add_(0.01)
    return model, save_checkpoint(tmp_path / f"init-{name}.pt", model, mpp=0.5)


def test_train_init_starts_from_the_checkpoints_weights_and_architecture(tmp_path, store):
    import json

    from gigaseg.cli import main

    model, ck = _init_checkpoint(tmp_path)
    run = tmp_path / "run"
    # no --preset: the architecture is the file's (tiny), not the default preset's (paper); a learning rate
    # of 1e-9 moves no weight by more than ~1e-9 in one step, so the run's weights are where it began
    assert main(["train", "--data", str(store), "--out", str(run), "--init", str(ck), "--steps", "1", "--lr", "1e-9",
                 "--val-every", "0", "--ckpt-every", "1", "--device", "cpu", "--no-progress"]) == 0
    info = json.loads((run / "config.json").read_text())
    assert info["model"] == info["config"]["preset"] == preset("tiny").to_dict()
    assert info["config"]["init"] == str(ck.resolve())
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 1
    trained, _ = load_model(run / "checkpoint.pt")
    torch.manual_seed(0)  # the run's seed: what it would have started from without --init
    seeded = UNet(preset("tiny")).state_dict()
    for name, w in trained.state_dict().items():
        torch.testing.assert_close(w, model.state_dict()[name], atol=1e-6, rtol=0)
        assert (w - seeded[name]).abs().max() > 1e-3


def test_train_init_with_another_architecture_is_refused(tmp_path, store, capsys):
    from gigaseg import ConfigError, TrainConfig, train
    from gigaseg.cli import main

    _, tiny = _init_checkpoint(tmp_path)
    run = tmp_path / "run"
    # the command line: --init and --preset are one or the other
    assert main(["train", "--data", str(store), "--out", str(run), "--init", str(tiny), "--preset", "tiny",
                 "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--init {tiny}" in err and "--preset tiny" in err and "not both" in err
    # the API: a preset other than the init model's architecture
    _, paper = _init_checkpoint(tmp_path, "paper")
    with pytest.raises(ConfigError, match="another architecture"):
        train(TrainConfig(data=str(store), out=str(run), init=str(paper), preset="tiny", steps=1, progress=False,
                          device="cpu"))
    assert not run.exists()  # refused before any work
