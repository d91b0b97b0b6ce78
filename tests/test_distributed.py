"""One step over several processes (torch.distributed, gloo on the CPU) equals the single process.

Each test spawns its ranks once (torch.multiprocessing, gloo on 127.0.0.1, a free port) and
checks several things in them; ranks write what they computed with ``torch.save`` and this
process compares. float64: relative error of every parameter's gradient <= 1e-9 (summation
order differs); float32 training weights: <= 1e-5. NOTE [Distributed step] says what is exact.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import free_port, spawn_ranks

from gigaseg import GigasegError, UNet, preset, tiled_backward
from gigaseg.engine import DistributedError, split_by_cost

LOSSES = ("bce", "dice", "bce+dice")
TOL64 = 1e-9


def _spawn(tmp_path: Path, world: int, fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``fn(rank, world, *args)`` on ``world`` gloo ranks (conftest.spawn_ranks), the fork server
    preloading torch, gigaseg and this module."""
    return spawn_ranks(tmp_path, world, fn, *args,
                       preload=("torch", "torch.distributed", "gigaseg", "gigaseg.training", __name__))


def _data(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (rng.random((h, w)) < 0.4).astype(np.uint8)


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(preset("tiny")).double()


def _grads(model: UNet) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


def _rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b))


# --- the engine ---------------------------------------------------------------------------------

SHAPE, TILE = (70, 90), 24  # 3 x 4 tiles of the tiny preset (stride 4, halo 10)


