"""Helpers shared by every stage: errors for bad input, atomic writes, seeding, settings, manifests
and session splits. Metrics live in metrics.py."""

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


@contextlib.contextmanager
def exclusive_lock(path: Path, holder: str) -> Iterator[None]:
    """Hold an exclusive lock (fcntl.flock) on `path`, created when missing, while the block runs; the file
    records the holder's pid. A second process is refused at once with a DataError naming that pid and
    `holder` (what holds it, e.g. "run_pipeline.py"). The kernel drops the lock when its process ends,
    however it ends, so a lock file left by a killed run blocks nothing."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            raise DataError(f"another {holder} (pid {pid}) is running on this folder; wait for it to end or give "
                            "another folder", path) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield


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


def link_file(source: Path, target: Path) -> None:
    """Hard link `source` as `target` (a new name), or copy it where a link is impossible (another file
    system). A file written atomically (atomic_path) is replaced, never rewritten in place, so the names
    of one linked file never see each other's later writes."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def atomic_link(source: Path, path: Path) -> None:
    """`path` becomes a hard link to `source` (link_file), replacing `path` only once the link exists."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        link_file(source, tmp)


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


# --------------------------------------------------------------------------- settings and reproducibility


def merge_settings(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`defaults` updated by `overrides`; unknown keys are an error (a typo would otherwise be ignored)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **overrides}


def count_parameters(model: Any) -> int:
    """Number of parameters of a torch module (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch on `count` CPU threads inside the block, the caller's count restored after it. Float sums
    depend on the thread count, so a stage that fixes it gives the same numbers whatever ran before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_blas_thread() -> Any:
    """A context in which NumPy's BLAS runs on one thread. Where the data loader runs in the process that
    runs the model (num_workers 0, the demo's setting), the mel projection's BLAS threads otherwise spin
    on the cores after each call and slow torch's own threads: the segment pass's extraction took 2.3x as
    long with them on 2 cores (benchmarks/bench_forward.py)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def loader_worker_init(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one BLAS thread per worker process. Torch already gives each worker
    one thread, but NumPy's BLAS (the mel projection) would start one thread per core in every worker:
    with 14 workers on 16 cores that oversubscription made batched extraction on a GPU machine 100x
    slower than the model (benchmarks/results/gpu_*.json)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


ENVIRONMENT_PACKAGES = ("torch", "torchvision", "torch_geometric", "numpy", "scipy", "sklearn", "pandas", "librosa")


def environment(device: Any = "cpu") -> dict[str, Any]:
    """What a result was computed with, for its results folder: the repository's commit (and whether the
    working tree had uncommitted changes), Python and package versions, torch's CPU threads, the device
    and the processor. Figures differ across machines in their last digits; this says which machine."""
    import importlib
    import platform
    import subprocess

    import torch

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    packages = {}
    for name in ENVIRONMENT_PACKAGES:
        try:
            packages[name] = importlib.import_module(name).__version__
        except ImportError:
            packages[name] = None
    device = torch.device(device) if not isinstance(device, torch.device) else device
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": None if status is None else bool(status),
        "python": platform.python_version(),
        "packages": packages,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def cuda_determinism(deterministic: bool, device: Any) -> None:
    """On a CUDA `device`: deterministic algorithms with cuDNN autotuning off (True: seed_everything's setting,
    the same weights run after run) or cuDNN's fastest kernels, autotuned per shape (False: faster, not
    reproducible bit for bit). Nothing on another device, whose kernels do not change with it
    (config.STE_optimization_params["deterministic"])."""
    import torch

    if torch.device(device).type != "cuda":
        return
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


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


def session_splits(splits: dict[str, Sequence[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """Sessions per split: `splits` as they are (tuples), or config.SPLITS when None. Never re-split:
    cross-validation (`run_pipeline.py --cv K`, cv_splits) passes each fold's splits explicitly."""
    splits = config.SPLITS if splits is None else splits
    return {name: tuple(sessions) for name, sessions in splits.items()}


def cv_folds(sessions: Sequence[int], k_folds: int) -> list[tuple[int, ...]]:
    """`sessions` sorted and cut into `k_folds` contiguous folds whose sizes differ by at most one
    (the larger folds first), e.g. 1..40 in 5 folds: 1-8, 9-16, 17-24, 25-32, 33-40."""
    ordered = sorted({int(s) for s in sessions})
    if not 2 <= k_folds <= len(ordered):
        raise ValueError(f"{k_folds} folds do not fit {len(ordered)} sessions (2 to {len(ordered)} folds)")
    return [tuple(part.tolist()) for part in np.array_split(np.array(ordered), k_folds)]


def cv_splits(sessions: Sequence[int], k_folds: int, fold: int) -> dict[str, tuple[int, ...]]:
    """Fold `fold` of the session cross-validation: its sessions (cv_folds) are the test set; of the
    remaining sessions, a share as large as the default split's (config.SPLITS: 4 validation of 36
    non-test sessions) validates, rounded, at least one, and leaving at least one to train; the rest
    train. Over the folds every session is tested exactly once, and a fold trains on about as many
    sessions as the default split (1..40 in 5 folds: test 8, validation round(32 * 4/36) = 4, train 28).

    The validation sessions are evenly spaced over the remaining sessions in sorted order (the middle of
    each of n_val equal stretches): deterministic, and spread over the whole recording period rather
    than one contiguous block, so model selection sees sessions from every part of the data the fold
    trains on instead of the neighbourhood of one fold."""
    folds = cv_folds(sessions, k_folds)
    if not 0 <= fold < k_folds:
        raise ValueError(f"fold {fold} is not one of 0..{k_folds - 1}")
    test = folds[fold]
    rest = [s for k, part in enumerate(folds) if k != fold for s in part]
    if len(rest) < 2:
        raise ValueError(f"fold {fold} of {k_folds} leaves {len(rest)} non-test session(s): one validation and "
                         "one training session are needed")
    val_count, non_test = len(config.SPLITS["val"]), len(config.SPLITS["train"]) + len(config.SPLITS["val"])
    n_val = min(max(1, (2 * len(rest) * val_count + non_test) // (2 * non_test)), len(rest) - 1)  # rounded
    val = tuple(rest[(2 * i + 1) * len(rest) // (2 * n_val)] for i in range(n_val))
    train = tuple(s for s in rest if s not in val)
    return {"train": train, "val": val, "test": tuple(test)}


def split_of_session(session: int, splits: dict[str, Sequence[int]] | None = None) -> str | None:
    splits = session_splits() if splits is None else splits
    for name, sessions in splits.items():
        if session in sessions:
            return name
    return None
