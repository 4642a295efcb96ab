"""Synthetic node files in the encoder stage's output format, for tests, benchmarks and CPU demos.

Writes `features_{split}/SessSS.pkl` (lists of tuples in util.NODE_COLUMNS order), `manifest.json`
and `encoder_metrics.json` exactly as the encoder stage does, without audio or a trained encoder.

How the data behave: in every script of a session two speakers take turns (segments of 2–10 s at
4 Hz, sometimes overlapping, so nodes of different speakers share a time stamp). Each speaker's
emotion is sticky: a segment keeps the speaker's previous emotion with probability `stay`, otherwise
a new one is drawn from a neutral-heavy prior. A node's feature is a weak class prototype plus
white Gaussian noise (per-node signal-to-noise `snr` along the prototype), so one node alone is a
poor witness of its class while aggregating time neighbours of the same speaker (the GNN's job)
recovers it. The stand-in
"encoder-only" prediction of `encoder_metrics.json` reads each node alone against the prototypes.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config, layout, streams, util
from encoder.core.metrics import encoder_metrics, segment_targets

DEFAULT_SPLITS = {"train": (1, 2, 3, 4), "val": (5,), "test": (6,)}
# Class prior of a newly drawn emotion: neutral is the large majority, as in KEMDy20.
PRIOR = np.array([0.46, 0.16, 0.08, 0.08, 0.08, 0.07, 0.07])


def session_nodes(
    session: int,
    n_nodes: int,
    prototypes: np.ndarray,
    rng: np.random.Generator,
    snr: float = 0.6,
    stay: float = 0.85,
    segments_per_script: int = 40,
) -> list[tuple]:
    """About `n_nodes` node rows (at least that many, whole segments) of one synthetic session."""
    dim = prototypes.shape[1]
    identities = [f"User{user:03d}{rng.choice(['F', 'M'])}" for user in (2 * session - 1, 2 * session)]
    emotion = {who: int(rng.choice(len(PRIOR), p=PRIOR)) for who in identities}
    rows: list[tuple] = []
    script, turn, count_in_script = 1, 0, 0
    utterance = {who: 0 for who in identities}
    clock = 36000.0 + rng.integers(0, 3600) * config.BIO_STEP_S  # 10:00 plus a random offset
    while len(rows) < n_nodes:
        if count_in_script == segments_per_script:
            script, count_in_script = script + 1, 0
            utterance = {who: 0 for who in identities}
            clock += 300.0
        who = identities[turn % 2]
        turn, count_in_script = turn + 1, count_in_script + 1
        utterance[who] += 1
        if rng.random() > stay:
            emotion[who] = int(rng.choice(len(PRIOR), p=PRIOR))
        target = emotion[who]
        label = np.zeros(config.NUM_CLASSES, dtype=np.float32)
        label[target] = 1.0
        if rng.random() < 0.1:  # a tie of the annotators' vote: two listed labels, the first is the target
            label[int(rng.choice([c for c in range(config.NUM_CLASSES) if c != target]))] = 1.0
        label /= label.sum()
        segment_id = layout.segment_id(session, script, who, utterance[who])
        steps = int(rng.integers(8, 41))
        signal = prototypes[target] * (snr / np.sqrt(dim))
        features = (rng.standard_normal((steps, dim)) + signal).astype(np.float32)
        for k in range(steps):
            rows.append((session, clock + k * config.BIO_STEP_S, who, label, target, segment_id, features[k]))
        # next turn: a gap of up to 3 s or an overlap of up to 1 s (shared time stamps across speakers)
        clock += (steps + int(rng.integers(-4, 13))) * config.BIO_STEP_S
    return rows


def encoder_readout(features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Stand-in for an encoder's own head: softmax over each node's projection on the prototypes."""
    scores = features @ prototypes.T / np.sqrt(prototypes.shape[1]) * 4.0
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    return probs / probs.sum(axis=1, keepdims=True)


