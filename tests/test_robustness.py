"""A training killed mid-epoch (SIGTERM) resumes from its last checkpoint and ends where an
uninterrupted run of the same seed ends."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from encoder.core import checkpoints, config

ENCODER_DIR = config.REPO_ROOT / "encoder"
SPECTROGRAM = {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16}
EPOCHS = 3


def train_command(root: Path, out_dir: Path, *extra: str) -> list[str]:
    flags = [f"--{k}={v}" for k, v in SPECTROGRAM.items()]
    return [sys.executable, "STE_train.py", "11", "cpu", "--root", str(root), "--out_dir", str(out_dir),
            "--epochs", str(EPOCHS), "--batch_size", "8", "--num_workers", "0", "--seed", "3", *flags, *extra]


def read_log(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "ste_encoder_logs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_killed_mid_epoch_resumes_to_the_same_result(tiny_root, tmp_path):
    """The uninterrupted reference runs as the killed one does, in a process of its own with
    OMP_NUM_THREADS=1: float32 matrix products (numpy's BLAS, torch) round by their thread count."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(train_command(tiny_root, killed_dir), cwd=ENCODER_DIR, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed_dir / "epoch_001.pth").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert not (killed_dir / f"epoch_{EPOCHS:03d}.pth").exists()
    assert not list(killed_dir.glob(".*.tmp")), "a half-written file was left behind"

    resumed = subprocess.run(train_command(tiny_root, killed_dir, "--resume"), cwd=ENCODER_DIR, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    straight_dir = tmp_path / "straight"
    straight = subprocess.run(train_command(tiny_root, straight_dir), cwd=ENCODER_DIR, env=env,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]

    after_kill, uninterrupted = read_log(killed_dir), read_log(straight_dir)
    assert [int(r["epoch"]) for r in after_kill] == list(range(1, EPOCHS + 1))
    for ours, reference in zip(after_kill, uninterrupted, strict=True):
        for key in ("loss_total", "val_loss", "val_macro_f1"):
            assert float(ours[key]) == pytest.approx(float(reference[key]), rel=1e-4, abs=1e-6), key
    best_killed = checkpoints.load_encoder_checkpoint(killed_dir / "best.pth")
    best_straight = checkpoints.load_encoder_checkpoint(straight_dir / "best.pth")
    assert best_killed["epoch"] == best_straight["epoch"]
