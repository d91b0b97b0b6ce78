"""Check that the numbers the README and the docs publish are the numbers their artefacts hold.

    python scripts/check_numbers.py                 # exit 1 and list every claim that does not hold
    python scripts/check_numbers.py --list          # every claim: where, the text, its artefact
    python scripts/check_numbers.py --replace README.md=/tmp/README.md   # check a copy in its place

Each claim in CLAIMS names a file of the repository, a text quoted in it with format fields
({:.1f}) where the numbers go, the artefact the numbers come from (a committed JSON, CSV, log or
test file, or a glob of several) and how to get them from it. A claim holds when the text, with
the artefact's numbers formatted into it, occurs in the file; runs of whitespace (line breaks
included) compare as one space. A figure that moves therefore fails here, whichever side moved:
the sentence, or the artefact it quotes.

When you publish a number, add its claim here, beside its artefact and the command that made
it (benchmarks/README.md lists the artefacts). tests/test_numbers.py runs this script, so
`make test` and CI do.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Getter = Callable[[Any], Any]


@dataclass(frozen=True)
class Claim:
    """A text in ``doc`` whose format fields are filled from ``source`` by ``get``."""

    doc: str  # the file that publishes the number, relative to the repository root
    text: str  # the quoted text, with str.format fields for the numbers
    source: str  # the artefact, relative to the root; a glob gives get a list, sorted by path
    get: Getter  # the artefact's content -> one value or a tuple of values for text's fields
    note: str = ""  # what the number is, where it is not plain from the text


# --- getters -----------------------------------------------------------------------------------

def at(*paths: str) -> Getter:
    """Values at JSON paths like ``a.b[0].c`` (one path: that value; several: a tuple)."""

    def one(data: Any, path: str) -> Any:
        for key, index in re.findall(r"([^.\[\]]+)|\[(-?\d+)\]", path):
            data = data[int(index)] if index else data[key]
        return data

    return lambda data: one(data, paths[0]) if len(paths) == 1 else tuple(one(data, p) for p in paths)


def pick(getter: Getter, **match: Any) -> Getter:
    """Apply ``getter`` to the one item of a JSON list whose fields equal ``match``."""

    def get(items: list[dict[str, Any]]) -> Any:
        found = [item for item in items if all(item.get(k) == v for k, v in match.items())]
        if len(found) != 1:
            raise ValueError(f"{len(found)} items match {match}, expected one")
        return getter(found[0])

    return get


def span(key: str, scale: float = 1.0) -> Getter:
    """(min, max) of ``key`` over a list of JSON objects (a glob of runs), times ``scale``."""
    return lambda runs: (min(r[key] for r in runs) * scale, max(r[key] for r in runs) * scale)


def same(key: str) -> Getter:
    """The one value of ``key`` that every run of a glob shares."""

    def get(runs: list[dict[str, Any]]) -> Any:
        values = {json.dumps(r[key]) for r in runs}
        if len(values) != 1:
            raise ValueError(f"the runs disagree on {key}: {sorted(values)}")
        return runs[0][key]

    return get


def last_row(*columns: str, kind: Callable[[str], Any] = float) -> Getter:
    """Values of the last row of a CSV log."""
    return lambda rows: tuple(kind(rows[-1][c]) for c in columns)


def log_steps(text: str, label: str = "new") -> list[float]:
    """Seconds per step of every step in the rows ``label``N of gigapixel_train_view_kernels.txt."""
    rows = re.findall(rf"^{label}\d+ (.*?)\s+peak", text, re.MULTILINE)
    return [float(s) for row in rows for s in row.split()]


def passed(text: str) -> int:
    """The count of a pytest log's "N passed"."""
    return int(re.search(r"(\d+) passed", text).group(1))


def dict_entries(name: str) -> Getter:
    """How many entries the module-level dict ``name`` of a Python file has."""

    def get(text: str) -> int:
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                if isinstance(node.value, ast.Dict):
                    return len(node.value.keys)
        raise ValueError(f"no dict literal {name} = {{...}} at the top of the file")

    return get


