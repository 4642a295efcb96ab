"""The classical system (systems.py's `classical`, SPEC §5's fourth baseline) and the `prosody` node block.

Per segment the hand-crafted statistics of encoder/core/handcrafted.py (an eGeMAPS-like speech set, EDA
and TEMP statistics), each z-scored over the segments of its participant (session, identity) without
labels (handcrafted.participant_normalise; a causal run gets prefix statistics: the participant's
segments up to the current one, as `predict.py --online` sees them). The classifier: standardise, then a
class-balanced logistic regression (scikit-learn), its inverse regularisation C chosen from
config.CLASSICAL["C_grid"] by the validation sessions' segment macro-F1 (ties: the smaller C), fitted on
the training sessions: the same sessions and segments every other system sees (those of the GNN's graphs).

It reads the statistics of the signals the run's `--modalities` name (audio -> speech, eda, temp; the
`prosody` block is the speech statistics; text and the pretrained blocks have none): under `--ablation`
each subset's classical row is the classical system on that subset's signals. It needs the dataset root
the features were extracted from (the feature manifest's `root`); without one it is not fitted and the
run's notes say why. Speech statistics are cached per wav (handcrafted.FeatureCache under
config.CLASSICAL["cache_dir"], by default <root>/handcrafted_cache/), so a CV computes each segment's once.

Saved into the model folder as classical.npz (no pickle): the columns, the participant normalisation's
kind, the scaler's mean and scale, the coefficients, intercepts, classes and C; `predict.py` labels a
folder's segments with it beside the GNN.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder.core import config, dataset, extraction, frames, handcrafted, util
from encoder.core.metrics import classification_metrics, macro_f1
from temporal_gnn import graph_data

FILE = "classical.npz"
CACHE_DIR = "handcrafted_cache"  # under the dataset root
PROSODY = "prosody"  # the node block of the speech statistics (--modalities prosody,...)
SOURCES = {"audio": "audio", PROSODY: "audio", "eda": "eda", "temp": "temp"}  # modality -> handcrafted group


def groups_of(modalities: Sequence[str]) -> list[str]:
    """The handcrafted groups the classical system reads for these modalities, in handcrafted.GROUPS order."""
    wanted = {SOURCES[m] for m in modalities if m in SOURCES}
    return [group for group in handcrafted.GROUPS if group in wanted]


def data_root(features_dir: Path) -> Path | None:
    """The dataset root the features were extracted from (the feature manifest's `root`), None when the
    manifest names none or it has no dataframe artifacts (features not made from a KEMDy20 folder)."""
    path = Path(features_dir) / extraction.MANIFEST_FILE
    root = util.read_json(path).get("root") if path.is_file() else None
    if not root or not (Path(root) / "gt_aug.csv").is_file():
        return None
    return Path(root)


def feature_cache(root: Path, log: Callable[[str], None] = print) -> handcrafted.FeatureCache:
    """The speech statistics' cache for the dataset at `root`: config.CLASSICAL["cache_dir"], or
    <root>/handcrafted_cache/ when that is None; in memory only when caching is off or the folder cannot be
    written (a read-only download: `log` says so, and every run computes them again)."""
    if not config.CLASSICAL["cache"]:
        return handcrafted.FeatureCache(None, config.HANDCRAFTED)
    folder = Path(config.CLASSICAL["cache_dir"] or Path(root) / CACHE_DIR)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        log(f"classical: cannot write the cache folder {folder}; speech statistics kept in memory for this run "
            "(set config.CLASSICAL['cache_dir'] to a writable folder)")
        return handcrafted.FeatureCache(None, config.HANDCRAFTED)
    return handcrafted.FeatureCache(folder, config.HANDCRAFTED)


def participant_keys(segments: Sequence[Any]) -> list[tuple[int, str]]:
    return [(int(s.session), str(s.identity)) for s in segments]


def normalised_features(segments: Sequence[Any], groups: Sequence[str], cache: handcrafted.FeatureCache,
                        causal: bool, progress: bool = True) -> np.ndarray:
    """[n, columns] participant-normalised statistics of `segments` (dataset.Segment) for `groups`."""
    raw = handcrafted.segment_features(segments, cache, groups, progress=progress)
    starts = [float(s.origin) for s in segments]
    return handcrafted.participant_normalise(raw, participant_keys(segments), starts, causal=causal)


def graph_segments(graphs: dict[str, list], root: Path) -> dict[str, list[Any]]:
    """The dataset.Segment of every segment in the graphs of each split, in the graphs' first-seen order."""
    ids = {split: list(dict.fromkeys(graph_data.flatten([g.segment_id for g in graphs[split]])))
           for split in graphs}
    sessions = {split: sorted({util.parse_segment_id(i)["session"] for i in ids[split]}) for split in ids}
    table = dataset.load_segments(frames.load_frames(root), root, splits=sessions, wanted=tuple(sessions))
    by_id = {s.segment_id: s for split in table.by_split.values() for s in split}
    missing = [i for split in ids.values() for i in split if i not in by_id]
    if missing:
        raise util.DataError(f"{len(missing)} segments of the graphs (e.g. {missing[0]}) are not usable segments of "
                             "this root; were the features extracted from it?", root)
    return {split: [by_id[i] for i in ids[split]] for split in ids}


@dataclass
class ClassicalModel:
    """A fitted classical system: the columns it reads, standardisation, logistic regression, C."""

    columns: list[str]
    groups: list[str]
    causal: bool
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # [classes, columns]
    intercept: np.ndarray  # [classes]
    classes: np.ndarray  # int, indices into config.EMOTIONS
    C: float

    def probabilities(self, normalised: np.ndarray) -> np.ndarray:
        """[n, NUM_CLASSES] class probabilities (0 for a class absent from training)."""
        z = (np.nan_to_num(normalised) - self.mean) / self.scale
        logits = z @ self.coef.T + self.intercept
        if len(self.classes) == 2:  # scikit-learn's binary form: one coefficient row for the second class
            logits = np.concatenate([np.zeros((len(z), 1)), logits[:, :1]], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        full = np.zeros((len(z), config.NUM_CLASSES))
        full[:, self.classes] = probs
        return full

    def save(self, path: Path) -> None:
        settings = {"columns": self.columns, "groups": self.groups, "causal": self.causal, "C": self.C,
                    "handcrafted": util.to_jsonable(config.HANDCRAFTED)}
        with util.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept,
                     classes=self.classes, settings=np.array(json.dumps(settings)))

    @classmethod
    def load(cls, path: Path) -> ClassicalModel:
        """A saved system; util.DataError naming the file when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                settings = json.loads(str(data["settings"]))
                return cls(settings["columns"], settings["groups"], bool(settings["causal"]), data["mean"],
                           data["scale"], data["coef"], data["intercept"], data["classes"], float(settings["C"]))
        except (OSError, KeyError, ValueError) as err:
            raise util.DataError(f"not a classical system written by train_val.py ({err})", path) from None


def fit(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, columns: list[str],
        groups: list[str], causal: bool, seed: int) -> tuple[ClassicalModel, dict[float, float]]:
    """Fit one model per C of config.CLASSICAL["C_grid"] on the training rows and keep the one with the best
    validation macro-F1 (ties: the smaller C); returns it and every C's validation score."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.nan_to_num(x_train))
    z_train = scaler.transform(np.nan_to_num(x_train))
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    scores, best = {}, None
    for c in sorted(config.CLASSICAL["C_grid"]):
        regression = LogisticRegression(C=c, class_weight="balanced", max_iter=config.CLASSICAL["max_iter"],
                                        random_state=seed).fit(z_train, y_train)
        model = ClassicalModel(columns, groups, causal, scaler.mean_, scale, regression.coef_,
                               regression.intercept_, regression.classes_.astype(int), float(c))
        scores[float(c)] = macro_f1(y_val, model.probabilities(x_val).argmax(axis=1))
        if best is None or scores[float(c)] > scores[best.C]:
            best = model
    return best, scores


def fit_classical(context: Any) -> Any:
    """systems.py's trainer of the classical system (see the module docstring); None when it cannot be
    fitted here (no dataset root, or no signal it reads among the modalities), with the reason logged."""
    from temporal_gnn import gnn_training

    settings, log = context.settings, context.log
    started = time.time()
    modalities = settings.blocks or list(context.record["feature_dims"])
    groups = groups_of(modalities)
    if not groups:
        log(f"classical: none of the modalities {modalities} has hand-crafted statistics; not fitted")
        return None
    root = data_root(context.features_dir)
    if root is None:
        log("classical: the feature manifest names no KEMDy20 root with dataframe artifacts; not fitted")
        return None
    segments = context.segments or graph_segments(context.graphs, root)  # gnn_training's, when prosody loaded them
    order = [split for split in ("train", "val", "test") if split in segments]
    every = [s for split in order for s in segments[split]]
    values = normalised_features(every, groups, feature_cache(root, log), settings.causal)
    rows, start = {}, 0
    for split in order:
        rows[split] = values[start:start + len(segments[split])]
        start += len(segments[split])
    targets = {split: np.array([s.target for s in segments[split]], dtype=int) for split in order}
    columns = handcrafted.column_names(groups)
    model, scores = fit(rows["train"], targets["train"], rows["val"], targets["val"], columns, groups, settings.causal,
                        settings.seed)
    probs = model.probabilities(rows["test"])
    predictions = probs.argmax(axis=1)
    ids = [s.segment_id for s in segments["test"]]
    val_probs = model.probabilities(rows["val"])
    val = {"_segments": ([s.segment_id for s in segments["val"]], targets["val"], val_probs.argmax(axis=1), val_probs)}
    folder = Path(context.results) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / FILE)
    statistics = "prefix" if settings.causal else "whole-session"
    log(f"classical: {len(columns)} statistics of {', '.join(groups)} ({statistics}"
        f" participant statistics), C {model.C:g} (validation macro-F1 "
        + ", ".join(f"{c:g}: {s:.4f}" for c, s in scores.items())
        + f"), test segment macro-F1 {macro_f1(targets['test'], predictions):.4f}")
    test = {"segment": classification_metrics(targets["test"], predictions),
            "_segments": (ids, targets["test"], predictions, probs)}
    entry = {"segment": test["segment"], "C": model.C, "val_macro_f1": {f"{c:g}": s for c, s in scores.items()},
             "groups": groups, "columns": len(columns),
             "participant_statistics": "prefix" if settings.causal else "session",
             "segments": {split: len(segments[split]) for split in order}, "seconds": round(time.time() - started, 1)}
    record = {"file": FILE, "sha256": util.file_sha256(folder / FILE), "groups": groups, "C": model.C,
              "participant_statistics": entry["participant_statistics"]}
    return gnn_training.SystemResult(entry, test, record, val)


