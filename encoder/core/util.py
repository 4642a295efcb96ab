"""Helpers shared by every stage: errors for bad input, atomic writes, seeding, manifests, splits
and the classification metrics of SPEC §5 (node and segment level, majority baseline)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config

# Order of the fields in a node row of features/features_{split}/SessSS.pkl (a list of tuples):
# session (int), time_s (float, seconds of day), identity ("User002M"), label (float32[7], the listed
# labels as a normalised multi-hot), target (int, first listed label: the metric target), segment_id,
# feature (float32[D], D = 1536 = audio 512 | EDA 512 | TEMP 512, order recorded in the manifest).
NODE_COLUMNS = ("session", "time_s", "identity", "label", "target", "segment_id", "feature")

SEGMENT_ID_RE = re.compile(r"^Sess(\d{2})_script(\d{2})_(User(\d{3})([FM]))_(\d{3})$")


class DataError(Exception):
    """Bad input: carries the file (and row) it concerns so the message fits on one line."""

    def __init__(self, message: str, path: Path | str | None = None, row: int | None = None):
        self.path = Path(path) if path is not None else None
        self.row = row
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(f"{where}{message}")


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's main(); bad input ends it with a one-line error on stderr and exit status 1.
    SIGTERM unwinds like an exception, so files being written are removed rather than left behind."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        result = main()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


# --------------------------------------------------------------------------- files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(data: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg})", path, err.lineno) from None


def to_jsonable(value: Any) -> Any:
    """Convert paths, tuples, numpy scalars and arrays into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- reproducibility


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# --------------------------------------------------------------------------- sessions and splits


def parse_segment_id(segment_id: str) -> dict[str, Any]:
    """Split `Sess01_script01_User002M_001` into session, script, identity, gender and index."""
    match = SEGMENT_ID_RE.match(segment_id)
    if match is None:
        raise ValueError(f"not a KEMDy20 segment ID: {segment_id!r}")
    session, script, identity, user, gender, index = match.groups()
    return {
        "session": int(session),
        "script": int(script),
        "identity": identity,
        "user": int(user),
        "gender": gender,
        "index": int(index),
    }


def session_splits(
    splits: dict[str, Sequence[int]] | None = None, k_folds: int | None = None, fold: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Sessions per split. With k_folds > 1 the train+val sessions of `splits` are cut into k folds
    by session; fold `fold` becomes validation and the rest training. Test sessions never move."""
    splits = dict(config.SPLITS if splits is None else splits)
    k_folds = config.K_FOLDS if k_folds is None else k_folds
    fold = config.FOLD if fold is None else fold
    if k_folds <= 1:
        return {name: tuple(sessions) for name, sessions in splits.items()}
    pool = sorted(set(splits["train"]) | set(splits["val"]))
    if not 0 <= fold < k_folds or k_folds > len(pool):
        raise ValueError(f"fold {fold} of {k_folds} does not fit {len(pool)} sessions")
    val = tuple(pool[fold::k_folds])
    train = tuple(s for s in pool if s not in val)
    return {"train": train, "val": val, "test": tuple(splits["test"])}


def split_of_session(session: int, splits: dict[str, Sequence[int]] | None = None) -> str | None:
    splits = session_splits() if splits is None else splits
    for name, sessions in splits.items():
        if session in sessions:
            return name
    return None


# --------------------------------------------------------------------------- labels and metrics


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str] = config.EMOTIONS
) -> dict[str, Any]:
    """Accuracy, macro/weighted/micro F1, per-class precision/recall/F1/support and the confusion
    matrix (rows = true class, columns = predicted class, in `class_names` order)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def segment_predictions(
    segment_ids: Sequence[str], probs: np.ndarray, targets: Sequence[int]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate node predictions to segments: a segment's probabilities are the mean of its nodes'.
    Returns (segment ids in first-seen order, segment targets, segment predictions, mean probs)."""
    segment_ids = np.asarray(segment_ids)
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    uniq, first, inverse = np.unique(segment_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.zeros((len(uniq), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    mean = (sums / counts)[order]
    seg_targets = targets[first][order]
    return list(uniq[order]), seg_targets, mean.argmax(axis=1), mean


def majority_class(train_targets: Sequence[int]) -> int:
    """The most frequent training class (ties go to the lower class index)."""
    counts = np.bincount(np.asarray(train_targets, dtype=int), minlength=config.NUM_CLASSES)
    return int(counts.argmax())


def majority_baseline(train_targets: Sequence[int], eval_targets: Sequence[int]) -> dict[str, Any]:
    """Metrics of always predicting the training majority class on `eval_targets`."""
    eval_targets = np.asarray(eval_targets, dtype=int)
    prediction = np.full_like(eval_targets, majority_class(train_targets))
    return classification_metrics(eval_targets, prediction)


def format_table(rows: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str] = ("accuracy", "macro_f1",
                                                                                   "weighted_f1")) -> str:
    """A small fixed-width table: one row per (name, metrics) pair."""
    name_width = max(12, *(len(name) for name, _ in rows))
    header = f"{'':{name_width}}  " + "  ".join(f"{k:>11}" for k in keys)
    lines = [header]
    for name, metrics in rows:
        lines.append(f"{name:{name_width}}  " + "  ".join(f"{metrics[k]:>11.4f}" for k in keys))
    return "\n".join(lines)
