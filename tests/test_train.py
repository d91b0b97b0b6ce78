"""The training loop: it learns, resumes bit for bit, and every bad situation is a clear error."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import platform

import numpy as np
import pytest
import torch

import gigaseg.engine
from gigaseg import CheckpointError, ConfigError, InputError, StoreError, load_checkpoint, load_model, preset
from gigaseg.cli import main
from gigaseg.prepare import prepare_synthetic
from gigaseg.store import RegionStore
from gigaseg.training import (
    LOG_COLUMNS,
    DiceCounts,
    TrainConfig,
    TrainingError,
    evaluate_regions,
    lr_factor,
    resume_config,
    train,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """3 training and 1 held-out synthetic region of 96 x 128 (H x W)."""
    s = RegionStore.create(tmp_path_factory.mktemp("data") / "store")
    prepare_synthetic(s, 4, (128, 96), seed=3, val=1, progress=False)
    return s.path


def _config(store, out, **kw) -> TrainConfig:
    base = dict(data=str(store), out=str(out), preset="tiny", steps=6, lr=0.02, warmup=2, val_every=3, ckpt_every=2,
                progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _log(run) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _params(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_training_lowers_the_loss_and_writes_its_logs(store, tmp_path):
    run = tmp_path / "run"
    result = train(_config(store, run, steps=24, lr=0.05, val_every=12, ckpt_every=12, augment=False))
    rows = _log(run)
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert all(float(r["seconds_per_step"]) > 0 and int(r["peak_anon_bytes"]) > 0 for r in rows)
    val = [r for r in rows if r["val_dice_mean"]]
    assert [int(r["step"]) for r in val] == [12, 24]
    assert result["val_dice_mean"] == pytest.approx(float(val[-1]["val_dice_mean"]))
    assert 0 <= result["val_dice_mean"] <= 1 and result["val_dice_sd"] == 0.0  # one held-out region
    assert list(result["val_dice"]) == ["synth-s6"]
    info = json.loads((run / "config.json").read_text())
    assert info["config"]["steps"] == 24 and info["torch_version"] == torch.__version__
    assert {"gigaseg_version", "machine", "mpp", "train_regions", "val_regions", "result"} <= set(info)
    assert info["machine"]["cpu_count"] >= 1
    assert (run / "curves.png").stat().st_size > 1000
    assert (run / "val.csv").read_text().count("synth-s6") == 2
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "curves.png", "log.csv", "val.csv"]


def test_checkpoint_rebuilds_the_model_from_the_file_alone(store, tmp_path):
    run = tmp_path / "run"
    train(_config(store, run, steps=3, ckpt_every=0, val_every=0))
    model, mpp = load_model(run / "checkpoint.pt")
    payload = load_checkpoint(run / "checkpoint.pt")
    assert model.config == preset("tiny") and mpp == payload["mpp"] == 0.5 and payload["step"] == 3
    assert {"optimizer", "scheduler", "rng", "data_order", "train_config"} <= set(payload)
    assert set(payload["rng"]) >= {"torch", "numpy", "python"}
    assert payload["data_order"]["epoch"] == 0 and payload["data_order"]["position"] == 3
    assert sorted(payload["data_order"]["permutation"]) == [0, 1, 2]
    # the rebuilt model predicts what the checkpoint's validation measured
    region = RegionStore(store).split("val")[0]
    dice = evaluate_regions(model, [region])[0]["dice"]
    assert dice == pytest.approx(payload["extra"]["val"][0]["dice"])


def _interrupt_at(monkeypatch, call: int, exc: BaseException | None = None, value: float | None = None):
    """Make the ``call``-th tiled_backward raise ``exc`` or return ``value``."""
    real = gigaseg.engine.tiled_backward
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            if exc is not None:
                raise exc
            return value
        return real(*args, **kwargs)

    monkeypatch.setattr(gigaseg.engine, "tiled_backward", fake)
    return calls


def test_stop_and_resume_equals_straight_through_bit_for_bit(store, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(_config(store, straight, steps=8, ckpt_every=3))
    stopped = tmp_path / "stopped"
    _interrupt_at(monkeypatch, 6, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train(_config(store, stopped, steps=8, ckpt_every=3))
    monkeypatch.undo()
    assert load_checkpoint(stopped / "checkpoint.pt")["step"] == 5  # the last completed step, not a multiple of 3
    train(resume_config(stopped))
    a, b = _params(straight / "checkpoint.pt"), _params(stopped / "checkpoint.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    oa = load_checkpoint(straight / "checkpoint.pt")["optimizer"]["state"]
    ob = load_checkpoint(stopped / "checkpoint.pt")["optimizer"]["state"]
    for k in oa:
        assert torch.equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"])
    assert [r["loss"] for r in _log(straight)] == [r["loss"] for r in _log(stopped)]
    assert [r["val_dice_mean"] for r in _log(straight)] == [r["val_dice_mean"] for r in _log(stopped)]
    info = json.loads((stopped / "config.json").read_text())
    assert info["resumes"][0]["step"] == 5


def test_resume_can_extend_steps_and_refuses_other_changes(store, tmp_path):
    run = tmp_path / "run"
    train(_config(store, run, steps=3))
    with pytest.raises(ConfigError, match="already run 3 steps"):
        train(resume_config(run))
    with pytest.raises(ConfigError, match="loss='dice'"):
        resume_config(run, loss="dice")
    with pytest.raises(ConfigError, match="`resume="):
        train(_config(store, run, steps=3))  # a new run into a used folder
    result = train(resume_config(run, steps=5))
    assert result["step"] == 5 and [int(r["step"]) for r in _log(run)] == [1, 2, 3, 4, 5]
    with pytest.raises(CheckpointError, match="no checkpoint.pt"):
        resume_config(tmp_path / "nothing-here")


def test_keep_every_keeps_whole_checkpoints_of_those_steps(store, tmp_path):
    """--keep-every K: the checkpoint of every K-th step stays as checkpoints/step-N.pt (even when
    --ckpt-every would not write one then), each the weights of its step; a resume may change K."""
    run = tmp_path / "run"
    train(_config(store, run, steps=4, ckpt_every=3, keep_every=2, val_every=0))
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-2.pt", "step-4.pt"]
    assert [load_checkpoint(run / "checkpoints" / k)["step"] for k in kept] == [2, 4]
    last, final = _params(run / "checkpoints" / "step-4.pt"), _params(run / "checkpoint.pt")
    assert all(torch.equal(last[k], final[k]) for k in final)
    early = _params(run / "checkpoints" / "step-2.pt")
    assert any(not torch.equal(early[k], final[k]) for k in final)
    assert load_checkpoint(run / "checkpoint.pt")["train_config"]["keep_every"] == 2
    train(resume_config(run, steps=6, keep_every=3))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2.pt", "step-4.pt", "step-6.pt"]
    with pytest.raises(ConfigError, match="keep_every=-1"):
        _config(store, tmp_path / "bad", keep_every=-1).check()


def test_a_checkpoint_that_cannot_be_kept_stops_training_with_the_fix(store, tmp_path, monkeypatch):
    """A full disk while keeping a checkpoint: a CheckpointWriteError naming the file and the way
    to resume; no partial kept file, and the run's checkpoint of that step is whole."""
    import shutil

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", full)
    monkeypatch.setattr(shutil, "copyfileobj", full)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"step-2\.pt.*No space left.*--resume"):
        train(_config(store, run, steps=4, keep_every=2, val_every=0))
    assert list((run / "checkpoints").iterdir()) == []
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2


