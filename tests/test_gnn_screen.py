"""benchmarks/gnn_screen.py's study transform: per-participant centring of the encoder's node blocks,
checked on synthetic node files against a mean taken by hand."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from script_module import load_script

from encoder.core import synthetic_nodes

DIMS = {"audio": 4, "eda": 2, "temp": 2, "text": 3}  # the encoder's blocks first, then a block it did not make


def test_centring_removes_each_participants_mean_from_the_encoders_blocks_only(tmp_path: Path) -> None:
    screen = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "gnn_screen.py")
    synthetic_nodes.write_synthetic_nodes(tmp_path, {"train": (1, 2), "val": (3,), "test": (4,)},
                                          nodes_per_session=40, feature_dims=DIMS)
    path = tmp_path / "features_train" / "Sess01.pkl"
    before = pickle.loads(path.read_bytes())
    screen.centre_embeddings(tmp_path)
    after = pickle.loads(path.read_bytes())
    x0, x1 = np.stack([n[6] for n in before]), np.stack([n[6] for n in after])
    identity = np.array([n[2] for n in before])
    assert len(set(identity)) == 2
    for who in set(identity):
        rows = identity == who
        np.testing.assert_allclose(x1[rows, :8], x0[rows, :8] - x0[rows, :8].mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(x1[rows, :8].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_array_equal(x1[:, 8:], x0[:, 8:])  # the text block untouched
    for new, old in zip(after, before, strict=True):  # everything but the features as it was
        assert (*new[:3], *new[4:6]) == (*old[:3], *old[4:6]) and np.array_equal(new[3], old[3])
