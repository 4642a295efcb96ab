"""One command from recordings to a results table.

    python run_pipeline.py [--data DIR] [--preset demo] [--device auto|cpu|N] [--force] [--modalities audio,eda,temp]

Data: `--data DIR` (a KEMDy20 root), else config.KEMDY20_ROOT when it exists, else the synthetic
`--preset` generated into config.DEMO_ROOT. Stages: dataframes -> STE_train -> STE_forward ->
generate_graph -> train_val. Each stage is skipped when its outputs exist for the same configuration
and the same upstream outputs (recorded in <work>/pipeline_state.json); `--force` reruns them all.
On synthetic data the run uses config.DEMO (a cheaper spectrogram and fewer epochs, sized for CPU);
on a KEMDy20 root it uses the STE_* settings and the GNN defaults of train_val.py (`--profile` picks
either explicitly, e.g. `--profile demo` for a quick CPU run on another KEMDy20-format folder).

Prints the test sessions' segment-level table (majority baseline, encoder only, GNN) and, as the
last line, the path of the run's metrics.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import generate_graph
import train_val
from encoder.core import config, distributed, extraction, frames, synthetic, training, util

STATE_FILE = "pipeline_state.json"
# On a real KEMDy20 download: config.STE_* as they are and the defaults of generate_graph/train_val.
NO_OVERRIDES: dict[str, Any] = {"STE_inputs": {}, "STE_optimization_params": {}, "graph_flags": [], "gnn_flags": []}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="KEMDy20 root (default: config.KEMDY20_ROOT if present, else "
                                                  "the synthetic preset)")
    parser.add_argument("--preset", choices=sorted(synthetic.PRESETS), default=config.DEMO["preset"],
                        help="synthetic preset generated when no KEMDy20 is configured")
    parser.add_argument("--seed", type=int, default=config.SEED, help="seed of the synthetic data and of training")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when available, else the CPU), 'cpu' or a CUDA device index")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("--modalities", default="audio,eda,temp",
                        help="modalities the GNN uses (any subset of audio,eda,temp), for ablations")
    parser.add_argument("--profile", choices=("demo", "full"), default=None,
                        help="settings: demo = config.DEMO (CPU-sized), full = config.STE_* and train_val defaults; "
                             "default: demo on the synthetic preset, full on a KEMDy20 root")
    parser.add_argument("--work", type=Path, default=config.REPO_ROOT,
                        help="folder that receives encoder/STE_TRAIN, features/, graphs/ and results/")
    return parser.parse_args(argv)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(util.to_jsonable(value), sort_keys=True).encode()).hexdigest()[:16]


class Pipeline:
    """Runs stages in order; a stage runs when its key (configuration + upstream keys) changed."""

    def __init__(self, state_path: Path, force: bool):
        self.state_path = state_path
        self.force = force
        self.state = util.read_json(state_path) if state_path.is_file() else {}
        self.timings: dict[str, float] = {}

    def stage(self, name: str, key: dict[str, Any], outputs: list[Path], run: Callable[[], Any]) -> str:
        stamp = digest(key)
        if not self.force and self.state.get(name) == stamp and all(p.exists() for p in outputs):
            print(f"[{name}] up to date, skipped")
            self.timings[name] = 0.0
            return stamp
        print(f"[{name}] running")
        start = time.perf_counter()
        run()
        self.timings[name] = time.perf_counter() - start
        self.state[name] = stamp
        util.write_json(self.state, self.state_path)
        return stamp


def resolve_data(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    """The dataset root, what identifies it, and whether it is the project's synthetic data."""
    if args.data is not None:
        return args.data, {"root": str(args.data.resolve())}, False
    if config.KEMDY20_ROOT.exists():
        return config.KEMDY20_ROOT, {"root": str(config.KEMDY20_ROOT.resolve())}, False
    return config.DEMO_ROOT, {"synthetic": args.preset, "seed": args.seed}, True


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    work = args.work
    device = distributed.resolve_device(args.device)
    root, data_key, is_synthetic = resolve_data(args)
    profile = args.profile or ("demo" if is_synthetic else "full")
    settings = config.DEMO if profile == "demo" else NO_OVERRIDES
    ste_dir = work / "encoder" / "STE_TRAIN"
    features_dir = work / "features"
    pipeline = Pipeline(work / STATE_FILE, args.force)

    def generate() -> None:
        if root.exists():
            shutil.rmtree(root)
        summary = synthetic.make_dataset(root, preset=args.preset, seed=args.seed)
        print(f"generated synthetic KEMDy20 ({args.preset}, seed {args.seed}): {summary['segments']} segments "
              f"in {summary['sessions']} sessions at {root}")

    data_stamp = data_key
    if is_synthetic:
        data_stamp = pipeline.stage("data", data_key, [root / "annotation"], generate)

    def build() -> None:
        built = frames.build_frames(root)
        frames.write_frames(built, root)
        print(frames.format_report(built))

    frames_stamp = pipeline.stage("frames", {"data": data_stamp, "max_skip": config.MAX_SKIP_SHARE},
                                  [root / name for name in frames.ARTIFACTS], build)

    inputs = settings["STE_inputs"]
    opt = {**settings["STE_optimization_params"], "out_dir": ste_dir, "seed": args.seed}
    encoder_key = {"frames": frames_stamp, "inputs": util.merge_settings(config.STE_inputs, inputs),
                   "optimization": util.merge_settings(config.STE_optimization_params, opt)}
    best = ste_dir / "best.pth"
    encoder_stamp = pipeline.stage(
        "STE_train", encoder_key, [best],
        lambda: training.train_encoder(device=device, root=root, inputs=inputs, optimization=opt))

    features_stamp = pipeline.stage(
        "STE_forward", {"encoder": encoder_stamp, "checkpoint": util.file_sha256(best) if best.exists() else None},
        [features_dir / "manifest.json", features_dir / "encoder_metrics.json"],
        lambda: extraction.extract_features(device=device, root=root, checkpoint=best, out_dir=features_dir))

    graph_flags = ["--features_dir", str(features_dir), "--graphs_dir", str(work / "graphs"), *settings["graph_flags"]]
    graph_args = generate_graph.parse_args([*graph_flags, "--force"])
    _, graph_dir = generate_graph.graph_paths(graph_args)
    graphs_stamp = pipeline.stage("generate_graph", {"features": features_stamp, "flags": graph_flags},
                                  [graph_dir], lambda: generate_graph.build_graphs(graph_args))

    exp = f"{'demo' if is_synthetic else root.name}_{args.modalities.replace(',', '-')}"
    gnn_flags = [*graph_flags, "--results_dir", str(work / "results"), "--exp", exp, "--seed", str(args.seed),
                 "--modalities", args.modalities, "--device", str(device),
                 *settings["gnn_flags"]]
    metrics_path = work / "results" / exp / "metrics.json"
    pipeline.stage("train_val", {"graphs": graphs_stamp, "flags": gnn_flags}, [metrics_path],
                   lambda: train_val.train_and_evaluate(train_val.parse_args(gnn_flags)))

    metrics = util.read_json(metrics_path)
    metrics["metrics_path"] = str(metrics_path)
    print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in pipeline.timings.items())
          + f"; total {time.perf_counter() - started:.0f}")
    train_val.print_summary(metrics)


if __name__ == "__main__":
    util.run_cli(main)