def segment_probabilities(path: Path, segments: Sequence[Any], progress: bool = False) -> dict[str, np.ndarray]:
    """Segment ID -> the class probabilities the classical system saved at `path` gives each of `segments`
    (predict.py), their statistics normalised over the segments given, as the system was trained: per
    participant over the whole folder, or with prefix statistics for a causal run's system."""
    model = ClassicalModel.load(path)
    values = normalised_features(segments, model.groups, handcrafted.FeatureCache(None, config.HANDCRAFTED),
                                 model.causal, progress)
    return {s.segment_id: p for s, p in zip(segments, model.probabilities(values), strict=True)}


def prosody_vectors(segments: Sequence[Any], cache: handcrafted.FeatureCache | None = None,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """Segment ID -> its `prosody` block: the participant-normalised speech statistics over the whole of
    `segments` (float32; a NaN statistic is the participant's mean, 0). Every node of a segment carries its
    segment's vector; a causal model reads no such block (gnn_model.WHOLE_SEGMENT_BLOCKS)."""
    cache = cache or handcrafted.FeatureCache(None, config.HANDCRAFTED)
    values = normalised_features(segments, ["audio"], cache, False, progress).astype(np.float32)
    return {s.segment_id: row for s, row in zip(segments, values, strict=True)}


def with_prosody(graphs: dict[str, list], record: dict[str, Any], features_dir: Path
                 ) -> tuple[dict[str, list], dict[str, Any], dict[str, list[Any]]]:
    """The graphs with the `prosody` block appended to every node's features (after the features' own
    blocks), the build record with it in `feature_dims` / `feature_order`, and the graphs' segments per
    split (graph_segments, for the classical system not to load them again); util.DataError when the
    features name no dataset root to compute it from."""
    root = data_root(features_dir)
    if root is None:
        raise util.DataError(f"the `{PROSODY}` block needs the dataset root the features were extracted from, and "
                             "the feature manifest names none with dataframe artifacts",
                             Path(features_dir) / extraction.MANIFEST_FILE)
    segments = graph_segments(graphs, root)
    vectors = prosody_vectors([s for split in segments.values() for s in split], cache=feature_cache(root))
    dim = len(handcrafted.SPEECH_NAMES)
    extended = {}
    for split, split_graphs in graphs.items():
        extended[split] = []
        for graph in split_graphs:
            block = np.stack([vectors[i] for i in graph.segment_id])
            graph = graph.clone()
            graph.x = torch.cat([graph.x, torch.from_numpy(block).to(graph.x.dtype)], dim=1)
            extended[split].append(graph)
    record = {**record, "feature_dims": {**record["feature_dims"], PROSODY: dim},
              "feature_order": [*record.get("feature_order", record["feature_dims"]), PROSODY]}
    return extended, record, segments
