"""`torchrun` with two Gloo processes on CPU: DDP training saves once (rank 0); extraction shards
sessions over the ranks and still writes every session."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from encoder.core import config, training, util

ENCODER_DIR = config.REPO_ROOT / "encoder"
TINY_FLAGS = ["--sample_rate", "4000", "--n_fft", "256", "--win_length", "250", "--hop_length", "250",
              "--n_mels", "16"]


def torchrun(script: str, *args: str) -> subprocess.CompletedProcess:
    torchrun_bin = Path(sys.executable).with_name("torchrun")
    if not torchrun_bin.exists():
        pytest.skip("torchrun not installed beside the interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(torchrun_bin), "--standalone", "--nproc_per_node=2", script, "11", "cpu", *args],
        cwd=ENCODER_DIR, capture_output=True, text=True, timeout=600, env=env,
    )


def test_two_process_gloo_training_and_sharded_extraction(tiny_root, tmp_path):
    out_dir = tmp_path / "ste"
    result = torchrun("STE_train.py", "--root", str(tiny_root), "--out_dir", str(out_dir), "--epochs", "1",
                      "--batch_size", "8", "--num_workers", "0", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out_dir.glob("*.pth")) == ["best.pth", "epoch_001.pth"]
    assert not list(out_dir.glob(".*tmp"))
    assert util.read_json(out_dir / training.CONFIG_NAME)["world_size"] == 2
    assert result.stdout.count("best epoch") == 1

    features = tmp_path / "features"
    result = torchrun("STE_forward.py", "--root", str(tiny_root), "--checkpoint", str(out_dir / "best.pth"),
                      "--features_dir", str(features), "--num_workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = util.read_json(features / "manifest.json")
    assert manifest["world_size"] == 2
    written = sorted(p.relative_to(features).as_posix() for p in features.glob("features_*/*.pkl"))
    expected = sorted(f"features_{split}/Sess{s:02d}.pkl" for split, ss in manifest["splits"].items() for s in ss)
    assert written == expected and len(written) == 4
    assert set(util.read_json(features / "encoder_metrics.json")) == {"test", "baselines"}
