"""One training step over 1 process x 2 threads against 2 processes x 1 thread, and a scaling model.

Side by side in one run, alternating, at 64 MP (4000 x 16000) and 256 MP (8000 x 32000) synthetic
regions (``gigaseg bench step``'s blob images, memory-mapped from disk), the `paper` preset,
`bce+dice`, Adam, the default memory budget:

- ``1x2``: one process with 2 threads (``tiled_backward`` as ``gigaseg train`` runs it alone);
- ``2x1``: ``torchrun --standalone --nproc-per-node 2``, one thread each, gloo, the two ranks
  sharing each step's tiles (``tiled_backward(..., group=WORLD)`` with the RankWatch that
  ``gigaseg train`` starts under torchrun).

Each measurement is a fresh process (or pair); a step's time is the slowest rank's, the ranks
starting together. Per rank: the step time, peak anonymous memory (RssAnon), bytes all-reduced
per step, and the time in collectives (per collective: what the rank that arrived last spent, the
cost of the exchange itself; the rest of the others' wait is load imbalance). The 2-rank run also
times watched all-reduces of 8 B to 4 MiB, for the latency + bandwidth model.

Then a scaling model of a 1.024 GP (16000 x 64000) step on 1-64 nodes from these numbers: the
planner's tiles (crop pixels, halo included) for several memory budgets, split by cost
(``split_by_cost``) between the ranks, a per-tile + per-crop-pixel cost fitted to the measured
ranks, and the step's collectives from the fitted all-reduce cost plus the store's round trips,
against ideal scaling; and the same on H100 GPUs from ``benchmarks/gpu/h100_gpu_check.json``.

    .venv/bin/python benchmarks/distributed.py                 # 64 and 256 MP, ~15 min on 2 quiet cores
    .venv/bin/python benchmarks/distributed.py --sizes small   # 1 and 4 MP: checks the script, not figures
    .venv/bin/python benchmarks/distributed.py --model-only benchmarks/distributed/run.json
    .venv/bin/python benchmarks/distributed.py --geometry      # tiles and shares alone, no timing

Writes ``run.json`` (every measurement), ``model.json`` and ``tables.md`` to ``--out``
(default ``benchmarks/distributed/``; ``--sizes small`` writes to ``benchmarks/distributed/small/``).
Timings on a machine that other jobs load are not figures: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = {"64 MP": (4000, 16000), "256 MP": (8000, 32000), "1 MP": (500, 2000), "4 MP": (1000, 4000)}
SIZE_SETS = {"default": ["64 MP", "256 MP"], "small": ["1 MP", "4 MP"]}
GP = (16000, 64000)  # the 1.024 GP step of the scaling model
PRESET = "paper"
LOSS = "bce+dice"
MICRO_BYTES = [8, 96, 2**10, 2**14, 2**16, 2**18, 2**20, 2**22]


# --- one measurement (run in the measured process: alone, or as a torchrun rank) --------------------


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from gigaseg import UNet, preset, tiled_backward
    from gigaseg._memory import MemorySampler, trim_heap
    from gigaseg.engine import plan, split_by_cost
    from gigaseg.engine.tiles import _tile_list
    from gigaseg.engine.watch import RankWatch, all_reduce, barrier

    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    watch = None
    if world > 1:
        dist.init_process_group("gloo")
        watch = RankWatch().start()
    rank = dist.get_rank() if world > 1 else 0
    image = np.load(Path(args.data) / "image.npy", mmap_mode="r")
    mask = np.load(Path(args.data) / "mask.npy", mmap_mode="r")
    height, width = mask.shape
    config = preset(PRESET)
    torch.manual_seed(0)
    model = UNet(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    the_plan = plan(config, height, width, device="cpu", ranks=world)  # as tiled_backward plans it
    tiles = _tile_list(height, width, *the_plan.tile, config)
    costs = [(t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in tiles]
    mine = split_by_cost(costs, world)[rank]
    steps: list[dict[str, Any]] = []
    group = dist.group.WORLD if world > 1 else None
    trim_heap()
    with MemorySampler(0.02) as mem:
        for i in range(args.warmup + args.steps):
            if watch is not None:
                barrier(what="starting a step")  # the ranks start together: the step is the slowest's
                watch.trace, watch.bytes = [], 0
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = tiled_backward(model, image, mask, loss=LOSS, memory_budget=None, group=group)
            optimizer.step()
            seconds = time.perf_counter() - t0
            if i >= args.warmup:
                row: dict[str, Any] = {"seconds": seconds, "loss": loss}
                if watch is not None and watch.trace is not None:
                    row["collectives"] = [{"what": w, "wait_s": a, "op_s": b, "bytes": n} for w, a, b, n in watch.trace]
                    row["bytes_all_reduced"] = watch.bytes
                steps.append(row)
    result: dict[str, Any] = {
        "rank": rank, "world": world, "threads": args.threads, "height": height, "width": width,
        "tile": list(the_plan.tile), "n_tiles": len(tiles), "crop_pixels": sum(costs),
        "rank_tiles": len(mine), "rank_crop_pixels": sum(costs[i] for i in mine),
        "steps": steps, "peak_anon_bytes": mem.peak,
    }
    if watch is not None:
        watch.trace = None
        micro = []
        for nbytes in MICRO_BYTES:
            t = torch.zeros(max(nbytes // 8, 1), dtype=torch.float64)
            times = []
            for _ in range(args.micro_reps):
                barrier(what="timing all-reduces")
                t0 = time.perf_counter()
                all_reduce(t, what="timing all-reduces")
                times.append(time.perf_counter() - t0)
            plain = []
            for _ in range(args.micro_reps):
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(t)
                plain.append(time.perf_counter() - t0)
            micro.append({"bytes": t.numel() * 8, "watched_s": statistics.median(times),
                          "plain_s": statistics.median(plain)})
        result["all_reduce"] = micro
        watch.close()
        dist.destroy_process_group()
    Path(args.result).with_name(f"{Path(args.result).stem}.rank{rank}.json").write_text(json.dumps(result))


# --- the side-by-side run ---------------------------------------------------------------------------


def _load_average() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def measure(mode: str, data: Path, scratch: Path, args: argparse.Namespace, tag: str) -> list[dict[str, Any]]:
    """One measurement of ``mode`` ("1x2" or "2x1"); each rank's result."""
    procs, threads = (1, 2) if mode == "1x2" else (2, 1)
    result = scratch / f"{tag}.json"
    me = [str(Path(__file__).resolve()), "--worker", "--data", str(data), "--threads", str(threads),
          "--steps", str(args.steps), "--warmup", str(args.warmup), "--micro-reps", str(args.micro_reps),
          "--result", str(result)]
    launcher = [] if procs == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GIGASEG_DIST_TIMEOUT": "600"}
    print(f"$ OMP_NUM_THREADS={threads} python {' '.join(launcher + me)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *launcher, *me], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
    ranks = [json.loads(result.with_name(f"{result.stem}.rank{r}.json").read_text()) for r in range(procs)]
    for r in ranks:
        r["mode"], r["wall_s"], r["load_average"] = mode, time.perf_counter() - t0, _load_average()
    step = statistics.median(max(r["steps"][i]["seconds"] for r in ranks) for i in range(args.steps))
    peaks = ", ".join(f"{r['peak_anon_bytes'] / 2**30:.2f}" for r in ranks)
    print(f"  {mode}: {step:.2f} s/step, peak anon per rank {peaks} GiB", file=sys.stderr, flush=True)
    return ranks


def summarize(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement's figures: the step (slowest rank), memory, bytes and collectives."""
    n = len(ranks[0]["steps"])
    step_s = [max(r["steps"][i]["seconds"] for r in ranks) for i in range(n)]
    out: dict[str, Any] = {
        "mode": ranks[0]["mode"], "seconds_per_step": statistics.median(step_s), "step_seconds": step_s,
        "peak_anon_bytes": [r["peak_anon_bytes"] for r in ranks], "tile": ranks[0]["tile"],
        "n_tiles": ranks[0]["n_tiles"], "rank_crop_pixels": [r["rank_crop_pixels"] for r in ranks],
        "load_average": ranks[0]["load_average"],
    }
    if len(ranks) > 1:
        # per collective: the rank that arrived last waited only for the store; its wait + the
        # operation is the exchange's cost; what the others waited beyond that is load imbalance
        cost, imbalance, count = [], [], []
        for i in range(n):
            traces = [r["steps"][i]["collectives"] for r in ranks]
            c = sum(min(t[k]["wait_s"] + t[k]["op_s"] for t in traces) for k in range(len(traces[0])))
            worst = sum(max(t[k]["wait_s"] + t[k]["op_s"] for t in traces) for k in range(len(traces[0])))
            cost.append(c)
            imbalance.append(worst - c)
            count.append(len(traces[0]))
        out.update({
            "bytes_all_reduced_per_step": ranks[0]["steps"][0]["bytes_all_reduced"],
            "collectives_per_step": count[0],
            "collective_seconds_per_step": statistics.median(cost),
            "collective_fraction": statistics.median(c / s for c, s in zip(cost, step_s)),
            "imbalance_seconds_per_step": statistics.median(imbalance),
            "all_reduce": ranks[0]["all_reduce"],
        })
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gigaseg._runinfo import machine_info
    from gigaseg.bench.step import make_synthetic_arrays

    sizes = SIZE_SETS.get(args.sizes) or [s.strip() for s in args.sizes.split(",")]
    record: dict[str, Any] = {"benchmark": "distributed", "preset": PRESET, "loss": LOSS, "steps": args.steps,
                              "warmup": args.warmup, "repeats": args.repeats, "load_average_start": _load_average(),
                              "commit": _commit(), **machine_info(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="gigaseg-dist-bench-", dir=args.scratch) as tmp:
        scratch = Path(tmp)
        for name in sizes:
            height, width = SIZES[name]
            data = scratch / name.replace(" ", "")
            make_synthetic_arrays(data, height, width, seed=0)
            runs: dict[str, list] = {"1x2": [], "2x1": []}
            for repeat in range(args.repeats):  # alternating, the order swapped every repeat
                for mode in (("1x2", "2x1") if repeat % 2 == 0 else ("2x1", "1x2")):
                    print(f"{name}, repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
                    ranks = measure(mode, data, scratch, args, f"{name.replace(' ', '')}-{mode}-{repeat}")
                    runs[mode].append({"summary": summarize(ranks), "ranks": ranks})
            record["sizes"][name] = {"height": height, "width": width, "runs": runs}
    record["load_average_end"] = _load_average()
    return record


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True).stdout.strip() or None
    except OSError:
        return None


# --- the scaling model ------------------------------------------------------------------------------


def _fit_all_reduce(micro: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """(alpha seconds, beta seconds per byte) of time = alpha + beta * bytes, least squares."""
    xs, ys = [m["bytes"] for m in micro], [m[key] for m in micro]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    beta = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    beta = max(beta, 0.0)
    return max(my - beta * mx, 0.0), beta


def _fit_tiles(points: list[tuple[int, int, float]]) -> tuple[float, float]:
    """(seconds per tile, seconds per crop pixel) from (tiles, crop pixels, seconds), least squares
    through the origin; the per-tile part is left out (0) when it comes out negative or the points
    cannot separate it."""
    a11 = sum(n * n for n, _, _ in points)
    a12 = sum(n * c for n, c, _ in points)
    a22 = sum(c * c for _, c, _ in points)
    b1 = sum(n * s for n, _, s in points)
    b2 = sum(c * s for _, c, s in points)
    det = a11 * a22 - a12 * a12
    if det > 1e-9 * a11 * a22:
        per_tile, per_pixel = (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det
        if per_tile >= 0 and per_pixel > 0:
            return per_tile, per_pixel
    return 0.0, b2 / a22


def _tiles_of(tile: tuple[int, int]) -> list[int]:
    """The crop pixels of each tile of the 1.024 GP step."""
    from gigaseg import preset
    from gigaseg.engine.tiles import _tile_list

    return [(t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in _tile_list(*GP, *tile, preset(PRESET))]


def _planned(budget: str | None, device: str, ranks: int) -> tuple[int, int]:
    """The tile the engine plans for the 1.024 GP step on ``ranks`` ranks (NOTE [Balanced tiles])."""
    from gigaseg import preset
    from gigaseg.engine import plan

    th, tw = plan(preset(PRESET), *GP, memory_budget=budget, device=device, ranks=ranks).tile
    return th, tw


def _step_model(costs: list[int], ranks: int, per_tile: float, per_pixel: float, collective_s: float
                ) -> dict[str, Any]:
    from gigaseg.engine import split_by_cost

    shares = split_by_cost(costs, ranks)
    loads = [len(s) * per_tile + sum(costs[i] for i in s) * per_pixel for s in shares]
    compute = max(loads)
    return {"compute_s": compute, "collective_s": collective_s, "seconds": compute + collective_s,
            "balance": statistics.fmean(loads) / compute if compute else 1.0,
            "max_tiles_per_rank": max(len(s) for s in shares), "idle_ranks": sum(1 for s in shares if not s)}


def _collectives(ranks: int, n_coll: int, grad_bytes: int, alpha: float, beta: float, store_rtt: float) -> float:
    """A step's exchanges on ``ranks``: each waits for the store (a round trip, and half the
    polling interval at the most), then all-reduces (recursive doubling: 2 log2(P) latencies, and
    about 2 x its bytes of bandwidth); one of them carries the gradients."""
    if ranks == 1:
        return 0.0
    poll = max(0.0005, 0.0001 * ranks) / 2  # gigaseg.engine.watch's polling interval, half of it on average
    hops = 2 * math.ceil(math.log2(ranks))
    small = n_coll - 1
    return (n_coll * (2 * store_rtt + poll) + small * (hops * alpha + 2 * 96 * beta)
            + hops * alpha + 2 * grad_bytes * beta)


def scaling_model(record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A 1.024 GP step on 1-64 nodes (CPU, from ``record``) and 1-64 H100 GPUs (benchmarks/gpu)."""
    from gigaseg import UNet, preset
    from gigaseg.model import count_parameters

    grad_bytes = 4 * count_parameters(UNet(preset(PRESET)))
    # CPU: per rank (one thread), time = tiles * t0 + crop pixels * c, fitted to every 2x1 rank's steps
    points, micro, n_coll = [], None, 5
    for size in record["sizes"].values():
        for run in size["runs"]["2x1"]:
            for r in run["ranks"]:
                for s in r["steps"]:
                    coll = sum(c["wait_s"] + c["op_s"] for c in s.get("collectives", []))
                    points.append((r["rank_tiles"], r["rank_crop_pixels"], s["seconds"] - coll))
            micro = run["summary"]["all_reduce"]
            n_coll = run["summary"]["collectives_per_step"]
    if not points or micro is None:
        raise SystemExit("the record holds no 2x1 measurement to build the model from")
    per_tile, per_pixel = _fit_tiles(points)
    alpha_local, beta_local = _fit_all_reduce(micro, "plain_s")
    store_local = max(statistics.fmean(m["watched_s"] - m["plain_s"] for m in micro) / 2, 0.0)
    net_alpha, net_beta = args.net_latency_us * 1e-6, 8 / (args.net_gbps * 1e9)
    cores = args.cores_per_node
    budgets = {"1 GiB (default)": None, "512 MiB": "512MiB", "2 GiB": "2GiB", "4 GiB": "4GiB"}
    nodes = [1, 2, 4, 8, 16, 32, 64]
    cpu_rows = []
    one = None
    for n in nodes:
        ranks = n * cores
        alpha = alpha_local if n == 1 else net_alpha
        beta = beta_local if n == 1 else net_beta
        store = store_local if n == 1 else net_alpha
        coll = _collectives(ranks, n_coll, grad_bytes, alpha, beta, store)
        tile_of = {name: _planned(b, "cpu", ranks) for name, b in budgets.items()}
        options = {name: _step_model(_tiles_of(t), ranks, per_tile, per_pixel, coll) for name, t in tile_of.items()}
        best = min(options, key=lambda k: options[k]["seconds"])
        row = {"nodes": n, "ranks": ranks, "budget": best, "tile": list(tile_of[best]), **options[best],
               "by_budget": {k: round(v["seconds"], 3) for k, v in options.items()}}
        one = one or row["seconds"]
        row["ideal_s"] = one / n
        row["efficiency"] = one / (n * row["seconds"])
        cpu_rows.append(row)
    gpu_rows = _gpu_model(args, n_coll, grad_bytes)
    return {"cpu": {"per_tile_s": per_tile, "per_crop_pixel_s": per_pixel, "cores_per_node": cores,
                    "all_reduce_local": {"alpha_s": alpha_local, "beta_s_per_byte": beta_local},
                    "store_round_trip_local_s": store_local,
                    "network_assumed": {"latency_us": args.net_latency_us, "gbps": args.net_gbps},
                    "rows": cpu_rows},
            "gpu": gpu_rows, "grad_bytes": grad_bytes, "collectives_per_step": n_coll}


def _gpu_model(args: argparse.Namespace, n_coll: int, grad_bytes: int) -> dict[str, Any]:
    """1.024 GP steps on H100s: per tile + per crop pixel fitted to the two whole-GP steps of
    h100_gpu_check.json (tiles of 2144 and 4928); NCCL and the store assumed (``--gpu-*``)."""
    path = HERE / "gpu" / "h100_gpu_check.json"
    steps = [s for s in json.loads(path.read_text())["steps"]
             if (s.get("height"), s.get("width")) == GP and s.get("tile") and s["tile"][0] <= 4928]
    points = []
    for s in steps:
        costs = _tiles_of((s["tile"][0], s["tile"][1]))
        points.append((len(costs), sum(costs), s["seconds_per_step"]))
    per_tile, per_pixel = _fit_tiles(points)
    alpha, beta = args.gpu_latency_us * 1e-6, 8 / (args.gpu_gbps * 1e9)
    store = args.net_latency_us * 1e-6
    budgets = {"1 GiB (default)": None, "2 GB": "2GB", "4 GB": "4GB"}  # the crop cap keeps cuDNN's fast step
    rows, one = [], None
    for gpus in [1, 2, 4, 8, 16, 32, 64]:
        coll = _collectives(gpus, n_coll, grad_bytes, alpha, beta, store)
        tile_of = {name: _planned(b, "cuda", gpus) for name, b in budgets.items()}
        options = {name: _step_model(_tiles_of(t), gpus, per_tile, per_pixel, coll) for name, t in tile_of.items()}
        best = min(options, key=lambda k: options[k]["seconds"])
        row = {"gpus": gpus, "budget": best, "tile": list(tile_of[best]), **options[best]}
        one = one or row["seconds"]
        row["ideal_s"] = one / gpus
        row["efficiency"] = one / (gpus * row["seconds"])
        rows.append(row)
    return {"source": str(path.relative_to(HERE.parent)), "fit_points": points, "per_tile_s": per_tile,
            "per_crop_pixel_s": per_pixel, "nccl_assumed": {"latency_us": args.gpu_latency_us, "gbps": args.gpu_gbps},
            "rows": rows}


def geometry() -> str:
    """The planner's tiles for a 1.024 GP step on N ranks and their split, without any timing:
    tiles, the largest share's crop pixels against pixels / N (halo recomputed, imbalance)."""
    from gigaseg.engine import split_by_cost

    lines = ["| ranks | device, budget | tile | tiles | crop pixels / pixels | largest share / (pixels / N) |",
             "|---|---|---|---|---|---|"]
    pixels = GP[0] * GP[1]
    for device, budget, label in (("cpu", None, "CPU, 1 GiB (default)"), ("cpu", "4GiB", "CPU, 4 GiB"),
                                  ("cuda", "4GB", "CUDA, 4 GB")):
        for ranks in (1, 2, 4, 8, 16, 32, 64, 128):
            tile = _planned(budget, device, ranks)
            costs = _tiles_of(tile)
            largest = max(sum(costs[i] for i in part) for part in split_by_cost(costs, ranks))
            lines.append(f"| {ranks} | {label} | {tile[0]} x {tile[1]} | {len(costs)} | {sum(costs) / pixels:.3f} | "
                         f"{largest / (pixels / ranks):.3f} |")
    return "\n".join(lines) + "\n"


# --- tables ------------------------------------------------------------------------------------------


def tables(record: dict[str, Any], model: dict[str, Any]) -> str:
    lines = [f"Measured at commit {record.get('commit')}, load average {record.get('load_average_start')} at the "
             f"start and {record.get('load_average_end')} at the end; {record['steps']} timed steps after "
             f"{record['warmup']} warm-up, {record['repeats']} alternating repeat(s), medians.", "",
             "| region | mode | s/step | 2x1 / 1x2 | peak anon per rank (GiB) | bytes all-reduced per step "
             "| collectives per step (s) | share of the step | imbalance (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, size in record["sizes"].items():
        base = statistics.median(r["summary"]["seconds_per_step"] for r in size["runs"]["1x2"])
        for mode in ("1x2", "2x1"):
            runs = [r["summary"] for r in size["runs"][mode]]
            step = statistics.median(r["seconds_per_step"] for r in runs)
            peak = ", ".join(f"{max(r['peak_anon_bytes'][k] for r in runs) / 2**30:.2f}"
                             for k in range(len(runs[0]["peak_anon_bytes"])))
            if mode == "2x1":
                coll = statistics.median(r["collective_seconds_per_step"] for r in runs)
                frac = statistics.median(r["collective_fraction"] for r in runs)
                imb = statistics.median(r["imbalance_seconds_per_step"] for r in runs)
                extra = [f"{runs[0]['bytes_all_reduced_per_step']:,}", f"{coll:.4f}", f"{100 * frac:.2f}%",
                         f"{imb:.3f}"]
            else:
                extra = ["-", "-", "-", "-"]
            lines.append(f"| {name} | {mode} | {step:.2f} | {step / base:.2f} | {peak} | " + " | ".join(extra) + " |")
    cpu = model["cpu"]
    lines += ["", f"Scaling model, 1.024 GP step, CPU nodes of {cpu['cores_per_node']} one-thread ranks "
              f"({cpu['per_crop_pixel_s'] * 1e9:.2f} ns per crop pixel, {cpu['per_tile_s']:.3f} s per tile, "
              f"network {cpu['network_assumed']['latency_us']} us / {cpu['network_assumed']['gbps']} Gb/s "
              "assumed):", "",
              "| nodes | ranks | budget (tile) | s/step | ideal | efficiency | balance | collectives (s) "
              "| most tiles on a rank | idle ranks |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in cpu["rows"]:
        lines.append(f"| {r['nodes']} | {r['ranks']} | {r['budget']} ({r['tile'][0]} x {r['tile'][1]}) | "
                     f"{r['seconds']:.2f} | "
                     f"{r['ideal_s']:.2f} | {100 * r['efficiency']:.0f}% | {100 * r['balance']:.0f}% | "
                     f"{r['collective_s']:.4f} | {r['max_tiles_per_rank']} | {r['idle_ranks']} |")
    gpu = model["gpu"]
    lines += ["", f"The same on H100 GPUs (one rank each; {gpu['per_crop_pixel_s'] * 1e12:.1f} ps per crop pixel, "
              f"{gpu['per_tile_s'] * 1e3:.1f} ms per tile from {gpu['source']}; NCCL "
              f"{gpu['nccl_assumed']['latency_us']} us / {gpu['nccl_assumed']['gbps']} Gb/s assumed):", "",
              "| GPUs | budget (tile) | s/step | ideal | efficiency | balance | collectives (s) | most tiles on a GPU "
              "| idle |", "|---|---|---|---|---|---|---|---|---|"]
    for r in gpu["rows"]:
        lines.append(f"| {r['gpus']} | {r['budget']} ({r['tile'][0]} x {r['tile'][1]}) | {r['seconds']:.3f} | "
                     f"{r['ideal_s']:.3f} | "
                     f"{100 * r['efficiency']:.0f}% | {100 * r['balance']:.0f}% | {r['collective_s']:.4f} | "
                     f"{r['max_tiles_per_rank']} | {r['idle_ranks']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="default", help="default (64 and 256 MP), small (1 and 4 MP), or names")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each mode")
    parser.add_argument("--micro-reps", type=int, default=20, help="all-reduces timed per size")
    parser.add_argument("--out", default=None, help="folder for run.json, model.json, tables.md")
    parser.add_argument("--scratch", default=None, help="folder for the synthetic regions (default: the temp dir)")
    parser.add_argument("--model-only", default=None, metavar="RUN_JSON", help="rebuild the model from a run.json")
    parser.add_argument("--geometry", action="store_true",
                        help="print the planner's tiles and shares of a 1.024 GP step on 1-128 ranks (no timing)")
    parser.add_argument("--cores-per-node", type=int, default=2, help="one-thread ranks per CPU node in the model")
    parser.add_argument("--net-latency-us", type=float, default=50.0, help="assumed network latency between nodes")
    parser.add_argument("--net-gbps", type=float, default=10.0, help="assumed network bandwidth between nodes")
    parser.add_argument("--gpu-latency-us", type=float, default=15.0, help="assumed NCCL all-reduce latency step")
    parser.add_argument("--gpu-gbps", type=float, default=200.0, help="assumed NCCL bandwidth")
    # a measured process (run by this script)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.geometry:
        print(geometry(), end="")
        return
    out = Path(args.out) if args.out else HERE / "distributed" / ("small" if args.sizes == "small" else "")
    out.mkdir(parents=True, exist_ok=True)
    if args.model_only:
        record = json.loads(Path(args.model_only).read_text())
    else:
        record = run(args)
        (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    model = scaling_model(record, args)
    (out / "model.json").write_text(json.dumps(model, indent=1) + "\n")
    text = tables(record, model)
    (out / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