def _split() -> tuple[list, list[list[int]]]:
    """The plan's tiles and their split between 2 ranks."""
    from gigaseg.engine.tiles import _tile_list

    tiles = _tile_list(*SHAPE, TILE, TILE, preset("tiny"))
    return tiles, split_by_cost([(t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in tiles], 2)


def _one_image(rank: int, world: int) -> dict[str, Any]:
    """Each loss on one image shared by every rank."""
    import torch.distributed as dist

    image, mask = _data(*SHAPE, seed=1)
    model = _model()
    out: dict[str, Any] = {}
    for loss in LOSSES:
        out[loss] = (tiled_backward(model, image, mask, loss=loss, tile=TILE, group=dist.group.WORLD),
                     _grads(model))
    return out


def test_one_image_on_two_ranks_equals_one_process(tmp_path):
    assert all(_split()[1])  # each rank has tiles
    ranks = _spawn(tmp_path, 2, _one_image)
    image, mask = _data(*SHAPE, seed=1)
    model = _model()
    for loss in LOSSES:
        value = tiled_backward(model, image, mask, loss=loss, tile=TILE)
        ref = _grads(model)
        for rank in ranks:
            got_value, got = rank[loss]
            assert got_value == pytest.approx(value, rel=TOL64)
            assert _rel_err(got, ref) <= TOL64, loss


def _two_images(rank: int, world: int, groups: int) -> dict[str, Any]:
    """K = ``groups`` images per step: the ranks in K groups, group j on image j."""
    import torch.distributed as dist

    size = world // groups
    subgroups = [dist.new_group(list(range(j * size, (j + 1) * size))) for j in range(groups)]
    j = rank // size
    image, mask = _data(*SHAPE, seed=10 + j)
    model = _model()
    value = tiled_backward(model, image, mask, loss="bce+dice", tile=TILE, group=subgroups[j],
                           grad_group=dist.group.WORLD)
    return {"group": j, "loss": value, "grads": [g / groups for g in _grads(model)]}


@pytest.mark.parametrize("world", [2, 4])
def test_two_images_per_step_give_the_mean_of_their_gradients(tmp_path, world):
    ranks = _spawn(tmp_path, world, _two_images, 2)
    model = _model()
    losses, single = [], []
    for j in range(2):
        image, mask = _data(*SHAPE, seed=10 + j)
        losses.append(tiled_backward(model, image, mask, loss="bce+dice", tile=TILE))
        single.append(_grads(model))
    mean = [(a + b) / 2 for a, b in zip(*single)]
    for rank in ranks:
        assert rank["loss"] == pytest.approx(losses[rank["group"]], rel=TOL64)
        assert _rel_err(rank["grads"], mean) <= TOL64


def _failures(rank: int, world: int) -> dict[str, Any]:
    """A bad mask value in a tile of rank 1 only, then ranks given different tiles: every rank
    raises (none waits for the timeout) and no .grad changes."""
    import torch.distributed as dist

    image, mask = _data(*SHAPE, seed=1)
    tiles, split = _split()
    mask[tiles[split[1][0]].y0, tiles[split[1][0]].x0] = 2  # in a tile of rank 1
    model = _model()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    out: dict[str, Any] = {}
    for case, kw in (("bad mask", {"loss": "bce+dice", "tile": TILE}), ("bad mask bce", {"loss": "bce", "tile": TILE}),
                     ("tiles differ", {"loss": "dice", "tile": TILE * (1 + rank)})):
        try:
            tiled_backward(model, image, mask if case != "tiles differ" else mask.clip(0, 1), **kw,
                           group=dist.group.WORLD)
            out[case] = "no error"
        except GigasegError as exc:
            out[case] = type(exc).__name__ + ": " + str(exc)
    out["untouched"] = all(bool((p.grad == 1).all()) for p in model.parameters())
    return out


def test_a_failing_rank_stops_every_rank_and_no_grad_changes(tmp_path):
    r0, r1 = _spawn(tmp_path, 2, _failures)
    for case in ("bad mask", "bad mask bce"):
        assert r1[case].startswith("InputError: mask value 2"), r1
        assert r0[case].startswith("DistributedError: 1 rank(s) failed"), r0
    assert r0["tiles differ"].startswith("DistributedError: the ranks were given different work"), r0
    assert r1["tiles differ"] == r0["tiles differ"]
    assert r0["untouched"] and r1["untouched"]


def test_split_by_cost_balances_and_is_deterministic():
    assert split_by_cost([5, 3, 3, 2, 2, 1], 2) == [[0, 3, 5], [1, 2, 4]]  # 8 and 8
    assert split_by_cost([4, 4], 3) == [[0], [1], []]
    assert split_by_cost([], 2) == [[], []]
    with pytest.raises(Exception, match="at least 1"):
        split_by_cost([1], 0)


def test_the_plan_balances_the_ranks_shares():
    """NOTE [Balanced tiles]: on 2 ranks a 64 MP step's tiles split evenly (3 tiles would not)."""
    from gigaseg.engine import plan
    from gigaseg.engine.tiles import _tile_list

    def largest_share(tile: tuple[int, int], ranks: int) -> float:
        tiles = _tile_list(4000, 16000, *tile, preset("paper"))
        costs = [(t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in tiles]
        return max(sum(costs[i] for i in part) for part in split_by_cost(costs, ranks)) / (4000 * 16000 / ranks)

    one = plan(preset("paper"), 4000, 16000, device="cpu")
    assert plan(preset("paper"), 4000, 16000, device="cpu", ranks=1) == one
    two = plan(preset("paper"), 4000, 16000, device="cpu", ranks=2)
    assert largest_share(one.tile, 2) > 1.2 and largest_share(two.tile, 2) < 1.1
    assert two.predicted_peak_bytes <= two.memory_budget


def test_the_timeout_is_checked(monkeypatch):
    from gigaseg import ConfigError
    from gigaseg.engine.watch import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, fault_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert fault_timeout() == DEFAULT_TIMEOUT_S == 120
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert fault_timeout() == 2.5
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=f"{TIMEOUT_ENV}='{bad}' must be a number of seconds > 0"):
            fault_timeout()


def test_group_needs_an_initialized_process_group():
    from gigaseg import ConfigError

    image, mask = _data(40, 40, seed=0)
    with pytest.raises(ConfigError, match="init_process_group"):
        tiled_backward(_model(), image, mask, group=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="give `group` too"):
        tiled_backward(_model(), image, mask, grad_group=object())  # type: ignore[arg-type]
    assert issubclass(DistributedError, RuntimeError)


# --- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """4 training and 2 held-out synthetic regions of 96 x 128 (H x W)."""
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    s = RegionStore.create(tmp_path_factory.mktemp("data") / "store")
    prepare_synthetic(s, 6, (128, 96), seed=3, val=2, progress=False)
    return s.path


def _train_config(store: Path, out: Path, **kw: Any):
    from gigaseg.training import TrainConfig

    base = dict(data=str(store), out=str(out), preset="tiny", steps=3, lr=0.02, warmup=1, schedule="constant",
                val_every=2, ckpt_every=1, progress=False, device="cpu", tile=64, threshold=0.3)
    base.update(kw)
    return TrainConfig(**base)


def _two_runs(rank: int, world: int, store: Path, runs: Path) -> dict[str, Any]:
    """3 steps from scratch, then the run that one process started continued to step 3."""
    from gigaseg.training import resume_config, train

    straight = train(_train_config(store, runs / "two"))
    resumed = train(resume_config(runs / "one-then-two", steps=3))
    return {"straight": straight, "resumed": resumed}


def _weights(run: Path) -> list[torch.Tensor]:
    from gigaseg import load_checkpoint

    return list(load_checkpoint(run / "checkpoint.pt")["state_dict"].values())


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _losses(run: Path) -> list[float]:
    return [float(r["loss"]) for r in _csv(run / "log.csv")]


def test_training_on_two_ranks_equals_one_process_and_resumes_with_another_count(store, tmp_path):
    from gigaseg.training import train

    ref = train(_train_config(store, tmp_path / "ref"))  # one process, 3 steps
    train(_train_config(store, tmp_path / "one-then-two", steps=2))  # one process, 2 steps...
    r0, r1 = _spawn(tmp_path, 2, _two_runs, store, tmp_path)  # ...then 2 ranks (in a process group of theirs)
    for name in ("two", "one-then-two"):
        assert _rel_err(_weights(tmp_path / name), _weights(tmp_path / "ref")) <= 1e-5, name
        assert _losses(tmp_path / name) == pytest.approx(_losses(tmp_path / "ref"), rel=1e-5), name
    for result in (r0["straight"], r1["straight"], r0["resumed"], r1["resumed"]):
        assert result["step"] == 3 and result["processes"] == 2
        assert result["val_dice"] == pytest.approx(ref["val_dice"], abs=1e-3)
        assert len(result["val_dice"]) == 2
        assert result["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    # validation is split between the ranks (one region each) and its pixel counts summed; the
    # weights differ by float32 rounding, which could move a pixel across the threshold
    ref_rows, two_rows = (_csv(tmp_path / name / "val.csv") for name in ("ref", "two"))
    assert [(r["step"], r["region"]) for r in two_rows] == [(r["step"], r["region"]) for r in ref_rows]
    for a, b in zip(two_rows, ref_rows):
        for count in ("intersection", "predicted", "reference"):
            assert abs(int(a[count]) - int(b[count])) <= 5, (a, b)
    assert 0.0 < ref["val_dice"]["synth-s8"] < 1.0  # not a trivial Dice
    import json

    info = json.loads((tmp_path / "two" / "config.json").read_text())
    assert info["processes"] == 2 and info["result"]["rank"] == 0  # rank 0 wrote the run folder
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())


def test_regions_per_step_is_checked(monkeypatch):
    from gigaseg import ConfigError
    from gigaseg._torchrun import start_ranks
    from gigaseg.training import TrainConfig

    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        TrainConfig(data="d", out="o", regions_per_step=0).check()
    assert start_ranks(2, "cpu") is None  # one process takes the step's regions one after another
    monkeypatch.setenv("WORLD_SIZE", "3")  # torchrun's 3 processes cannot form 2 groups (refused before any rendezvous)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"`regions_per_step=2` needs a multiple of 2 .*has 3.*run one process"):
        start_ranks(2, "cpu")


def test_torchrun_two_regions_per_step(store, tmp_path):
    """`python -m torch.distributed.run --nproc-per-node 2 -m gigaseg train --regions-per-step 2`:
    each step trains on two regions; its loss is the mean of theirs."""
    import csv
    import subprocess
    import sys

    from gigaseg.dataset import RegionDataset

    out = tmp_path / "k2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIGASEG_DIST_TIMEOUT": "60"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gigaseg",
           "train", "--data", str(store), "--out", str(out), "--preset", "tiny", "--steps", "1", "--lr", "0.02",
           "--regions-per-step", "2", "--tile", "64", "--val-every", "0", "--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("trained 1 steps") == 1  # rank 0 reports
    with open(out / "log.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    ds = RegionDataset(str(store), "train", augment=True, seed=_train_config(store, out).seed)
    from gigaseg.training import _permutation

    perm = _permutation(_train_config(store, out).seed, 0, len(ds))
    names = [ds.regions[int(i)].name for i in perm[:2]]
    assert row["region"] == "+".join(names)
    torch.manual_seed(_train_config(store, out).seed)
    model = UNet(preset("tiny"))
    losses = [tiled_backward(model, ds.sample(int(i), 0).image, ds.sample(int(i), 0).mask, loss="bce+dice", tile=64)
              for i in perm[:2]]
    assert float(row["loss"]) == pytest.approx(sum(losses) / 2, rel=1e-5)
    # one process takes the two regions one after another: the same step, up to summation order
    from gigaseg.training import TrainConfig, train

    def alone(run: Path, k: int) -> dict[str, Any]:  # the command's options, in this process
        return train(TrainConfig(data=str(store), out=str(run), preset="tiny", steps=1, lr=0.02, regions_per_step=k,
                                 tile=64, val_every=0, progress=False, device="cpu"))

    one = tmp_path / "k2-one-process"
    result = alone(one, 2)
    assert result["step"] == 1
    with open(one / "log.csv", newline="") as f:
        (row_one,) = list(csv.DictReader(f))
    assert row_one["region"] == row["region"]
    assert float(row_one["loss"]) == pytest.approx(float(row["loss"]), rel=1e-5)
    assert _rel_err(_weights(one), _weights(out)) <= 1e-5
    single = tmp_path / "k1"  # and not the step of one region: the updates differ
    alone(single, 1)
    start = [v.detach() for v in model.state_dict().values()]
    moved = [[w - w0 for w, w0 in zip(_weights(run), start)] for run in (single, out)]
    assert _rel_err(*moved) > 1e-3  # Adam's first step is about lr times the sign: some signs differ


# --- faults: a rank that dies, stops or is interrupted (NOTE [Rank faults]) -----------------------

FAULT_TIMEOUT = 3.0  # GIGASEG_DIST_TIMEOUT in the ranks of these tests (seconds)


def _faulty_rank(rank: int, world: int, port: int, out: str, store: Path, run: Path, victim: int, fault: str) -> None:
    """Train 4 steps; rank ``victim`` kills (``fault`` "kill") or stops ("stop") itself in the middle
    of step 3, after pass 1, when the others wait for its share of the Dice sums. The others
    write their error and the seconds from the fault to it."""
    import signal
    import time

    import torch.distributed as dist

    from gigaseg.engine import distributed
    from gigaseg.engine.watch import TIMEOUT_ENV
    from gigaseg.training import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **{TIMEOUT_ENV: str(FAULT_TIMEOUT)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    if rank == victim:
        exchange, calls = distributed._Ranks.exchange, []

        def faulty(self, stage, *args, **kw):
            calls.append(stage)
            if calls.count("checking the inputs") == 3 and stage != "checking the inputs":
                (Path(out) / "fault-time").write_text(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
            return exchange(self, stage, *args, **kw)

        distributed._Ranks.exchange = faulty  # type: ignore[method-assign]
    try:
        train(_train_config(store, run, steps=4, val_every=0, ckpt_every=0 if fault == "kill" else 1, loss="dice"))
        result = "no error"
    except GigasegError as exc:
        result = f"{type(exc).__name__}: {exc}"
    done = time.time()
    fault_time = float((Path(out) / "fault-time").read_text())
    torch.save({"error": result, "seconds": done - fault_time}, Path(out) / f"rank{rank}.pt")


def _run_faulty(tmp_path: Path, store: Path, victim: int, fault: str) -> dict[str, Any]:
    """Two gloo ranks of ``_faulty_rank``; the survivor's result (the victim is killed if stopped)."""
    import multiprocessing

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "torch.distributed", "gigaseg", "gigaseg.training", __name__])
    ctx = multiprocessing.get_context(method)
    port, run = free_port(), tmp_path / "run"
    procs = [ctx.Process(target=_faulty_rank, args=(r, 2, port, str(tmp_path), store, run, victim, fault))
             for r in range(2)]
    for p in procs:
        p.start()
    survivor = procs[1 - victim]
    survivor.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
    assert survivor.exitcode == 0, survivor.exitcode
    return torch.load(tmp_path / f"rank{1 - victim}.pt")


@pytest.mark.parametrize("victim", [1, 0])
def test_a_rank_killed_mid_step_stops_the_other_naming_it_and_the_run_resumes(store, tmp_path, victim):
    from gigaseg import load_checkpoint
    from gigaseg.training import resume_config, train

    got = _run_faulty(tmp_path, store, victim, "kill")
    assert got["error"].startswith("DistributedError: "), got
    if victim == 1:  # rank 0 sees that its process is gone (same node: without waiting for the timeout)
        assert got["error"].startswith("DistributedError: rank 1 (pid "), got
        assert "is gone: the process ended (killed, or crashed)" in got["error"], got
        assert "rank 0 stops too (it was waiting for the other ranks while gathering the Dice sums)" in got["error"]
    else:  # rank 0 held the process group's store (no torchrun agent here): rank 1 loses it at once
        assert "lost the connection to the process group's store" in got["error"], got
        assert "kept by rank 0" in got["error"], got
    assert got["seconds"] < FAULT_TIMEOUT + 5, got
    run = tmp_path / "run"
    if victim == 1:  # ckpt_every=0: rank 0 saved the last completed step when it stopped
        assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
        assert len(_losses(run)) == 2
        done = train(resume_config(run, steps=3))
        assert done["step"] == 3 and len(_losses(run)) == 3
    else:  # rank 0 died: no checkpoint was ever written (ckpt_every=0); the run starts again
        assert not (run / "checkpoint.pt").exists()


def test_a_stopped_rank_stops_the_other_after_the_timeout(store, tmp_path):
    from gigaseg import load_checkpoint
    from gigaseg.training import resume_config

    got = _run_faulty(tmp_path, store, 1, "stop")
    assert got["error"].startswith("DistributedError: rank 1 (pid "), got
    assert f"has not answered for {FAULT_TIMEOUT:g} s: the process is stopped" in got["error"], got
    assert "waiting for the other ranks while gathering the Dice sums" in got["error"], got
    assert FAULT_TIMEOUT - 0.5 < got["seconds"] < FAULT_TIMEOUT + 5, got
    run = tmp_path / "run"
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2  # ckpt_every=1: written at step 2, intact
    assert resume_config(run).steps == 4


def test_sigterm_to_torchrun_stops_every_rank_with_the_last_completed_step(store, tmp_path):
    """SIGTERM to torchrun (what SLURM's scancel does; Ctrl-C sends SIGINT to every process):
    torchrun passes it on, every rank stops, rank 0 saves the last completed step, and the run
    resumes from it."""
    import signal
    import subprocess
    import sys
    import time

    from gigaseg import load_checkpoint
    from gigaseg.training import resume_config, train

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIGASEG_DIST_TIMEOUT": "30"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gigaseg",
           "train", "--data", str(store), "--out", str(out), "--preset", "tiny", "--steps", "1000", "--lr", "0.02",
           "--tile", "64", "--val-every", "0", "--ckpt-every", "1000", "--no-progress", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "log.csv").exists() and len(_csv(out / "log.csv")) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert f"gigaseg train: interrupted; saved step {step} of 1000" in err, err[-3000:]
    assert "before its first checkpoint" not in err  # rank 1 says nothing of checkpoints
    assert len(_losses(out)) == step >= 2 and seconds < 30
    assert train(resume_config(out, steps=step + 1))["step"] == step + 1


# --- prediction over many slides (NOTE [Sharded prediction]) ------------------------------------


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Three small synthetic slides (0.5 um/px) of different sizes, a corrupt one, and a tiny
    model's checkpoint whose masks are not trivial."""
    import tifffile

    from gigaseg import save_checkpoint
    from gigaseg.synth import render_region

    d = tmp_path_factory.mktemp("slides")
    paths = []
    for seed, (w, h) in zip((3, 4, 5), ((300, 200), (420, 260), (200, 180))):
        rgb, _ = render_region(seed, 0, 0, w, h, width=w, height=h, mpp=0.5)
        path = d / f"s{seed}.tif"
        tifffile.imwrite(path, rgb, tile=(128, 128), photometric="rgb", compression="zlib",
                         resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=None)
        paths.append(path)
    broken = d / "broken.tif"
    broken.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    torch.manual_seed(0)
    net = UNet(preset("tiny")).eval()
    with torch.no_grad():
        x = torch.from_numpy(render_region(3, 0, 0, 300, 200, width=300, height=200, mpp=0.5)[0])
        net.head.conv.bias -= net(x.permute(2, 0, 1)[None].float() / 255).median()
    return [paths[0], broken, *paths[1:]], save_checkpoint(d / "model.pt", net, mpp=0.5)


def _predict_rank(rank: int, world: int, port: int, out: str, argv: list[str]) -> None:
    """``gigaseg predict ...`` as rank ``rank`` of a torchrun job of ``world`` ranks."""
    from gigaseg.cli import main

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.save(main(argv), Path(out) / f"rank{rank}.pt")


def _outputs(out: Path) -> dict[str, Any]:
    """Every file of a prediction folder: bytes, or a summary's JSON without its time, timings and
    the folder's name."""
    import json

    files: dict[str, Any] = {}
    for p in sorted(out.iterdir()):
        if p.suffix == ".json":
            data = json.loads(p.read_text().replace(json.dumps(str(out))[1:-1], "OUT"))
            for key in ("time", "timings", "args"):
                data.pop(key, None)
            files[p.name] = data
        else:
            files[p.name] = p.read_bytes()
    return files


def test_predict_on_two_ranks_writes_each_slide_as_one_process_does(slides, tmp_path):
    """`torchrun --nproc-per-node 2 -m gigaseg predict ...`: the slides split between the ranks,
    the same bytes as one process, the corrupt slide failing alone, rank 0's report."""
    import multiprocessing

    import torch.multiprocessing as mp

    from gigaseg.cli import main

    paths, model = slides
    argv = ["predict", *map(str, paths), "--model", str(model), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 1  # one process (its threads); the corrupt slide fails
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    mp.start_processes(_predict_rank, args=(2, free_port(), str(tmp_path), [*argv, "--out", str(tmp_path / "two")]),
                       nprocs=2, join=True, start_method=method)
    assert [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)] == [1, 0]  # rank 0's status is the run's
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 3 * 4 + 1  # 4 outputs per good slide, the run's config
    for name in one:
        assert one[name] == two[name], name
    failures = two["predict-config.json"]["failures"]
    assert [f["slide"] for f in failures] == [str(paths[1])]
    from gigaseg.predict import shard_slides

    assert all(shard_slides(paths, 2))  # both ranks had slides


def test_shards_cover_the_list_once_and_match_one_process(slides, tmp_path):
    """`shard=(i, n)` (a SLURM job array's task i of n): the shares cover the list once."""
    from gigaseg import ConfigError
    from gigaseg.predict import predict_sharded, shard_slides

    paths, model = slides
    shares = shard_slides(paths, 3)
    assert sorted(i for share in shares for i in share) == list(range(len(paths)))
    assert shard_slides(paths, 3) == shares and all(share == sorted(share) for share in shares)
    done, failed = [], []
    for i in range(2):
        summaries, failures = predict_sharded(str(model), paths, tmp_path / "out", shard=(i, 2), progress=False)
        done += [s["slide"] for s in summaries]
        failed += [f for f, _ in failures]
    assert sorted(done) == sorted(map(str, paths[:1] + paths[2:])) and failed == [str(paths[1])]
    for bad in ((2, 2), (0, 0), "1/2"):
        with pytest.raises(ConfigError, match="shard"):
            predict_sharded(str(model), paths, tmp_path / "out", shard=bad)  # type: ignore[arg-type]
