"""`make demo`'s pipeline end to end, this checkout against an earlier commit, on the same machine.

    python benchmarks/bench_demo.py [--reference COMMIT] [--device cpu] [--audio_pass segment|clip]

In a temporary folder it generates the `demo` synthetic preset (seed 0) once, and checks the reference
commit out beside it (`git worktree add --detach`). Each side then runs its own `run_pipeline.py
--data <its copy of the data> --profile demo` (the demo's settings, config.DEMO, on the same recordings;
the data's generation is left out of both timings) in a fresh work folder, as a process of its own, timed
from its start to its end. Both print their stage times and test table; the last line is
`ratio=<reference s / ours s> reference_s=<s> ours_s=<s>`. `--audio_pass` is passed to our side only
(the reference may predate the flag).

The default reference is the commit before the segment audio pass (models.py) and the one-thread BLAS
beside the model (util.one_blas_thread).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from encoder.core import synthetic, util

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "50afe63"


def run_pipeline(checkout: Path, data: Path, work: Path, device: str, *flags: str) -> tuple[float, str]:
    """python run_pipeline.py of `checkout` on `data` at the demo's settings; (wall seconds, its stdout)."""
    command = [sys.executable, str(checkout / "run_pipeline.py"), "--data", str(data), "--profile", "demo",
               "--device", device, "--work", str(work), *flags]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds, result.stdout


def report(name: str, seconds: float, stdout: str) -> None:
    """The run's stage times and its test table (the lines after them, up to the metrics path)."""
    lines = stdout.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("stage times")), len(lines))
    table = [line for line in lines[first:] if re.match(r"(stage times|test sessions|\s+accuracy|majority|encoder|"
                                                        r"temporal|GNN )", line)]
    print(f"{name}: {seconds:.1f} s")
    print("\n".join(f"  {line}" for line in table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=REFERENCE, help=f"commit to compare with (default {REFERENCE})")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index, for both sides")
    parser.add_argument("--audio_pass", choices=("segment", "clip"), help="our side's audio pass (default config's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        synthetic.make_dataset(data, preset="demo", seed=0)
        reference = tmp / "reference"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(reference), args.reference],
                       check=True, capture_output=True)
        try:
            commit = subprocess.run(["git", "-C", str(reference), "rev-parse", "--short", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
            shutil.copytree(data, tmp / "data_reference")
            reference_s, reference_out = run_pipeline(reference, tmp / "data_reference", tmp / "work_reference",
                                                      args.device)
            shutil.copytree(data, tmp / "data_ours")
            flags = ["--audio_pass", args.audio_pass] if args.audio_pass else []
            ours_s, ours_out = run_pipeline(REPO, tmp / "data_ours", tmp / "work_ours", args.device, *flags)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(reference)],
                           capture_output=True)
        report(f"reference ({commit})", reference_s, reference_out)
        report(f"ours ({util.environment()['commit'][:7]})", ours_s, ours_out)
        print(f"ratio={reference_s / ours_s:.2f} reference_s={reference_s:.1f} ours_s={ours_s:.1f}")


if __name__ == "__main__":
    util.run_cli(main)