def test_empty_store_and_missing_masks_fail_before_any_work(tmp_path, store):
    empty = RegionStore.create(tmp_path / "empty")
    with pytest.raises(StoreError, match="no regions in split 'train'"):
        train(_config(empty.path, tmp_path / "run1"))
    assert not (tmp_path / "run1").exists()

    broken = RegionStore.create(tmp_path / "broken")
    prepare_synthetic(broken, 2, (64, 64), seed=0, val=1, progress=False)
    os.remove(broken.path / "synth-s0" / "mask.npy")
    with pytest.raises(StoreError, match="synth-s0.*has no mask"):
        train(_config(broken.path, tmp_path / "run2"))
    assert not (tmp_path / "run2").exists()

    with pytest.raises(ConfigError, match="`data`"):
        train(TrainConfig(out=str(tmp_path / "run3")))
    with pytest.raises(ConfigError, match="schedule 'linear'.*cosine"):
        train(_config(store, tmp_path / "run3", schedule="linear"))


def test_masks_with_values_other_than_0_1_255_are_refused_before_training(tmp_path):
    s = RegionStore.create(tmp_path / "store")
    mask = np.zeros((64, 96), np.uint8)
    mask[10:20, 30:40] = 1
    mask[:5] = 255  # ignore: allowed (tests/test_ignore.py)
    mask[40, 50] = 2
    with s.new_region("slide1", (96, 64), meta={"mpp": 1.0, "mask_source": {"kind": "image"}}) as w:
        w.append(np.full((64, 96, 3), 200, np.uint8), mask)
    with pytest.raises(InputError, match=r"slide1.*value 2 at \(x=50, y=40\).*255 \(ignore\)"):
        train(_config(s.path, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(store, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, 5, value=float("nan"))
    with pytest.raises(TrainingError, match=r"not finite at step 5.*checkpoint.*\(step 4\) is kept"):
        train(_config(store, run, steps=8, ckpt_every=2))
    payload = load_checkpoint(run / "checkpoint.pt")
    assert payload["step"] == 4
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values())
    # resumable from the good checkpoint, with a lower learning rate
    monkeypatch.undo()
    result = train(resume_config(run, lr=0.002))
    assert result["step"] == 8 and [int(r["step"]) for r in _log(run)] == list(range(1, 9))


def test_nan_before_any_checkpoint(store, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 1, value=float("inf"))
    with pytest.raises(TrainingError, match="step 1.*no checkpoint was written yet"):
        train(_config(store, tmp_path / "run", ckpt_every=2))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("fail", ["replace", "save"])
def test_failed_checkpoint_write_keeps_the_previous_one(store, tmp_path, monkeypatch, fail):
    run = tmp_path / "run"
    train(_config(store, run, steps=2, ckpt_every=2, val_every=0))
    before = (run / "checkpoint.pt").read_bytes()
    if fail == "replace":
        real = os.replace

        def broken(src, dst, *a, **k):
            if str(dst).endswith("checkpoint.pt"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", broken)
    else:
        def broken(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(CheckpointError, match="No space left.*previous checkpoint is intact.*after step 4"):
        train(resume_config(run, steps=6))
    monkeypatch.undo()
    assert (run / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "curves.png", "log.csv", "val.csv"]


def test_ctrl_c_saves_the_last_step_and_exits_130(store, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, 3, KeyboardInterrupt())
    code = main(["train", "--data", str(store), "--out", str(run), "--preset", "tiny", "--steps", "6",
                 "--ckpt-every", "100", "--no-progress", "--device", "cpu"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and f"gigaseg train --resume {run}" in err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    assert main(["train", "--resume", str(run), "--loss", "dice"]) == 2
    assert "keeps its configuration" in capsys.readouterr().err


def test_cli_train_and_validation_store(store, tmp_path, capsys):
    other = RegionStore.create(tmp_path / "other")
    prepare_synthetic(other, 2, (64, 80), seed=20, progress=False)  # no val split: all its regions
    run = tmp_path / "run"
    assert main(["train", "--data", str(store), "--val-data", str(other.path), "--out", str(run), "--preset",
                 "tiny", "--steps", "2", "--schedule", "step", "--no-augment", "--no-progress"]) == 0
    assert "held-out Dice" in capsys.readouterr().err
    info = json.loads((run / "config.json").read_text())
    assert info["val_regions"] == ["synth-s20", "synth-s21"] and info["config"]["augment"] is False
    assert main(["train", "--out", str(tmp_path / "x")]) == 2


def test_help_defaults_are_the_config_defaults():
    """The command copies nothing: its defaults and choices are TrainConfig's and gigaseg.options'."""
    from gigaseg import options
    from gigaseg.cli import build_parser
    from gigaseg.cli.train import train_config

    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--out", "o"])
    assert train_config(args) == TrainConfig(data="d", out="o")
    train_parser = next(a for a in parser._subparsers._actions if a.dest == "command").choices["train"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    vocabularies = {"preset": options.PRESET_NAMES, "schedule": options.SCHEDULES, "loss": options.TRAIN_LOSSES,
                    "jitter": options.JITTERS}
    flags = {}
    for action in train_parser._actions:
        if action.dest in defaults:
            flags[action.dest] = action
            if defaults[action.dest] is not None and action.nargs != 0:
                assert f"(default: {defaults[action.dest]})" in action.help, action.dest
            assert action.choices == vocabularies.get(action.dest), action.dest
    assert set(flags) == set(defaults)  # every option has its flag


def test_config_file_then_flags(store, tmp_path):
    """--config RUN/config.json gives the run's TrainConfig again; flags override it (defaults < file < flags)."""
    from gigaseg import UNetConfig
    from gigaseg.cli import build_parser
    from gigaseg.cli.train import train_config

    own = UNetConfig(depth=2, channels=(2, 3), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3))
    run = tmp_path / "run"
    config = _config(store, run, steps=2, preset=own, loss="dice", val_every=0)
    train(config)
    assert load_model(run / "checkpoint.pt")[0].config == own
    written = run / "config.json"
    assert TrainConfig.from_json(written) == config
    parse = build_parser().parse_args
    again = train_config(parse(["train", "--config", str(written), "--out", str(tmp_path / "b"), "--lr", "0.001"]))
    assert again == dataclasses.replace(config, out=str(tmp_path / "b"), lr=0.001)
    with pytest.raises(ConfigError, match="`resume="):  # the file's own folder holds a run
        train(train_config(parse(["train", "--config", str(written)])))
    result = train(again)  # the UNetConfig travels through the file, and resumes
    assert result["step"] == 2
    assert train(resume_config(tmp_path / "b", steps=3))["step"] == 3
    assert load_model(tmp_path / "b" / "checkpoint.pt")[0].config == own

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": str(store), "out": str(tmp_path / "c"), "lrr": 0.1}))
    with pytest.raises(ConfigError, match=r"bad.json.*'lrr' \(did you mean 'lr'\?\)"):
        train_config(parse(["train", "--config", str(bad)]))
    assert main(["train", "--config", str(bad)]) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_json(tmp_path / "missing.json")


def test_unknown_choices_say_what_was_meant(store, tmp_path):
    with pytest.raises(ConfigError, match="unknown loss 'dic'; did you mean 'dice'\\? valid: bce, dice, bce\\+dice"):
        train(_config(store, tmp_path / "run", loss="dic"))
    with pytest.raises(ConfigError, match="unknown preset 'papr'; did you mean 'paper'"):
        train(_config(store, tmp_path / "run", preset="papr"))
    with pytest.raises(ConfigError, match="'stpes' \\(did you mean 'steps'\\?\\)"):
        TrainConfig.from_dict({"stpes": 3})
    assert not (tmp_path / "run").exists()


def test_learning_rate_schedules():
    kw = dict(steps=100, warmup=10, min_lr_ratio=0.1, decay_every=None, decay_gamma=0.5)
    assert lr_factor(0, schedule="cosine", **kw) == pytest.approx(1 / 11)
    assert lr_factor(9, schedule="cosine", **kw) == pytest.approx(10 / 11)
    assert lr_factor(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(55, schedule="cosine", **kw) == pytest.approx(0.55)
    assert lr_factor(100, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_factor(10 + 32, schedule="step", **kw) == 1.0  # decays every 100 // 3 = 33 steps
    assert lr_factor(10 + 33, schedule="step", **kw) == 0.5
    assert lr_factor(10 + 66, schedule="step", **kw) == 0.25
    assert lr_factor(99, schedule="constant", **kw) == 1.0


def test_dice_counts_match_a_whole_image_dice():
    rng = np.random.default_rng(0)
    mask = (rng.random((70, 90)) < 0.4).astype(np.uint8)
    mask[:5] = 255  # ignored rows count nowhere
    prob = rng.random((70, 90)).astype(np.float32)
    counts = DiceCounts(mask, 0.5)
    for y0 in range(0, 70, 32):
        for x0 in range(0, 90, 32):
            counts[y0:y0 + 32, x0:x0 + 32] = prob[y0:y0 + 32, x0:x0 + 32]
    valid = mask != 255
    pred = (prob >= 0.5) & valid
    ref = mask == 1
    expected = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert counts.dice == pytest.approx(expected) and counts.reference == ref.sum()
    assert DiceCounts(np.zeros((3, 3), np.uint8)).dice == 1.0  # both empty


def test_sigterm_saves_the_last_step_like_ctrl_c(store, tmp_path):
    """A real SIGTERM to a training process: it checkpoints, says how to resume, exits 130."""
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import sys, os, signal, gigaseg.engine as e\n"
        "from gigaseg.cli import main\n"
        "real = e.tiled_backward\n"
        "calls = []\n"
        "def tb(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*a, **k)\n"
        "e.tiled_backward = tb\n"
        f"sys.exit(main(['train', '--data', {str(store)!r}, '--out', {str(run)!r}, '--preset', 'tiny',"
        " '--steps', '6', '--ckpt-every', '100', '--no-progress', '--device', 'cpu']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert f"gigaseg train --resume {run}" in proc.stderr
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the freed heap is a glibc matter")
def test_step_memory_does_not_count_what_earlier_work_freed(store, tmp_path):
    """800 MB freed before training but kept by the allocator (as after making the demo's data)
    is not part of the first step's logged peak."""
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import csv, json\n"
        "from gigaseg._memory import read_status_bytes\n"
        "from gigaseg.training import TrainConfig, train\n"
        "blocks = [bytearray(64 * 1024) for _ in range(12800)]\n"  # below the mmap threshold: heap
        "pin = bytearray(64 * 1024)\n"  # above them, so that only malloc_trim can return them
        "del blocks\n"
        "before = read_status_bytes('RssAnon')\n"
        f"train(TrainConfig(data={str(store)!r}, out={str(run)!r}, preset='tiny', steps=1, val_every=0,"
        " ckpt_every=0, progress=False, device='cpu'))\n"
        f"peak = int(next(csv.DictReader(open({str(run / 'log.csv')!r})))['peak_anon_bytes'])\n"
        "print(json.dumps({'before': before, 'peak': peak}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout.splitlines()[-1])
    assert m["before"] > 800e6  # the freed blocks were still resident before training
    assert m["peak"] < m["before"] - 600e6


def test_a_budget_that_cuts_regions_into_small_tiles_gets_advice():
    """NOTE [Tiling advice]: a deep model's halo under the default 1 GiB budget."""
    from types import SimpleNamespace

    from gigaseg import UNet, UNetConfig
    from gigaseg.engine import plan
    from gigaseg.training import SLOW_RECOMPUTE, _tiling_advice

    model = UNet(UNetConfig(depth=5, channels=(12, 8, 16, 32, 32), strides=(2, 4, 4, 2, 2),
                            encoder_kernels=(3, 15, 11, 7, 5), decoder_kernels=(3, 3, 3, 3, 3),
                            activation="leaky_relu", input_shift=0.8, input_scale=4.0))
    regions = [SimpleNamespace(shape=(1024, 1024, 3)), SimpleNamespace(shape=(2048, 2048, 3))]

    def run(**kw):
        c = SimpleNamespace(**{"tile": None, "memory_budget": None, **kw})
        return SimpleNamespace(c=c, ranks=None, n_regions=2, train_ds=SimpleNamespace(regions=regions), model=model,
                               device=torch.device("cpu"))

    advice = _tiling_advice(run())
    slow = plan(model, 2048, 2048, device="cpu")
    assert slow.recompute > SLOW_RECOMPUTE
    need = plan(model, 2048, 2048, memory_budget=2**62, device="cpu").predicted_peak_bytes
    assert advice is not None and "1.00 GiB" in advice and "2048 x 2048" in advice and f"{slow.recompute:.1f}" in advice
    given = float(advice.split("--memory-budget ")[1].split("GiB")[0]) * 2**30
    assert need < given < need * 1.1 + 2**28  # enough, and not much more
    # ... and with that budget, none: the region trains in one piece
    assert plan(model, 2048, 2048, memory_budget=int(given), device="cpu").recompute == 1.0
    assert _tiling_advice(run(memory_budget=int(given))) is None
    assert _tiling_advice(run(tile=256)) is None  # the user chose the tile


def test_tiling_advice_leaves_a_budget_too_small_to_the_first_step():
    from types import SimpleNamespace

    from gigaseg.training import _tiling_advice

    model = preset("paper")
    c = SimpleNamespace(tile=None, memory_budget=2**20)  # 1 MiB: no tile fits; the engine's PlanError comes later
    run = SimpleNamespace(c=c, ranks=None, n_regions=1, train_ds=SimpleNamespace(regions=[SimpleNamespace(
        shape=(4096, 4096, 3))]), model=model, device=torch.device("cpu"))
    assert _tiling_advice(run) is None