def write_synthetic_nodes(
    out_dir: Path,
    splits: Mapping[str, Sequence[int]] = DEFAULT_SPLITS,
    nodes_per_session: int = 600,
    feature_dims: Mapping[str, int] | None = None,
    seed: int = 0,
    snr: float = 0.6,
) -> Path:
    """Write node files, manifest.json and encoder_metrics.json under `out_dir`; return the manifest path.
    `feature_dims`: the blocks of a node's feature and their sizes (default: the encoder's, 512 each).
    Deterministic for a seed."""
    out_dir = Path(out_dir)
    feature_dims = dict.fromkeys(streams.feature_order(), 512) if feature_dims is None else feature_dims
    rng = np.random.default_rng(seed)
    dim = int(sum(feature_dims.values()))
    prototypes = rng.standard_normal((config.NUM_CLASSES, dim)).astype(np.float32)
    node_counts: dict[str, dict[str, int]] = {}
    readout: dict[str, dict[str, list]] = {}  # per split: segment ids, targets, stand-in probabilities
    for split, sessions in splits.items():
        node_counts[split] = {}
        readout[split] = {"segment_ids": [], "targets": [], "probs": []}
        for session in sessions:
            rows = session_nodes(session, nodes_per_session, prototypes, rng, snr=snr)
            path = layout.node_file(out_dir, split, session)
            with util.atomic_path(path) as tmp, open(tmp, "wb") as fh:
                pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)
            node_counts[split][layout.session_name(session)] = len(rows)
            readout[split]["segment_ids"] += [r[5] for r in rows]
            readout[split]["targets"].append(np.array([r[4] for r in rows]))
            readout[split]["probs"].append(encoder_readout(np.stack([r[6] for r in rows]), prototypes))
    manifest: dict[str, Any] = {
        "feature_order": list(feature_dims),
        "feature_dims": dict(feature_dims),
        "feature_dim": dim,
        "splits": {k: list(v) for k, v in splits.items()},
        "node_counts": node_counts,
        "encoder_checkpoint": "synthetic",
        "encoder_sha256": f"synthetic-seed-{seed}",
        "clip_length": config.STE_inputs["clip_length"],
        "synthetic": {"seed": seed, "nodes_per_session": nodes_per_session, "snr": snr},
    }
    if "train" in splits and "test" in splits:
        util.write_json(_encoder_metrics(readout), out_dir / "encoder_metrics.json")
    manifest_path = out_dir / "manifest.json"
    util.write_json(manifest, manifest_path)
    return manifest_path


def _encoder_metrics(readout: dict[str, dict[str, list]]) -> dict[str, Any]:
    train_targets = np.concatenate(readout["train"]["targets"])
    train_segments = segment_targets(readout["train"]["segment_ids"], train_targets)
    report = encoder_metrics(train_segments, train_targets, readout["test"]["segment_ids"],
                             np.concatenate(readout["test"]["targets"]), np.concatenate(readout["test"]["probs"]))
    return {**report, "note": "synthetic stand-in: each node read alone against the class prototypes"}


def proportional_splits(n_sessions: int) -> dict[str, tuple[int, ...]]:
    """Sessions 1..n split like KEMDy20's default (about 4/5 train, the rest half val, half test)."""
    if n_sessions < 3:
        raise ValueError("at least 3 sessions (train, val, test)")
    held_out = max(1, round(n_sessions / 10))
    train = n_sessions - 2 * held_out
    return {"train": tuple(range(1, train + 1)), "val": tuple(range(train + 1, train + held_out + 1)),
            "test": tuple(range(train + held_out + 1, n_sessions + 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=config.FEATURES_DIR)
    parser.add_argument("--sessions", type=int, default=6, help="sessions 1..N, split train/val/test")
    parser.add_argument("--nodes_per_session", type=int, default=600)
    parser.add_argument("--modality_dim", type=int, default=512, help="feature size of each modality")
    parser.add_argument("--snr", type=float, default=0.6, help="per-node class signal to noise")
    parser.add_argument("--seed", type=int, default=config.SEED)
    args = parser.parse_args()
    dims = dict.fromkeys(streams.feature_order(), args.modality_dim)
    print(write_synthetic_nodes(args.out, proportional_splits(args.sessions), args.nodes_per_session, dims,
                                seed=args.seed, snr=args.snr))


if __name__ == "__main__":
    util.run_cli(main)
