"""Prediction and training speed of two trees side by side: an older revision and this checkout.

Checks out ``--before`` (a git revision; default d209bc6, before the subpackages and the one
prediction path) into a temporary git worktree, then runs, in rounds, each command in a fresh
process of the same Python for the before tree and for this checkout ("after", its working
tree, uncommitted changes included), alternating before / after so that the machine's drift
falls on both alike. The commands (the ``gigaseg`` command of each tree, through
``python -c 'from gigaseg.cli import main; ...'`` with ``PYTHONPATH=<tree>/src``):

- ``gigaseg bench predict --size HxW --slide S --json``: whole-slide prediction of one
  synthetic slide S (written once, before the rounds, and read by both trees);
- ``gigaseg bench step --height H --width W --json``: a training step of the paper model.

Each process checks that ``gigaseg`` came from its tree (``gigaseg.__file__``, recorded). Before
the rounds each tree runs each command once at a small size, unrecorded in the table, so that
numba's on-disk kernel cache of the new worktree is filled and no timed run compiles. Writes
every run (tree, revision, command, seconds, throughput, peak memory of the benchmark and of the
whole child process) to ``benchmarks/layout/before_after.json`` and prints a table.

    .venv/bin/python benchmarks/before_after.py                      # 2 rounds, full sizes
    .venv/bin/python benchmarks/before_after.py --rounds 3 --before HEAD~5
    .venv/bin/python benchmarks/before_after.py --predict-size 1024x2048 --step-size 512x512 \\
        --rounds 1 --out /tmp/ba.json                                # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "layout" / "before_after.json"

# Runs the tree's CLI in-process after saying where gigaseg was imported from.
RUNNER = (
    "import sys, gigaseg\n"
    "sys.stderr.write('BEFORE_AFTER_GIGASEG_FILE=' + gigaseg.__file__ + '\\n'); sys.stderr.flush()\n"
    "from gigaseg.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 16000x64000, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def run_cli(tree: dict, argv: list[str], *, env_extra: dict | None = None) -> dict:
    """Run ``gigaseg ARGV`` of ``tree`` in a fresh process; the parsed JSON plus what the process cost."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree["src"])
    env.update(env_extra or {})
    cmd = [sys.executable, "-c", RUNNER, *argv]
    print(f"$ [{tree['name']}] gigaseg {' '.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    record: dict = {
        "tree": tree["name"],
        "rev": tree["rev"],
        "src": str(tree["src"]),
        "command": ["gigaseg", *argv],
        "process_wall_s": round(wall, 2),
        "process_max_rss_MiB": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "returncode": proc.returncode,
    }
    found = [line.split("=", 1)[1] for line in stderr.splitlines() if line.startswith("BEFORE_AFTER_GIGASEG_FILE=")]
    record["gigaseg_file"] = found[0] if found else None
    if not found or not Path(found[0]).resolve().is_relative_to(Path(tree["src"]).resolve()):
        raise SystemExit(f"gigaseg came from {record['gigaseg_file']}, not from {tree['src']}:\n{stderr[-2000:]}")
    if proc.returncode != 0:
        raise SystemExit(f"gigaseg {' '.join(argv)} failed in the {tree['name']} tree:\n{stderr[-3000:]}")
    start = stdout.find("{")
    record["result"] = json.loads(stdout[start:]) if start >= 0 else None
    return record


def _predict_summary(r: dict) -> dict:
    res = r["result"]
    return {"seconds": res.get("total_s"), "MPps_end_to_end": res.get("MPps_end_to_end"),
            "MPps_model": res.get("MPps_model"), "peak_rss_GiB": res.get("peak_rss_GiB"),
            "peak_anon_GiB": res.get("peak_anon_GiB")}


def _step_summary(r: dict) -> dict:
    res = r["result"]
    s, mpps = res.get("seconds_per_step"), res.get("megapixels_per_second")
    rss, anon = res.get("peak_rss_bytes"), res.get("peak_anon_bytes")
    return {"seconds": round(s, 3) if s else None, "MPps": round(mpps, 2) if mpps else None,
            "peak_rss_GiB": round(rss / 2**30, 3) if rss else None,
            "peak_anon_GiB": round(anon / 2**30, 3) if anon else None}


SUMMARIES = {"predict": _predict_summary, "step": _step_summary}


