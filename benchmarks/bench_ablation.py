"""What a modality ablation adds to a plain CV: `run_pipeline.py --cv K` against `--cv K --ablation`, the
ablation's GNN stages with --jobs 1 and with --jobs N (default 2).

    python benchmarks/bench_ablation.py [--jobs 2] [--preset tiny|demo] [--folds 2] [--modalities audio,eda,temp]

In a temporary folder it generates a synthetic preset (seed 0; default `tiny`) and runs a plain `--cv K`
on it at the demo's settings (`--profile demo`, config.DEMO): each fold's encoder, features, graphs and
the GNN on --modalities, which both sides reuse. Each side then starts from a fresh copy of that work
folder, put back at the same path (the stage keys hold the folders' paths, so a copy elsewhere would
retrain the encoders), and runs `--cv K --ablation`: each fold's GNN and temporal baseline on every
other non-empty subset of --modalities (6 per fold for three modalities). An ablation from scratch runs
the plain CV's stages and these, so it costs (plain + ablation side) / plain times a plain CV. Every run
is a process of its own (python run_pipeline.py), timed from its start to its end (interpreter start
and imports included, the same on both sides; the parallel side's workers start within it). The two
sides' summaries (summary_<subset>.json and ablation.json) must be byte for byte equal.
Last line: ratio=<jobs 1 / jobs N> jobs1_s=<s> jobsN_s=<s> plain_s=<s> ablation_ratio_jobs1=<x> ablation_ratio_jobsN=<x>
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

from encoder.core import layout, synthetic, util
from temporal_gnn import cv_results

REPO = Path(__file__).resolve().parents[1]


def run_pipeline(data: Path, work: Path, folds: int, *flags: str) -> float:
    """python run_pipeline.py --cv `folds` at the demo's settings on `data` into `work`; returns its wall time."""
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--data", str(data), "--profile", "demo",
               "--cv", str(folds), "--work", str(work), *flags]
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
    parser.add_argument("--preset", choices=("tiny", "demo"), default="tiny", help="synthetic preset to run on")
    parser.add_argument("--folds", type=int, default=2, help="K of --cv K")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs must be at least 2 (the side compared with --jobs 1)")
    with tempfile.TemporaryDirectory() as tmp:
        data, work, base = Path(tmp) / "KEMDy20", Path(tmp) / "work", Path(tmp) / "base"
        synthetic.make_dataset(data, preset=args.preset, seed=0)
        base_s = run_pipeline(data, work, args.folds, "--modalities", args.modalities)
        shutil.copytree(work, base)
        n_subsets = len(cv_results.modality_subsets(args.modalities))
        print(f"{args.preset} preset, --cv {args.folds} --modalities {args.modalities}: {base_s:.1f} s (each fold's "
              f"encoder, features, graphs and GNN, shared by both sides)")
        print(f"--cv {args.folds} --ablation from copies of it "
              f"({n_subsets - 1} subsets x {args.folds} folds to train):")
        seconds, results = {}, {}
        for jobs in (1, args.jobs):
            shutil.rmtree(work)
            shutil.copytree(base, work)
            seconds[jobs] = run_pipeline(data, work, args.folds, "--modalities", args.modalities, "--ablation",
                                         "--jobs", str(jobs))
            results[jobs] = summaries(work / "results" / f"{data.name}_cv{args.folds}", args.modalities)
            print(f"  --jobs {jobs}: {seconds[jobs]:.1f} s; an ablation from scratch: "
                  f"{(base_s + seconds[jobs]) / base_s:.2f} x the plain CV")
        if results[1] != results[args.jobs]:
            differ = sorted(name for name in results[1] if results[1][name] != results[args.jobs].get(name))
            raise SystemExit(f"summaries of --jobs 1 and --jobs {args.jobs} differ: {differ}")
        print(f"the {len(results[1])} summaries (summary_<subset>.json, ablation.json) of both sides are equal")
        n = args.jobs
        print(f"ratio={seconds[1] / seconds[n]:.2f} jobs1_s={seconds[1]:.1f} jobs{n}_s={seconds[n]:.1f} "
              f"plain_s={base_s:.1f} ablation_ratio_jobs1={(base_s + seconds[1]) / base_s:.2f} "
              f"ablation_ratio_jobs{n}={(base_s + seconds[n]) / base_s:.2f}")


if __name__ == "__main__":
    util.run_cli(main)