def sci(*values: float) -> tuple[str, ...] | str:
    """Numbers as the docs write them: 7.1e-15, 3.5e-6 (two significant digits, no exponent padding)."""
    out = tuple(re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{v:.1e}").replace("e+", "e") for v in values)
    return out if len(out) > 1 else out[0]


def _h_min(hours: float) -> tuple[int, int]:
    minutes = round(hours * 60)
    return minutes // 60, minutes % 60


WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
GIB = 1 / 2**30

# --- the claims ----------------------------------------------------------------------------------

PAPER = "results/paper-reproduction/metrics.json"  # the paper's own figures are under "paper"
STEPS = "benchmarks/results.json"  # `python benchmarks/scaling.py`, benchmarks/RESULTS.md
GP_STEP = {"height": 16000, "width": 64000, "memory_budget": None}
GPU_CHECK = "benchmarks/gpu/h100_gpu_check.json"
GPU_TRAIN = "benchmarks/gpu/h100_gpu_train_1gp_view_kernels.json"
EXACT = "benchmarks/exactness/exactness.json"
DEMO = "benchmarks/demo/summary.json"  # `gigaseg demo` at 119ad34, quiet machine (run.json)
DEMO_MODEL = "results/demo-model/summary.json"  # the committed demo model's run, b33e81b
PRED_TRAINED = "benchmarks/predict/bench_predict_trained_[0-9].json"  # 119ad34, AMD EPYC, quiet (PRED_RUNS)
PRED_RUNS = "benchmarks/predict/runs-119ad34.jsonl"  # each run's load: other processes' share of the CPUs
PRED_UNTRAINED = "benchmarks/predict/bench_predict_untrained_[0-9].json"
PRED_KERNELS = "benchmarks/predict/bench_predict_kernels_[0-9].json"
PRED_TORCH = "benchmarks/predict/bench_predict_torch_[0-9].json"
PRED_100K = "benchmarks/predict/bench_predict_100k_kernels.json"
CPU_TRAIN = "benchmarks/train/gigapixel_train_view_kernels.txt"
CPU_KERNEL_TESTS = "tests/test_cpu_kernels.py"
DEMO_RUN = "benchmarks/demo/run.json"  # the load during the demo run
DEMO_LOADED = "benchmarks/demo/loaded/summary.json"  # the same command on a loaded machine
DEMO_LOADED_RUN = "benchmarks/demo/loaded/run.json"
CEILING_4940 = "results/ceiling-study/paper-4940/log.csv"
REPRO = "results/paper-reproduction/metrics.json"
GPU_TESTS = "benchmarks/gpu/h100_pytest_gpu_7617bbb.txt"
RES_STUDY = "docs/real-slides/results.json"


def _gpu_step(label: str, *keys: str) -> Getter:
    return lambda d: pick(at(*keys), label=label)(d["steps"])


def _gpu_exact(data: dict[str, Any]) -> float:
    return max(e["tiled_vs_cpu_f64"] for e in data["exactness"] if e["mode"] == "float64")


def _step_span(text: str, label: str = "new") -> tuple[float, float]:
    steps = log_steps(text, label)
    return min(steps), max(steps)


def _same_dice(summary: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``summary``, after checking that its Dice equal ``reference``'s to the last digit."""
    keys = ("held_out_dice", "slide_dice")
    if any(summary[k] != reference[k] for k in keys):
        raise ValueError(f"the Dice differ: {[summary[k] for k in keys]} against {[reference[k] for k in keys]}")
    return summary


def _mpps(runs: list[dict[str, Any]]) -> tuple[float, float]:
    return span("MPps_end_to_end")(runs)


CLAIMS: list[Claim] = [
    # README: the demo
    Claim("README.md", "At commit 119ad34 it took **{:.0f} s** on a {}-core {}, with held-out Dice {:.3f} +/- {:.3f} "
          "and slide Dice {:.3f}", DEMO,
          lambda d: (d["wall_seconds"], d["machine"]["cpu_count"], d["machine"]["cpu"], d["held_out_dice_mean"],
                     d["held_out_dice_sd"], d["slide_dice"])),
    # README: the model
    Claim("README.md", "# {:,} parameters", DEMO, at("parameters")),
    Claim("README.md", "One training step of a {:,}-parameter U-Net", DEMO, at("parameters")),
    # README: results against the paper
    Claim("README.md", "| {}-core Intel Xeon CPU, 24 GB, no GPU | one NVIDIA {} |", STEPS,
          lambda runs: (same("cpu_count")(runs), " ".join(_load(GPU_CHECK)["machine"]["gpu"].split()[1:3]))),
    Claim("README.md", "| memory | {} | {:.2f} GiB (default budget) | {:.2f} GiB of GPU memory (4 GB budget) |",
          PAPER, lambda d: (d["paper"]["memory"], _gp_peak(), _gpu_gp_4gb()[1])),
    Claim("README.md", "| seconds per step | {} s | {:.1f} s (engine alone);", PAPER,
          lambda d: (d["paper"]["seconds_per_step"], _gp_step())),
    Claim("README.md", "**{:.1f}-{:.1f} s** per augmented training step", CPU_TRAIN, _step_span),
    Claim("README.md", "{:.1f} s (engine alone); **{:.1f} s** per augmented `gigaseg train` step", GPU_TRAIN,
          lambda d: (_gpu_gp_4gb()[0], d["train"][0]["median_after_first"])),
    Claim("README.md", "exact (float64 error {} relative, float32 {})", EXACT,
          lambda d: sci(d["max_rel_grad_error"]["float64"], d["max_rel_grad_error"]["float32"])),
    Claim("README.md", "| exact (float64 error {} relative) |", GPU_CHECK, lambda d: sci(_gpu_exact(d))),
    Claim("README.md", "| held-out Dice | {:.3f} +/- {:.3f} after {:,} steps, real H&E", PAPER,
          at("paper.held_out_dice_mean", "paper.held_out_dice_sd", "paper.steps")),
    Claim("README.md", "| {:.3f} +/- {:.3f} after {} steps, synthetic regions", REPRO,
          at("held_out_dice_mean", "held_out_dice_sd", "steps")),
    Claim("README.md", "the same model reaches {:.3f} +/- {:.3f} after {:,} steps", CEILING_4940,
          lambda rows: last_row("val_dice_mean", "val_dice_sd")(rows) + (int(rows[-1]["step"]),)),
    Claim("README.md", "prediction of a 1.024-gigapixel synthetic slide at {:.1f}-{:.1f} MP/s on a 2-core CPU with "
          "the demo's trained model (its mask has {} pieces)", PRED_TRAINED,
          lambda runs: (*_mpps(runs), same("pieces")(runs))),
    Claim("README.md", "tests last passed on an H100 at commit 7617bbb", GPU_TESTS,
          lambda t: None if passed(t) else "no passed tests in the log"),
    # docs/performance.md
    Claim("docs/performance.md", "| **1.024 GP (16000 x 64000)** | cannot run (~75 GiB) | **{:.1f}** | - | "
          "**{:.2f} GiB** |", STEPS, lambda runs: (_gp_step(), _gp_peak())),
    Claim("docs/performance.md", "whole-image autograd {} in float64 and {} in float32, over {} cases ({} configs, "
          "{} losses, {} dtypes)", EXACT,
          lambda d: (*sci(d["max_rel_grad_error"]["float64"], d["max_rel_grad_error"]["float32"]), len(d["cases"]),
                     *(len({c[k] for c in d["cases"]}) for k in ("config", "loss", "dtype")))),
    Claim("docs/performance.md", "`pytest -m gpu` passed there ({} tests) at commit 7617bbb", GPU_TESTS, passed),
    Claim("docs/performance.md", "| **1.024 GP, tiled, `--memory-budget 4GB`** | **{:.2f}** | **{:.2f} GiB** |",
          GPU_CHECK, lambda d: _gpu_gp_4gb()),
    Claim("docs/performance.md", "tiled and CPU whole-image gradients differ by {} (relative)", GPU_CHECK,
          lambda d: sci(_gpu_exact(d))),
    Claim("docs/performance.md", "| gradient | exact | exact (float64 error {} relative) | exact (float64 error "
          "{} relative) |", EXACT, lambda d: sci(d["max_rel_grad_error"]["float64"], _gpu_exact(_load(GPU_CHECK)))),
    Claim("docs/performance.md", "| {:,} steps, {} h {} min, held-out Dice {:.3f} +/- {:.3f} |", PAPER,
          lambda d: (d["paper"]["steps"], *_h_min(d["paper"]["wall_hours"]), d["paper"]["held_out_dice_mean"],
                     d["paper"]["held_out_dice_sd"])),
    Claim("docs/performance.md", "**{:.1f}-{:.1f} s** since the view kernels ({:.1f}-{:.1f} s without them", CPU_TRAIN,
          lambda t: (*_step_span(t), *_step_span(t, "old"))),
    Claim("docs/performance.md", "end to end at **{:.1f}-{:.1f} MP/s**, and {:.1f}-{:.1f} MP/s with PyTorch's "
          "kernels", PRED_KERNELS, lambda runs: (*_mpps(runs), *_mpps(_load(PRED_TORCH)))),
    Claim("docs/performance.md", "the mask of a slide made by the same command has {} pieces", PRED_TRAINED,
          same("pieces")),
    Claim("docs/performance.md", "other processes used at most {:.0f}% of the two cores", PRED_RUNS,
          lambda runs: max(r["others_share_of_2_cores"] for r in runs) * 100),
    Claim("docs/performance.md", "**{:.1f}-{:.1f} MP/s end to end with the trained model**, against {:.1f}-{:.1f} "
          "MP/s with an untrained one, within {:.2f}-{:.2f} GiB peak RSS. Outlining the {} pieces took "
          "{:.2f}-{:.2f} s of GeoJSON against {:.2f}-{:.2f} s for one", PRED_TRAINED,
          lambda runs: (*_mpps(runs), *_mpps(_load(PRED_UNTRAINED)),
                        *span("peak_rss_GiB")(runs + _load(PRED_UNTRAINED)), same("pieces")(runs),
                        *span("geojson_s")(runs), *span("geojson_s")(_load(PRED_UNTRAINED)))),
    Claim("docs/performance.md", "slide (10 gigapixels) is predicted at {:.1f} MP/s within {:.2f} GiB peak memory",
          PRED_100K, at("MPps_end_to_end", "peak_rss_GiB")),
    # docs/predict.md
    Claim("docs/predict.md", "**The 50 MP/s target is met: {:.1f}-{:.1f} MP/s end to end on this 2-core machine**",
          PRED_KERNELS, _mpps),
    Claim("docs/predict.md", "(tests/test_cpu_kernels.py: {} configurations, odd sizes, windows;", CPU_KERNEL_TESTS,
          lambda t: WORDS[dict_entries("CONFIGS")(t)]),
    # docs/train.md
    Claim("docs/train.md", "checks every parameter of {} configurations against autograd", CPU_KERNEL_TESTS,
          lambda t: WORDS[dict_entries("CONFIGS")(t)]),
    Claim("docs/train.md", "other processes used {:.0%} of the two cores during the run", DEMO_RUN,
          at("others_share_of_2_cores")),
    Claim("docs/train.md", "while other processes took {:.0%} of the two cores, gave the same Dice to the last digit "
          "in {:.0f} s", DEMO_LOADED_RUN,
          lambda r: (r["others_share_of_2_cores"], _same_dice(_load(DEMO_LOADED), _load(DEMO))["wall_seconds"])),
    Claim("docs/train.md", "| held-out Dice, {} regions (threshold 0.5) | **{:.3f} +/- {:.3f}** ({:.3f}, {:.3f}, "
          "{:.3f}) |", DEMO, lambda d: (d["held_out_regions"], d["held_out_dice_mean"], d["held_out_dice_sd"],
                                        *d["held_out_dice"].values())),
    Claim("docs/train.md", "| held-out slide Dice ({} x {}, through `predict_slide`) | **{:.3f}** |", DEMO,
          lambda d: (*d["prediction"]["slide_hw"], d["slide_dice"])),
    Claim("docs/train.md", "| wall time | **{:.0f} s** (data {:.0f} s, training {:.0f} s incl. 12 validations, "
          "prediction {:.0f} s) |", DEMO, at("wall_seconds", "data_seconds", "train_seconds", "predict_seconds")),
    Claim("docs/train.md", "| seconds per step (one 4.2 MP region) | {:.2f} (median) |", DEMO, at("seconds_per_step")),
    Claim("docs/train.md", "| peak memory | {:.2f} GiB anonymous, {:.2f} GiB resident |", DEMO,
          lambda d: (d["peak_anon_bytes"] * GIB, d["peak_rss_bytes"] * GIB)),
    Claim("docs/train.md", "held-out Dice **{:.3f} +/- {:.3f}**, slide {:.3f}, in **{:.0f} s** ({:.2f} s per step)",
          DEMO_MODEL, at("held_out_dice_mean", "held_out_dice_sd", "slide_dice", "wall_seconds", "seconds_per_step")),
    Claim("docs/train.md", "{:,} steps (the paper's count)", PAPER, at("paper.steps")),
    # results/demo-model/README.md: the resolution study of docs/real-slides/
    Claim("results/demo-model/README.md", "Masks keep a Dice of {:.3f} with the full-resolution mask at {:.0f} um/px "
          "inputs and {:.3f} at {:.0f} um/px", RES_STUDY,
          lambda d: (d["resolution_study"][4]["model_vs_finest"], d["resolution_study"][4]["mpp"],
                     d["resolution_study"][6]["model_vs_finest"], d["resolution_study"][6]["mpp"])),
]


# Numbers in the README that are not measurements: versions, sizes that define the experiment,
# the paper's year and hardware, budgets. Any other number in the README's prose (code blocks and
# `code` left aside) must sit inside the text of a claim above.
UNMEASURED = [
    "16000 x 64000", "(1.024 gigapixels)", "2-core", "a 2023 MIDL", "128 GB Apple M1 Ultra", "128 GB unified memory",
    "Python >= 3.10", "Python 3.11", "PyTorch 2.13.0", "batch size 1", "(Remedios, Cai et al., 2023)",
    "(4 GB budget)", "24 GB, no GPU", "0.1.0", "1.024-gigapixel", "mm^2",
]
COVERED_DOCS = ["README.md"]
NUMBER = re.compile(r"(?<![\w/.^-])\d(?:[\d,]*\d)?(?:\.\d+)?(?:e-?\d+)?(?!\w)")


def _load(source: str) -> Any:
    """An artefact's content: JSON, CSV rows as dicts, or text; a glob: a list of them, sorted by path."""
    if any(c in source for c in "*?["):
        paths = sorted(_path(p.relative_to(ROOT).as_posix()) for p in ROOT.glob(source))
        if not paths:
            raise FileNotFoundError(f"no artefact matches {source}")
        return [_read(p) for p in paths]
    return _read(_path(source))


def _read(path: Path) -> Any:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    return path.read_text()


def _gp_step() -> float:
    return pick(at("seconds_per_step"), **GP_STEP)(_load(STEPS))


def _gp_peak() -> float:
    return pick(at("peak_anon_bytes"), **GP_STEP)(_load(STEPS)) * GIB


def _gpu_gp_4gb() -> tuple[float, float]:
    s, b = _gpu_step("1.024GP tiled 4GB", "seconds_per_step", "cuda_max_allocated_bytes")(_load(GPU_CHECK))
    return s, b * GIB


# --- checking ------------------------------------------------------------------------------------

REPLACE: dict[str, Path] = {}  # repository path -> the file read in its place (--replace)


def _path(relative: str) -> Path:
    return REPLACE.get(relative, ROOT / relative)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def expected(claim: Claim) -> str:
    """The claim's text with its artefact's numbers formatted in (ValueError when they do not fit)."""
    value = claim.get(_load(claim.source))
    fields = [f for _, f, _, _ in string.Formatter().parse(claim.text) if f is not None]
    if not fields:
        if value is not None:  # a claim without numbers: get returns None, or what is wrong
            raise ValueError(str(value))
        return claim.text
    values = value if isinstance(value, tuple) else (value,)
    if len(values) != len(fields):
        raise ValueError(f"{len(values)} values for {len(fields)} fields")
    return claim.text.format(*values)


def _pattern(text: str) -> re.Pattern[str]:
    """A regex for the claim's text with any value in its fields, to show what the file says instead."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(text):
        words = r"\s+".join(re.escape(w) for w in literal.split())
        if literal[:1].isspace():
            words = r"\s+" + words
        if literal[-1:].isspace() and literal.strip():
            words += r"\s+"
        parts.append(words)
        if field is not None:
            parts.append(r"(\S+?)")
    return re.compile("".join(parts))


def check(claims: Sequence[Claim] = CLAIMS) -> list[str]:
    """Every claim that does not hold, as a message; empty when all hold."""
    problems = []
    docs: dict[str, str] = {}
    for claim in claims:
        where = f"{claim.doc}: {claim.text!r} ({claim.source})"
        try:
            want = expected(claim)
        except (OSError, KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            problems.append(f"{where}: cannot read the number from the artefact: {type(e).__name__}: {e}")
            continue
        if claim.doc not in docs:
            try:
                docs[claim.doc] = _squash(_path(claim.doc).read_text())
            except OSError as e:
                problems.append(f"{where}: cannot read {claim.doc}: {e}")
                continue
        doc = docs[claim.doc]
        if _squash(want) in doc:
            continue
        found = _pattern(claim.text).search(doc)
        says = f"it says {found.group(0)!r}" if found else "the text around the number is not there either"
        problems.append(f"{claim.doc}: expected {_squash(want)!r} from {claim.source}; {says}")
    return problems


def _prose(text: str) -> str:
    return _squash(re.sub(r"`[^`]*`", " ", text))


def uncovered(claims: Sequence[Claim] = CLAIMS) -> list[str]:
    """Numbers in COVERED_DOCS that neither a claim nor UNMEASURED accounts for."""
    problems = []
    for name in COVERED_DOCS:
        text = _prose(re.sub(r"```.*?```", " ", _path(name).read_text(), flags=re.DOTALL))
        covered = [False] * len(text)
        quoted = []
        for claim in claims:
            if claim.doc == name:
                try:
                    quoted.append(_prose(expected(claim)))
                except (OSError, KeyError, IndexError, ValueError, TypeError, AttributeError):
                    continue  # check() reports it
        for phrase in quoted + UNMEASURED:
            for m in re.finditer(re.escape(phrase), text):
                covered[m.start():m.end()] = [True] * (m.end() - m.start())
        for m in NUMBER.finditer(text):
            if not all(covered[m.start():m.end()]):
                context = text[max(0, m.start() - 40):m.end() + 40]
                problems.append(f"{name}: {m.group(0)!r} has no claim in scripts/check_numbers.py: ...{context}...")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print every claim with its artefact and expected text")
    p.add_argument("--replace", action="append", default=[], metavar="PATH=FILE",
                   help="read FILE in place of the repository's PATH (a doc or an artefact); repeatable")
    args = p.parse_args(argv)
    for item in args.replace:
        path, _, file = item.partition("=")
        if not file:
            p.error(f"--replace takes PATH=FILE, got {item!r}")
        REPLACE[path] = Path(file)
    if args.list:
        for claim in CLAIMS:
            try:
                want = _squash(expected(claim))
            except (OSError, KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
                want = f"<{type(e).__name__}: {e}>"
            print(f"{claim.doc}\t{claim.source}\t{want}")
    problems = check() + uncovered()
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(CLAIMS)} claims, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
