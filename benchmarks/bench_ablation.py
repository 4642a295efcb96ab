"""Modality ablation with a fold's GNN stages in parallel: `run_pipeline.py --cv 2 --ablation` with
--jobs 1 against --jobs N (default 2).

    python benchmarks/bench_ablation.py [--jobs 2] [--modalities audio,eda,temp]

In a temporary folder it generates the `tiny` synthetic preset (seed 0) and runs a plain `--cv 2` on it
at the demo's settings (`--profile demo`, config.DEMO): each fold's encoder, features, graphs and the GNN
on --modalities, which both sides reuse. Each side then starts from a fresh copy of that work folder,
put back at the same path (the stage keys hold the folders' paths, so a copy elsewhere would retrain the
encoders), and runs `--cv 2 --ablation`: each fold's GNN and temporal baseline on every other non-empty
subset of --modalities (6 per fold for three modalities). Every run is a process of its own (python
run_pipeline.py), timed from its start to its end (interpreter start and imports included, the same on
both sides; the parallel side's workers start within it). The two sides' summaries
(summary_<subset>.json and ablation.json) must be byte for byte equal.
Last line: ratio=<jobs 1 / jobs N> jobs1_s=<s> jobsN_s=<s>
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv_results
from encoder.core import layout, synthetic, util

REPO = Path(__file__).resolve().parents[1]
K = 2


def run_pipeline(data: Path, work: Path, *flags: str) -> float:
    """python run_pipeline.py --cv 2 at the demo's settings on `data` into `work`; returns its wall time."""
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--data", str(data), "--profile", "demo",
               "--cv", str(K), "--work", str(work), *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds


def summaries(cv_dir: Path, modalities: str) -> dict[str, bytes]:
    """The ablation's JSON files: every subset's summary and ablation.json, by name."""
    paths = [layout.summary_files(cv_dir, m)["json"] for m in cv_results.modality_subsets(modalities)]
    return {path.name: path.read_bytes() for path in [*paths, cv_dir / "ablation.json"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the parallel side")
    parser.add_argument("--modalities", default="audio,eda,temp", help="the set whose subsets the ablation trains")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs must be at least 2 (the side compared with --jobs 1)")
    with tempfile.TemporaryDirectory() as tmp:
        data, work, base = Path(tmp) / "KEMDy20", Path(tmp) / "work", Path(tmp) / "base"
        synthetic.make_dataset(data, preset="tiny", seed=0)
        base_s = run_pipeline(data, work, "--modalities", args.modalities)
        shutil.copytree(work, base)
        n_subsets = len(cv_results.modality_subsets(args.modalities))
        print(f"tiny preset, --cv {K} --modalities {args.modalities}: {base_s:.1f} s (each fold's encoder, features, "
              f"graphs and GNN, shared by both sides)")
        print(f"--cv {K} --ablation from copies of it ({n_subsets - 1} subsets x {K} folds to train):")
        seconds, results = {}, {}
        for jobs in (1, args.jobs):
            shutil.rmtree(work)
            shutil.copytree(base, work)
            seconds[jobs] = run_pipeline(data, work, "--modalities", args.modalities, "--ablation", "--jobs", str(jobs))
            results[jobs] = summaries(work / "results" / f"{data.name}_cv{K}", args.modalities)
            print(f"  --jobs {jobs}: {seconds[jobs]:.1f} s")
        if results[1] != results[args.jobs]:
            differ = sorted(name for name in results[1] if results[1][name] != results[args.jobs].get(name))
            raise SystemExit(f"summaries of --jobs 1 and --jobs {args.jobs} differ: {differ}")
        print(f"the {len(results[1])} summaries (summary_<subset>.json, ablation.json) of both sides are equal")
        print(f"ratio={seconds[1] / seconds[args.jobs]:.2f} jobs1_s={seconds[1]:.1f} "
              f"jobs{args.jobs}_s={seconds[args.jobs]:.1f}")


if __name__ == "__main__":
    util.run_cli(main)
