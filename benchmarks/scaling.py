"""Naive vs tiled training steps from 4 megapixels to 1.024 gigapixels, in one run.

Runs ``gigaseg bench step`` in a fresh process per measurement (so each peak-memory figure is
that run's own), naive and tiled at 4, 16 and 64 MP, tiled only at 256 MP and 1.024 GP
(16000 x 64000, the paper's input size; naive would need ~80 GB), plus: the 64 MP step under a
400 MiB budget (where the memory ratio passes 10), three times alternately with naive, whose
peak moves between runs, and naive once more under glibc's default allocator; the 64 MP step
with the `bce` loss alone (one pass instead of Dice's two); and the 1.024 GP step under 4 GB
and 2 GB budgets. Up to 64 MP each figure is the median of 5 steps, naive and tiled alike.
Writes every JSON record to ``benchmarks/results.json`` and the tables to
``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/scaling.py            # the full run (~25 min on 2 cores)
    .venv/bin/python benchmarks/scaling.py --quick    # 4 and 16 MP only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {  # name: (height, width), aspect 1:4 like the paper's 16000 x 64000
    "4 MP": (1000, 4000),
    "16 MP": (2000, 8000),
    "64 MP": (4000, 16000),
    "256 MP": (8000, 32000),
    "1.024 GP": (16000, 64000),
}


def run_step(height: int, width: int, data_dir: Path, *extra: str, steps: int = 3, env: dict | None = None) -> dict:
    cmd = [
        sys.executable, "-m", "gigaseg.cli", "bench", "step", "--height", str(height), "--width", str(width),
        "--preset", "paper", "--steps", str(steps), "--warmup", "1", "--data-dir", str(data_dir), "--json", *extra,
    ]
    print("$", *(f"{k}={v}" for k, v in (env or {}).items()), " ".join(cmd[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return {"height": height, "width": width, "error": done.stderr.strip().splitlines()[-1:], "args": list(extra)}
    result = json.loads(done.stdout)
    result["args"] = list(extra)
    result["env"] = dict(env or {})
    print(
        f"  {result['mode']}: {result['seconds_per_step']:.2f} s/step, "
        f"peak anon {result['peak_anon_bytes'] / 2**30:.2f} GiB",
        file=sys.stderr, flush=True,
    )
    return result


def _budget_arg(record: dict) -> str:
    args = record.get("args", [])
    return args[args.index("--memory-budget") + 1] if "--memory-budget" in args else f"{record['memory_budget']} B"


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _row(naive: dict | None, tiled: dict | None) -> list[str]:
    both = naive is not None and tiled is not None
    budget = tiled and tiled.get("memory_budget")
    return [
        f"{naive['seconds_per_step']:.2f}" if naive else "-",
        f"{tiled['seconds_per_step']:.2f}" if tiled else "-",
        f"{naive['seconds_per_step'] / tiled['seconds_per_step']:.2f}" if both else "-",
        _gib(naive and naive["peak_anon_bytes"]),
        _gib(tiled and tiled["peak_anon_bytes"]),
        f"{naive['peak_anon_bytes'] / tiled['peak_anon_bytes']:.1f}" if both else "-",
        f"{tiled['tile'][0]} x {tiled['tile'][1]}" if tiled else "-",
        ("default (1 GiB)" if not budget else _budget_arg(tiled)) if tiled else "-",
        (tiled or naive).get("loss", "bce+dice"),
    ]


def _repeats_section(records: list[dict]) -> list[str]:
    """The 64 MP naive step and the 400 MiB tiled one, run alternately three times, and naive
    under glibc's default allocator: how much the naive peak moves between runs."""
    h, w = SIZES["64 MP"]
    ok = [r for r in records if r.get("height") == h and "error" not in r and r.get("loss", "bce+dice") == "bce+dice"]
    naive = [r for r in ok if r["mode"] == "naive" and not r.get("env")]
    tiled = [r for r in ok if r["mode"] == "tiled" and "400MiB" in r.get("args", [])]
    plain = [r for r in ok if r["mode"] == "naive" and r.get("env")]
    if len(naive) < 2 or len(tiled) < 2:
        return []
    lines = [
        "", "## 64 MP: naive and tiled (400 MiB budget), alternately, three times", "",
        "| run | naive s/step | tiled s/step | time naive/tiled | naive peak GiB | tiled peak GiB "
        "| memory naive/tiled |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (n, t) in enumerate(zip(naive, tiled), 1):
        lines.append("| " + " | ".join([str(i), *(_row(n, t)[:6])]) + " |")
    ns = statistics.median(r["seconds_per_step"] for r in naive)
    ts = statistics.median(r["seconds_per_step"] for r in tiled)
    nb = statistics.median(r["peak_anon_bytes"] for r in naive)
    tb = statistics.median(r["peak_anon_bytes"] for r in tiled)
    lines.append(f"| median | {ns:.2f} | {ts:.2f} | {ns / ts:.2f} | {_gib(nb)} | {_gib(tb)} | {nb / tb:.1f} |")
    for r in plain:
        lines += ["", f"Naive with {', '.join(f'`{k}={v}`' for k, v in r['env'].items())} (glibc's default "
                  f"allocator, which hands large blocks back to the system at once): "
                  f"{r['seconds_per_step']:.2f} s per step, peak {_gib(r['peak_anon_bytes'])} GiB."]
    return lines


def write_markdown(records: list[dict], path: Path) -> None:
    machine = next((r for r in records if "cpu" in r), {})
    lines = [
        "# Scaling: naive vs tiled training steps",
        "",
        "One training step (forward, loss (`bce+dice` unless the row says otherwise), backward, Adam step) of the "
        "`paper` preset",
        "(4,492 parameters) on a synthetic uint8 image memory-mapped from disk, batch size 1.",
        "Naive = whole-image autograd; tiled = `gigaseg.tiled_backward` (exact). Time is the",
        "median of 5 steps after 1 warm-up step up to 64 MP (3 at 256 MP, 1 at 1.024 GP); memory is the peak anonymous",
        "memory (RssAnon, sampled every 20 ms) of a fresh process, which excludes the memory-mapped",
        "input in the page cache. Made by `python benchmarks/scaling.py`.",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores, "
        f"{_gib(machine.get('memory_bytes'))} GiB RAM, torch {machine.get('torch_version', '?')} "
        f"({machine.get('threads', '?')} threads), device {machine.get('device', '?')}.",
        "",
        "| size | pixels | naive s/step | tiled s/step | time naive/tiled | naive peak GiB | tiled peak GiB "
        "| memory naive/tiled | tiled tile | budget | loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (h, w) in SIZES.items():
        for loss in ("bce+dice", "bce", "dice"):
            runs = [r for r in records if r.get("height") == h and "error" not in r
                    and r.get("loss", "bce+dice") == loss and not r.get("env") and not r.get("repeat")]
            naive = next((r for r in runs if r["mode"] == "naive"), None)
            for tiled in [r for r in runs if r["mode"] == "tiled"] or ([None] if naive else []):
                lines.append("| " + " | ".join([name, f"{h} x {w}", *_row(naive, tiled)]) + " |")
    lines += _repeats_section(records)
    errors = [r for r in records if "error" in r]
    if errors:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {r['height']} x {r['width']} {r['args']}: {r['error']}" for r in errors]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only 4 and 16 MP")
    parser.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md and results.json go")
    args = parser.parse_args()
    sizes = dict(list(SIZES.items())[:2]) if args.quick else SIZES
    records = []
    scratch = Path(tempfile.mkdtemp(prefix="gigaseg-scaling-"))
    try:
        for h, w in sizes.values():
            data = scratch / f"{h}x{w}"
            steps = 1 if h * w >= 1e9 else 3 if h * w > 64e6 else 5
            if h * w <= 64e6:
                records.append(run_step(h, w, data, "--naive", steps=steps))
            records.append(run_step(h, w, data, steps=steps))
            if h * w == 64e6:
                # the budget at which the memory ratio passes 10
                records.append(run_step(h, w, data, "--memory-budget", "400MiB", steps=steps))
                # without Dice's extra forward pass: what the halo alone costs against naive
                records.append(run_step(h, w, data, "--naive", "--loss", "bce", steps=steps))
                records.append(run_step(h, w, data, "--loss", "bce", steps=steps))
                # naive's peak moves from run to run: two more alternating pairs, and naive
                # under glibc's default allocator (NOTE [Heap reuse])
                for repeat in (1, 2):
                    for extra in (("--naive",), ("--memory-budget", "400MiB")):
                        records.append(dict(run_step(h, w, data, *extra, steps=steps), repeat=repeat))
                records.append(run_step(h, w, data, "--naive", steps=steps, env={"GIGASEG_NO_HEAP_REUSE": "1"}))
            if h * w >= 1e9:
                records.append(run_step(h, w, data, "--memory-budget", "4GB", steps=steps))
                records.append(run_step(h, w, data, "--memory-budget", "2GB", steps=steps))
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    write_markdown(records, args.out / "RESULTS.md")
    print((args.out / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