def print_table(runs: list[dict]) -> None:
    timed = [r for r in runs if not r.get("warmup")]
    for bench in ("predict", "step"):
        rows = [r for r in timed if r["bench"] == bench]
        if not rows:
            continue
        keys = list(rows[0]["summary"])
        print(f"\n{bench}: {' '.join(rows[0]['command'][1:])}")
        print("| round | tree | rev | " + " | ".join(keys) + " | process max RSS MiB |")
        print("|---" * (len(keys) + 4) + "|")
        for r in rows:
            vals = " | ".join(str(r["summary"][k]) for k in keys)
            print(f"| {r['round']} | {r['tree']} | {r['rev'][:9]} | {vals} | {r['process_max_rss_MiB']} |")
        med = {}
        for tree in ("before", "after"):
            sel = [r["summary"] for r in rows if r["tree"] == tree]
            med[tree] = {k: statistics.median(v[k] for v in sel if v[k] is not None) if any(
                v[k] is not None for v in sel) else None for k in keys}
            print(f"| median | {tree} | | " + " | ".join(
                f"{med[tree][k]:.3g}" if med[tree][k] is not None else "-" for k in keys) + " | |")
        ratio = {k: (med["after"][k] / med["before"][k]) if med["after"][k] and med["before"][k] else None
                 for k in keys}
        print("| after / before | | | " + " | ".join(
            f"{ratio[k]:.3f}" if ratio[k] is not None else "-" for k in keys) + " | |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--before", default="d209bc6", help="git revision of the before tree")
    p.add_argument("--rounds", type=int, default=2, help="before/after pairs of each command")
    p.add_argument("--predict-size", type=_size, default=(16000, 64000), metavar="HxW",
                   help="synthetic slide for gigaseg bench predict (level 0 = model resolution)")
    p.add_argument("--step-size", type=_size, default=(8000, 8000), metavar="HxW",
                   help="image of gigaseg bench step (8000x8000: a 64 MP training step)")
    p.add_argument("--benches", default="predict,step", help="which commands, comma-separated")
    p.add_argument("--warmup-size", type=_size, default=(512, 1024), metavar="HxW",
                   help="size of the untimed first run of each command in each tree (fills numba's cache)")
    p.add_argument("--scratch", default=None, help="folder for the worktree, slide and images (default: TMPDIR)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON written here")
    args = p.parse_args(argv)
    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    if not benches or any(b not in SUMMARIES for b in benches):
        p.error(f"--benches takes a comma-separated subset of {', '.join(SUMMARIES)}, got {args.benches!r}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    before_rev = _git("rev-parse", args.before)
    after_rev = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "src"))
    scratch = Path(tempfile.mkdtemp(prefix="gigaseg-before-after-", dir=args.scratch))
    worktree = scratch / "before"
    runs: list[dict] = []
    try:
        _git("worktree", "add", "--detach", str(worktree), before_rev)
        trees = [
            {"name": "before", "rev": before_rev, "src": worktree / "src"},
            {"name": "after", "rev": after_rev + ("+working-tree" if dirty else ""), "src": ROOT / "src"},
        ]
        ph, pw = args.predict_size
        sh, sw = args.step_size
        slide = scratch / f"slide-{ph}x{pw}.tiff"
        commands = {
            "predict": lambda tree, size=None: ["bench", "predict", "--size", f"{ph}x{pw}", "--slide", str(slide),
                                                "--dir", str(scratch), "--json"]
            if size is None else ["bench", "predict", "--size", f"{size[0]}x{size[1]}", "--dir", str(scratch),
                                  "--json"],
            "step": lambda tree, size=None: ["bench", "step", "--height", str((size or (sh, sw))[0]), "--width",
                                             str((size or (sh, sw))[1]), "--data-dir",
                                             str(scratch / f"step-data-{tree['name']}"), "--json"],
        }
        if "predict" in benches:  # one slide for both trees, written by this checkout
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            code = ("import sys; from gigaseg.synth import write_slide; "
                    "write_slide(sys.argv[1], width=int(sys.argv[2]), height=int(sys.argv[3]), seed=0, mpp=0.5, "
                    "progress=False)")
            print(f"writing the {ph}x{pw} synthetic slide {slide}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-c", code, str(slide), str(pw), str(ph)], check=True,
                           env={**env, "PYTHONPATH": str(ROOT / "src")})
        for bench in benches:
            for tree in trees:
                size = args.warmup_size if bench == "predict" else (min(args.warmup_size), min(args.warmup_size))
                r = run_cli(tree, commands[bench](tree, size))
                r.update(bench=bench, round=0, warmup=True, summary=SUMMARIES[bench](r))
                runs.append(r)
        for rnd in range(1, args.rounds + 1):
            for bench in benches:
                for tree in trees:  # before, then after
                    r = run_cli(tree, commands[bench](tree))
                    r.update(bench=bench, round=rnd, warmup=False, summary=SUMMARIES[bench](r))
                    runs.append(r)
                    print(f"  {tree['name']}: {r['summary']}", file=sys.stderr, flush=True)
    finally:
        try:
            _git("worktree", "remove", "--force", str(worktree))
        except subprocess.CalledProcessError:
            shutil.rmtree(worktree, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "benchmark": "before_after",
        "before": before_rev,
        "after": after_rev,
        "after_working_tree_dirty": dirty,
        "python": sys.executable,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "node": platform.node()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print_table(runs)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
