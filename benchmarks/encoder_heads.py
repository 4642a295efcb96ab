"""What each of the encoder's heads predicts on its own, over a `run_pipeline.py --cv K` run's fold encoders.

    python benchmarks/encoder_heads.py RUN [--data DIR] [--train] [--out FILE.json]

The encoder has a head per stream (audio, EDA, TEMP) and a fused head over all three; the pipeline's `encoder`
system is the fused head. For each fold_k of RUN (a seed's folder: RUN/seed_S) this runs the fold's best.pth
over its test sessions and scores every head's segment decisions (the argmax of the mean of the segment's node
probabilities), pooled over the folds as cv_results pools them. A stream whose head is at chance on the test
sessions while it fits the training sessions (`--train`: the training sessions too, in-sample) has learned
who is speaking rather than how. The fused head's test decisions must be the run's own (its
features/encoder_predictions_test.csv, where the run's decision is the plain argmax): a mismatch is an error,
since the data or the code then differ from the run's.

Data: `--data DIR` (a KEMDy20 root), else config.KEMDY20_ROOT when it exists, else config.DEMO_ROOT. Per-clip
audio pass only (models.AUDIO_PASSES "clip"); the checkpoints' own input options (participant statistics
included) are applied as extraction applies them.
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from encoder.core import config, frames, metrics, participant, streams, util
from encoder.core.checkpoints import encoder_from_checkpoint, load_encoder_checkpoint
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import SegmentDataset, load_segments, node_batches
from encoder.core.models import inference_model
from encoder.core.participant import InputOptions

BATCH = 256


def head_probabilities(checkpoint: Path, root: Path, table_frames: object, sessions: list[int]
                       ) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """(node segment ids, node targets, per head (N, 7) probabilities) of `checkpoint` over `sessions`."""
    state = load_encoder_checkpoint(checkpoint)
    model = inference_model(encoder_from_checkpoint(state, checkpoint)).eval()
    signature = state["inputs"]
    options = InputOptions.from_inputs(signature)
    if options.segment_pass:
        raise util.DataError("the per-clip audio pass only (audio_pass 'clip')", checkpoint)
    params = SpectrogramParams.from_dict(signature)
    clip_length = int(signature["clip_length"])
    segments = load_segments(table_frames, root, {"x": tuple(sessions)}, wanted=("x",)).by_split.get("x", [])
    if not segments:
        raise util.DataError(f"no usable segment in sessions {sessions}", root)
    norm = Normalization.from_dict(state["normalization"])
    probs: dict[str, list[np.ndarray]] = {}
    ids: list[str] = []
    targets: list[int] = []
    for session in sorted({s.session for s in segments}):
        group = [s for s in segments if s.session == session]
        participant.attach(group, params, options, clip_length)
        dataset = SegmentDataset(group, norm, clip_length, params, options=options)
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=0)
        with torch.inference_mode(), util.one_blas_thread():
            for batch in node_batches(loader, BATCH, clip_length, params):
                out = model(batch.audio, batch.bio)
                for name, logits in out.logits.items():
                    probs.setdefault(name, []).append(torch.softmax(logits.float(), dim=1).numpy())
                ids += [group[i].segment_id for i in batch.segment_index]
                targets += [int(group[i].target) for i in batch.segment_index]
    return ids, np.array(targets), {name: np.concatenate(parts) for name, parts in probs.items()}


def score_run(run: Path, root: Path, with_train: bool) -> dict[str, dict[str, object]]:
    """Per split ("test", and "train" with `with_train`) and head: per-fold and pooled segment macro-F1."""
    fold_dirs = sorted(run.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if not fold_dirs:
        raise util.DataError("no fold_k folders: a run_pipeline.py --cv K run (or one seed's folder) is needed", run)
    table_frames = frames.load_frames(root)
    pooled: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    per_fold: dict[str, dict[str, list[float]]] = {}
    for fold in tqdm(fold_dirs, desc="folds", unit="fold"):
        splits = util.read_json(fold / "splits.json")
        for split in ("test", "train") if with_train else ("test",):
            ids, node_targets, heads = head_probabilities(fold / "encoder" / "best.pth", root, table_frames,
                                                          list(splits[split]))
            for name, probs in heads.items():
                seg_ids, seg_targets, seg_pred, _ = metrics.segment_predictions(ids, probs, node_targets)
                if split == "test" and name == streams.FUSED:
                    check_fused(fold, seg_ids, seg_pred)
                pooled.setdefault(split, {}).setdefault(name, []).append((seg_targets, seg_pred))
                per_fold.setdefault(split, {}).setdefault(name, []).append(
                    metrics.classification_metrics(seg_targets, seg_pred)["macro_f1"])
    report: dict[str, dict[str, object]] = {}
    for split, heads in pooled.items():
        report[split] = {}
        for name, parts in heads.items():
            truth, pred = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            report[split][name] = {"pooled": metrics.classification_metrics(truth, pred)["macro_f1"],
                                   "folds": per_fold[split][name], "segments": int(len(truth))}
    return report


def check_fused(fold: Path, segment_ids: list[str], decisions: np.ndarray) -> None:
    """The fused head's test decisions must be the fold's own (when its decision is the plain argmax)."""
    decision = util.read_json(fold / "features" / "encoder_metrics.json").get("decision", {})
    if float(decision.get("tau", 0.0)) != 0.0:
        return  # an adjusted decision is not the plain argmax scored here
    recorded = metrics.read_segment_predictions(fold / "features" / "encoder_predictions_test.csv")
    mine = dict(zip(segment_ids, decisions, strict=True))
    differ = sum(mine.get(i) != p for i, p in zip(recorded["segment_ids"], recorded["predictions"], strict=True))
    if differ or len(mine) != len(recorded["segment_ids"]):
        raise util.DataError(f"the fused head decides {differ} of {len(recorded['segment_ids'])} test segments "
                             "otherwise than the run did: the data or the code differ from the run's", fold)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run_pipeline.py --cv K run folder (or one seed's)")
    parser.add_argument("--data", type=Path, help="the KEMDy20 root the run read")
    parser.add_argument("--train", action="store_true", help="score the training sessions too (in-sample)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    root = args.data or (config.KEMDY20_ROOT if config.KEMDY20_ROOT.exists() else config.DEMO_ROOT)
    try:
        torch.set_num_threads(2)
        report = score_run(args.run, root, args.train)
    except util.DataError as err:
        sys.exit(f"error: {err}")
    for split, heads in report.items():
        print(f"{split} sessions, segment macro-F1 per head (pooled over {len(next(iter(heads.values()))['folds'])} "
              f"folds; per fold)")
        for name, row in heads.items():
            print(f"  {name:<7} {row['pooled']:.4f}   " + "  ".join(f"{x:.4f}" for x in row["folds"]))
    if args.out:
        util.write_json(report, args.out)


if __name__ == "__main__":
    main()
