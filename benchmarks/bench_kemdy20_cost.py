"""What a study on a whole KEMDy20 costs: every stage timed on a sample of the `full` synthetic preset at
the real-data settings (config.py's STE_*, GRAPH and GNN sections as they are: 16 kHz, 64 mel bands,
2000-node graphs), per 1,000 segments, and extrapolated to KEMDy20's 40 sessions for the single run
(config.SPLITS) and for `--cv 5` (util.cv_splits).

    python benchmarks/bench_kemdy20_cost.py [--sessions 1,33,37] [--device cpu] [--audio_pass clip|segment]
                                            [--encoder_epochs 1] [--json PATH]

The sample's sessions keep their split of config.SPLITS (1: train, 33: validation, 37: test), each drawn
as in the whole `full` preset (about 330 segments a session, like KEMDy20's 13k in 40). Stages, each
timed from its call to its return, on one process:

* frames: reading the annotations and bio files into the dataframe tables (per segment of every session);
* encoder: --encoder_epochs epochs of STE_train; an epoch's training part is its time less its validation
  pass (both in the epoch's log row), and the two are scaled apart: training by training segments,
  validation by validation segments; the rest of the call (normalisation, checkpoints) by both;
* features: STE_forward over every session (per segment);
* graphs: generate_graph over every session (per segment);
* GNN: train_val.py (the GNN and the GRU baseline, each for --num_epoch epochs without early stopping;
  on a CPU with a core to spare the GRU trains beside the GNN, as config.GNN["temporal_beside"] has it)
  run for 1 and for 3 epochs: the difference halved is an epoch of both, scaled by training segments
  (their validation included); the rest (loading, testing, writing) by every segment.

A study's encoder runs config's `epochs` and its GNN and GRU at most `num_epoch` epochs each; patience
usually stops them earlier, so the GNN figures are upper bounds. Disk: a single run keeps best.pth and
`keep_checkpoints` epoch files (weights and optimizer), a CV fold best.pth without the optimizer.
The validation pass is then timed apart (training.validate) at config.py's `val_step_stride` (every node)
and at 4 (SPARSE_VAL_STRIDE: every 4th node of each validation segment), one after the other; the
epoch's validation scaled by their ratio extrapolates the encoder at stride 4 too: what that setting
would save, not a default (it changes which epoch is kept).
The last line: `single_run_h=<hours> cv5_h=<hours> encoder_epoch_s_per_1000=<s per 1,000 training segments>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import checkpoints, config, extraction, frames, synthetic, training, util
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import load_segments
from encoder.core.distributed import Runtime, resolve_device
from encoder.core.models import AUDIO_PASSES
from encoder.core.participant import InputOptions
from temporal_gnn import gnn_training, graph_building

KEMDY20_SESSIONS = tuple(range(1, 41))
CV_FOLDS = 5
SPARSE_VAL_STRIDE = 4


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def folder_bytes(path: Path) -> int:
    """Bytes the files under `path` add to the disk: a file hard-linked several times inside counts once,
    one linked from outside (model/encoder.pth: the encoder's best.pth, model_folder.py) not at all."""
    links: dict[tuple[int, int], list[os.stat_result]] = {}
    for file in Path(path).rglob("*"):
        if file.is_file():
            stat = file.stat()
            links.setdefault((stat.st_dev, stat.st_ino), []).append(stat)
    return sum(stats[0].st_size for stats in links.values() if stats[0].st_nlink == len(stats))


def measure(root: Path, work: Path, splits: dict[str, tuple[int, ...]], device: str, audio_pass: str | None,
            encoder_epochs: int) -> dict[str, Any]:
    """Every stage on the sample at `root`; seconds, segment counts and sizes."""
    out: dict[str, Any] = {}
    out["frames_s"], _ = timed(lambda: frames.write_frames(frames.build_frames(root), root))
    table = load_segments(frames.load_frames(root), root, splits)
    out["segments"] = {name: len(table.by_split.get(name, [])) for name in ("train", "val", "test")}
    out["nodes"] = sum(s.n_steps for segs in table.by_split.values() for s in segs)

    inputs = {"audio_pass": audio_pass} if audio_pass else {}
    ste = work / "encoder"
    optimization = {"epochs": encoder_epochs, "out_dir": ste, "progress": False}
    out["encoder_s"], trained = timed(lambda: training.train_encoder(device=device, root=root, inputs=inputs,
                                                                       optimization=optimization, splits=splits,
                                                                       log=None))
    out["encoder_epoch_s"] = float(np.mean([row["seconds"] for row in trained["epochs"]]))
    out["encoder_val_s"] = float(np.mean([row["val_seconds"] for row in trained["epochs"]]))
    best = ste / "best.pth"
    state = checkpoints.load_encoder_checkpoint(best)
    model = checkpoints.encoder_from_checkpoint(state, best).to(resolve_device(device))
    val_segs = load_segments(frames.load_frames(root), root, splits, wanted=("val",)).by_split["val"]
    settings = util.merge_settings(config.STE_optimization_params, {"progress": False})

    def validate(stride: int) -> dict[str, Any]:
        return training.validate(
            Runtime(resolve_device(device)), model, val_segs, Normalization.from_dict(state["normalization"]),
            int(state["inputs"]["clip_length"]), SpectrogramParams.from_dict(state["inputs"]),
            {**settings, "val_step_stride": stride}, InputOptions.from_inputs(state["inputs"]))

    out["validate_s"], _ = timed(lambda: validate(int(settings["val_step_stride"])))
    out["validate_sparse_s"], _ = timed(lambda: validate(SPARSE_VAL_STRIDE))
    epoch_file = checkpoints.epoch_checkpoints(ste)[-1]
    out["epoch_file_bytes"] = epoch_file.stat().st_size
    fold_best = work / "fold_best.pth"
    shutil.copy(best, fold_best)
    checkpoints.drop_training_state(fold_best)
    out["fold_best_bytes"] = fold_best.stat().st_size

    features = work / "features"
    out["features_s"], _ = timed(lambda: extraction.extract_features(
        device=device, root=root, checkpoint=best, out_dir=features, splits=splits, encoder_splits=splits,
        forward={"progress": False}, log=None))
    out["features_bytes"] = folder_bytes(features)

    graphs = work / "graphs"
    graph_flags = ["--features_dir", str(features), "--graphs_dir", str(graphs)]
    out["graphs_s"], graph_dir = timed(lambda: graph_building.run([*graph_flags, "--force"]))
    out["graphs_bytes"] = folder_bytes(graph_dir)

    gnn = {}
    for epochs in (1, 3):
        flags = [*graph_flags, "--results_dir", str(work / "results"), "--exp", f"gnn_{epochs}", "--device", device,
                 "--num_epoch", str(epochs), "--patience", "0"]
        gnn[epochs], _ = timed(lambda flags=flags: gnn_training.run(flags))
    out["gnn_epoch_s"] = (gnn[3] - gnn[1]) / 2
    out["gnn_rest_s"] = gnn[1] - out["gnn_epoch_s"]
    out["gnn_bytes"] = folder_bytes(work / "results" / "gnn_1")
    return out


def study(m: dict[str, Any], chains: Sequence[dict[str, Sequence[int]]], per_session: float,
          encoder_epochs: int, gnn_epochs: int, validate_s: float | None = None) -> dict[str, float]:
    """Seconds per stage of the chains (one per fold), from the sample's per-segment costs; each chain
    extracts and builds graphs for every session (KEMDY20_SESSIONS). `validate_s`: a validation pass of
    the sample's validation segments other than the one measured in the encoder's epoch."""
    seg = m["segments"]
    train_cost = (m["encoder_epoch_s"] - m["encoder_val_s"]) / seg["train"]
    val_cost = (m["encoder_val_s"] if validate_s is None else validate_s) / seg["val"]
    setup_cost = (m["encoder_s"] - m["encoder_epoch_s"] * m["encoder_epochs"]) / (seg["train"] + seg["val"])
    total = sum(seg.values())
    every = per_session * len(KEMDY20_SESSIONS)
    cost = {"frames": m["frames_s"] / total * every, "encoder": 0.0, "features": 0.0, "graphs": 0.0, "gnn": 0.0}
    for splits in chains:
        n_train, n_val = per_session * len(splits["train"]), per_session * len(splits["val"])
        cost["encoder"] += encoder_epochs * (train_cost * n_train + val_cost * n_val) + setup_cost * (n_train + n_val)
        cost["features"] += m["features_s"] / total * every
        cost["graphs"] += m["graphs_s"] / total * every
        cost["gnn"] += gnn_epochs * m["gnn_epoch_s"] / seg["train"] * n_train + m["gnn_rest_s"] / total * every
    return cost


def disk(m: dict[str, Any], per_session: float, folds: int | None) -> float:
    """Bytes a single run (folds None) or a `--cv folds` study keeps."""
    every = per_session * len(KEMDY20_SESSIONS) / sum(m["segments"].values())
    data = (m["features_bytes"] + m["graphs_bytes"]) * every + m["gnn_bytes"]
    if folds is None:
        return data + (1 + int(config.STE_optimization_params["keep_checkpoints"] or 0)) * m["epoch_file_bytes"]
    return folds * (data + m["fold_best_bytes"])


def report(m: dict[str, Any], device: str) -> dict[str, Any]:
    seg = m["segments"]
    total = sum(seg.values())
    per_session = total / len(m["sessions"])
    epochs, gnn_epochs = int(config.STE_optimization_params["epochs"]), int(config.GNN["num_epoch"])
    chains = {"single": [config.SPLITS],
              "cv": [util.cv_splits(KEMDY20_SESSIONS, CV_FOLDS, f) for f in range(CV_FOLDS)]}
    single, cv = (study(m, chains[name], per_session, epochs, gnn_epochs) for name in ("single", "cv"))
    train_s = m["encoder_epoch_s"] - m["encoder_val_s"]
    train_cost = train_s / seg["train"] * 1000
    sparse_s = m["encoder_val_s"] * m["validate_sparse_s"] / m["validate_s"]  # the epoch's pass at stride 4
    print(f"sample: sessions {m['sessions']}, {total} segments (train {seg['train']}, val {seg['val']}, "
          f"test {seg['test']}), {m['nodes']} nodes; device {device}, audio pass {m['audio_pass']}")
    print(f"{'stage':<34}{'sample s':>10}{'s / 1,000 segments':>20}")
    rows = [("frames", m["frames_s"], m["frames_s"] / total * 1000),
            ("encoder: training, one epoch", train_s, train_cost),
            ("encoder: validation, one pass", m["encoder_val_s"], m["encoder_val_s"] / seg["val"] * 1000),
            ("features (STE_forward)", m["features_s"], m["features_s"] / total * 1000),
            ("graphs (generate_graph)", m["graphs_s"], m["graphs_s"] / total * 1000),
            ("GNN + GRU: one epoch", m["gnn_epoch_s"], m["gnn_epoch_s"] / seg["train"] * 1000)]
    for name, seconds, per_1000 in rows:
        print(f"{name:<34}{seconds:>10.1f}{per_1000:>20.1f}")
    print(f"40 sessions ({per_session * 40:.0f} segments): encoder {epochs} epochs, GNN and GRU at most "
          f"{gnn_epochs} epochs each")
    print(f"{'stage':<34}{'single run h':>14}{f'--cv {CV_FOLDS} h':>12}")
    for name in single:
        print(f"{name:<34}{single[name] / 3600:>14.2f}{cv[name] / 3600:>12.2f}")
    single_h, cv_h = sum(single.values()) / 3600, sum(cv.values()) / 3600
    print(f"{'total':<34}{single_h:>14.2f}{cv_h:>12.2f}")
    single_gb, cv_gb = disk(m, per_session, None) / 1e9, disk(m, per_session, CV_FOLDS) / 1e9
    print(f"{'disk (GB)':<34}{single_gb:>14.2f}{cv_gb:>12.2f}")
    sparse = {name: study(m, folds, per_session, epochs, gnn_epochs, sparse_s)["encoder"]
              for name, folds in chains.items()}
    print(f"with val_step_stride {SPARSE_VAL_STRIDE} (validation pass {sparse_s:.1f} s on the sample; timed apart "
          f"{m['validate_s']:.1f} s at stride 1, {m['validate_sparse_s']:.1f} s at {SPARSE_VAL_STRIDE}):")
    print(f"{'encoder':<34}{sparse['single'] / 3600:>14.2f}{sparse['cv'] / 3600:>12.2f}")
    print(f"{'total':<34}{single_h + (sparse['single'] - single['encoder']) / 3600:>14.2f}"
          f"{cv_h + (sparse['cv'] - cv['encoder']) / 3600:>12.2f}")
    print(f"single_run_h={single_h:.2f} cv5_h={cv_h:.2f} encoder_epoch_s_per_1000={train_cost:.1f}")
    return {**m, "single_run_s": single, "cv5_s": cv, "single_run_gb": single_gb, "cv5_gb": cv_gb,
            "sparse_val_stride": SPARSE_VAL_STRIDE, "encoder_sparse_val_s": sparse,
            "epochs": epochs, "gnn_epochs": gnn_epochs, "environment": util.environment()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,33,37", help="sessions of the full preset to time on; at least "
                                                             "one of each split of config.SPLITS")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index")
    parser.add_argument("--audio_pass", choices=AUDIO_PASSES, help="the encoder's audio pass (default config's)")
    parser.add_argument("--encoder_epochs", type=int, default=1, help="encoder epochs timed")
    parser.add_argument("--json", type=Path, help="also write the measurements and extrapolations here")
    args = parser.parse_args()
    sessions = sorted(int(s) for s in args.sessions.split(","))
    splits = {name: tuple(s for s in sessions if s in config.SPLITS[name]) for name in ("train", "val", "test")}
    if not all(splits.values()):
        raise SystemExit(f"--sessions {args.sessions}: needs a session of each split of config.SPLITS")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        synthetic.make_dataset(tmp / "data", preset="full", seed=config.SEED, sessions=sessions)
        measured = measure(tmp / "data", tmp / "work", splits, args.device, args.audio_pass, args.encoder_epochs)
    measured.update(sessions=sessions, encoder_epochs=args.encoder_epochs,
                    audio_pass=args.audio_pass or config.STE_inputs["audio_pass"])
    result = report(measured, args.device)
    if args.json:
        util.write_json(result, args.json)


if __name__ == "__main__":
    util.run_cli(main)
