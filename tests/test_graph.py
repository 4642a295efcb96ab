"""Graph stage: the edge rule against a naive pairwise reference, branch masks, graph layout, the
build record (skip, refuse, force) and bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.core import config, util
from encoder.core.synthetic_nodes import write_synthetic_nodes
from temporal_gnn import gnn_model, graph_building, graph_data

DIMS = {"audio": 8, "eda": 4, "temp": 4}
SPLITS = {"train": (1, 2), "val": (3,), "test": (4,)}


def naive_edges(times: list[float], identities: list[str], time_edge: float, cross_identity: str) -> set:
    """The edge rule (generate_graph.py's docstring) pair by pair: {(j, k, sign(t_j - t_k))}."""
    edges = set()
    for j, tj in enumerate(times):
        for k, tk in enumerate(times):
            delta = tj - tk
            same = cross_identity == "ciy" or identities[j] == identities[k]
            if delta == 0 or (abs(delta) <= time_edge and same):
                edges.add((j, k, float(np.sign(delta))))
    return edges


def edge_set(edge_index: torch.Tensor, edge_attr: torch.Tensor) -> set:
    triples = list(zip(*edge_index.tolist(), edge_attr.tolist(), strict=True))
    assert len(triples) == len(set(triples)), "duplicate edges"
    return set(triples)


def random_nodes(rng: np.random.Generator, n: int) -> tuple[list[float], list[str]]:
    """Times on the 0.25 s grid (many ties, differences exactly at the edge length) mixed with
    arbitrary floats, in random order; three identities."""
    grid = rng.integers(0, 40, n) * 0.25 + 36000.0
    times = np.where(rng.random(n) < 0.3, grid + rng.random(n) * 3, grid)
    identities = rng.choice(["User001F", "User002M", "User003F"], n)
    return times.tolist(), identities.tolist()


@pytest.mark.parametrize("cross_identity", ["cin", "ciy"])
@pytest.mark.parametrize("time_edge", [0.0, 0.5, 1.0, 2.5, 7.2])
def test_edges_equal_naive_reference(cross_identity: str, time_edge: float) -> None:
    rng = np.random.default_rng(int(time_edge * 10) + (cross_identity == "ciy"))
    for n in (1, 2, 37, 90):
        times, identities = random_nodes(rng, n)
        codes = torch.from_numpy(np.unique(identities, return_inverse=True)[1])
        edge_index, edge_attr = graph_building.build_edges(torch.tensor(times, dtype=torch.float64), codes,
                                                           time_edge, cross_identity)
        assert edge_index.dtype == torch.long and edge_attr.dtype == torch.float32
        assert edge_set(edge_index, edge_attr) == naive_edges(times, identities, time_edge, cross_identity)


def test_ties_link_across_identities_and_self_loops() -> None:
    times = torch.tensor([10.0, 10.0, 12.0], dtype=torch.float64)
    edges = edge_set(*graph_building.build_edges(times, torch.tensor([0, 1, 1]), 7.2, "cin"))
    assert edges == {(0, 0, 0.0), (1, 1, 0.0), (2, 2, 0.0), (0, 1, 0.0), (1, 0, 0.0), (1, 2, -1.0), (2, 1, 1.0)}


def test_branch_masks() -> None:
    times = torch.tensor([0.0, 0.25, 0.25, 3.0, 20.0], dtype=torch.float64)
    edge_index, edge_attr = graph_building.build_edges(times, torch.tensor([0, 0, 1, 0, 0]), 7.2, "ciy")
    branches = gnn_model.branch_edges(edge_index, edge_attr)
    t = times.tolist()
    as_pairs = {name: set(map(tuple, e.t().tolist())) for name, e in branches.items()}
    assert as_pairs["undirected"] == set(map(tuple, edge_index.t().tolist()))
    assert as_pairs["forward"] == {(j, k) for j, k in as_pairs["undirected"] if t[j] >= t[k]}
    assert as_pairs["backward"] == {(j, k) for j, k in as_pairs["undirected"] if t[j] <= t[k]}
    ties = as_pairs["forward"] & as_pairs["backward"]
    assert ties == {(j, k) for j, k in as_pairs["undirected"] if t[j] == t[k]}
    assert {(i, i) for i in range(5)} <= ties and (1, 2) in ties


def test_session_graphs_order_cut_and_payload(tmp_path: Path) -> None:
    write_synthetic_nodes(tmp_path, SPLITS, nodes_per_session=230, feature_dims=DIMS, seed=3)
    path = tmp_path / "features_train" / "Sess01.pkl"
    rows = pickle.loads(path.read_bytes())
    nodes = graph_building.read_nodes(path, sum(DIMS.values()))
    graphs = list(graph_building.session_graphs(nodes, 100, 7.2, "cin"))
    assert [g.num_nodes for g in graphs] == [100, 100, len(rows) - 200]
    expected = sorted(rows, key=lambda r: (r[1], r[2], r[5]))
    got = [(t, i, s) for g in graphs for t, i, s in zip(g.time_s.tolist(), g.identity, g.segment_id, strict=True)]
    assert got == [(r[1], r[2], r[5]) for r in expected]
    by_key = {(r[1], r[2], r[5]): r for r in rows}
    g = graphs[1]
    for i in (0, 57, 99):
        row = by_key[(g.time_s[i].item(), g.identity[i], g.segment_id[i])]
        assert torch.equal(g.x[i], torch.from_numpy(row[6])) and torch.equal(g.y[i], torch.from_numpy(row[3]))
        assert g.target[i].item() == row[4] and g.session[i].item() == 1
    assert g.x.dtype == torch.float32 and g.y.shape == (100, config.NUM_CLASSES) and g.target.dtype == torch.long
    assert g.edge_attr.shape == (g.num_edges,) and set(g.edge_attr.unique().tolist()) <= {-1.0, 0.0, 1.0}
    loops = g.edge_index[0] == g.edge_index[1]
    assert (g.edge_attr[loops] == 0).all()
    assert "edge_weight" not in g  # no layer reads an edge weight, so none is stored (--edge_weight changes nothing)


def build_args(features: Path, graphs: Path, *extra: str) -> list[str]:
    return ["--features_dir", str(features), "--graphs_dir", str(graphs), "--numv", "120", *extra]


def test_build_skip_refuse_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    features, graphs = tmp_path / "features", tmp_path / "graphs"
    write_synthetic_nodes(features, SPLITS, nodes_per_session=250, feature_dims=DIMS, seed=1)
    out = graph_building.run(build_args(features, graphs))
    assert out == graphs / "features_120_7.2_cin"
    record = util.read_json(out / graph_data.BUILD_FILE)
    assert record["feature_manifest_sha256"] == util.file_sha256(features / "manifest.json")
    assert record["build"]["numv"] == 120 and record["feature_dims"] == DIMS
    dataset = graph_data.GraphDataset(out / "test")
    assert len(dataset) == 3 and set(dataset[0].session.tolist()) == {4}
    assert dataset.processed_file_names[0] == "Sess04_000.pt"

    graph_building.run(build_args(features, graphs))
    assert "up to date, skipped" in capsys.readouterr().out

    write_synthetic_nodes(features, SPLITS, nodes_per_session=250, feature_dims=DIMS, seed=2)
    with pytest.raises(util.DataError, match="another feature manifest") as err:
        graph_building.run(build_args(features, graphs))
    assert str(out) in str(err.value)
    graph_building.run(build_args(features, graphs, "--force", "--workers", "2"))
    assert util.read_json(out / graph_data.BUILD_FILE)["feature_manifest_sha256"] == util.file_sha256(
        features / "manifest.json")


@pytest.mark.parametrize("bad_feature", [np.zeros(3, dtype=np.float32), np.full(16, np.nan, dtype=np.float32)])
def test_bad_node_row_names_file_and_row_and_leaves_nothing(tmp_path: Path, bad_feature: np.ndarray) -> None:
    features, graphs = tmp_path / "features", tmp_path / "graphs"
    write_synthetic_nodes(features, SPLITS, nodes_per_session=50, feature_dims=DIMS, seed=1)
    path = features / "features_val" / "Sess03.pkl"
    rows = pickle.loads(path.read_bytes())
    rows[7] = rows[7][:6] + (bad_feature,)
    path.write_bytes(pickle.dumps(rows))
    with pytest.raises(util.DataError, match="row 7") as err:
        graph_building.run(build_args(features, graphs))
    assert str(path) in str(err.value)
    assert not list(graphs.iterdir())


def test_missing_graph_folder(tmp_path: Path) -> None:
    with pytest.raises(util.DataError) as err:
        graph_data.GraphDataset(tmp_path / "nowhere" / "train")
    assert str(tmp_path / "nowhere" / "train" / "processed") in str(err.value)
    with pytest.raises(util.DataError) as err:
        graph_data.read_build_record(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_cli_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_features"
    result = subprocess.run(
        [sys.executable, "generate_graph.py", "--features_dir", str(missing), "--graphs_dir", str(tmp_path)],
        cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing / 'manifest.json'}: file not found"]
    assert "Traceback" not in result.stderr
