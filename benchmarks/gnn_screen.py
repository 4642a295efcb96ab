"""Screen a GNN-side option on an existing `run_pipeline.py --cv K` run's fold features: the GNN and the
GRU trained again, the encoders and their features left as they are (minutes instead of a CV run's hour).

    python benchmarks/gnn_screen.py RUN OUT [--seed S] [--modalities M] [--centre_embeddings] [-- FLAGS]

For each fold_k of RUN (for the seeds of a `--seeds` run: RUN/seed_S with --seed S), graphs are built from
its features and the GNN and GRU are trained as the pipeline trains them (the demo profile's graph and GNN
settings, seed S, `FLAGS` of train_val.py after `--`, e.g. `-- --block_dropout 0.25`), into
OUT/fold_k/gnn_<modalities>, beside copies of the fold's splits.json and encoder predictions. The classical and
fusion systems are fitted too (the fusion reads the GNN's probabilities; `-- --no_classical` skips both), from the
dataset root the features' manifest names. Two screens,
or RUN and a screen, are then paired by `python cv_results.py --compare A B --modalities M`.

`--centre_embeddings` studies an idea before it is built: each participant's whole-session mean of the
encoder's blocks (audio and the bio streams) is subtracted from them in a copy of the features before the
graphs are built. Offline statistics only, with no causal or online counterpart: a screen, not an option of
the pipeline.
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np

from encoder.core import config, layout, streams, util
from temporal_gnn import gnn_model, gnn_training, graph_building


def centre_embeddings(features: Path) -> None:
    """Subtract each (session file, identity)'s mean of the encoder's blocks from its node embeddings, in place."""
    dims = util.read_json(features / "manifest.json")["feature_dims"]
    slices = gnn_model.modality_slices(dims, [name for name in streams.feature_order() if name in dims])
    for path in sorted(features.glob("features_*/*.pkl")):
        nodes = pickle.loads(path.read_bytes())
        x = np.stack([node[6] for node in nodes])  # float32, as the node files hold them
        identity = np.array([node[2] for node in nodes])
        for who in np.unique(identity):
            rows = identity == who
            for a, b in slices.values():
                x[rows, a:b] -= x[rows, a:b].mean(axis=0)
        nodes = [(*node[:6], x[i]) for i, node in enumerate(nodes)]
        path.write_bytes(pickle.dumps(nodes))


def screen_fold(fold: Path, out: Path, seed: int, modalities: str, centre: bool, flags: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(fold / layout.SPLITS_FILE, out / layout.SPLITS_FILE)
    features = fold / "features"
    (out / "features").mkdir(exist_ok=True)
    shutil.copy(features / "encoder_predictions_test.csv", out / "features" / "encoder_predictions_test.csv")
    if centre:
        shutil.copytree(features, out / "centred", dirs_exist_ok=True)
        centre_embeddings(out / "centred")
        features = out / "centred"
    graph = [f"--{k}={v}" for k, v in config.DEMO["GRAPH"].items()]
    gnn = [f"--{k}={v}" for k, v in config.DEMO["GNN"].items()]
    common = ["--features_dir", str(features), "--graphs_dir", str(out / "graphs"), *graph]
    graph_building.run(common)
    gnn_training.run([*common, *gnn, "--results_dir", str(out), "--exp", layout.gnn_folder(modalities),
                      "--seed", str(seed), "--modalities", modalities, "--device", "cpu", *flags])
    # a screen keeps the predictions and metrics; the graphs and the model folder (a copy of the fold's
    # encoder, about 200 MB a fold on the demo) are rebuilt in seconds when wanted
    shutil.rmtree(out / "graphs")
    shutil.rmtree(out / "centred", ignore_errors=True)
    shutil.rmtree(out / layout.gnn_folder(modalities) / "model", ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run_pipeline.py --cv folder (or its seed_S folder)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=config.SEED, help="the GNN's seed (the pipeline's seed S)")
    parser.add_argument("--modalities", default=config.MODALITIES)
    parser.add_argument("--centre_embeddings", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)  # after `--`: train_val.py's flags
    args, flags = parser.parse_args(argv[:cut]), argv[cut + 1:]
    for k, fold in enumerate(layout.fold_dirs(args.run)):
        screen_fold(fold, args.out / f"fold_{k}", args.seed, args.modalities, args.centre_embeddings, flags)
    print(args.out)


if __name__ == "__main__":
    util.run_cli(main)
