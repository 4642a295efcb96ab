"""The causal GNN and its online evaluation on synthetic node streams: no edge from a later node, the
online replay equals the model on one unchunked graph, the window stays bounded, checkpoints rebuild
the causal variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.core import util
from temporal_gnn import gnn_model, graph_building, online

DIMS = {"audio": 16, "eda": 8, "temp": 8}
TIME_EDGE = 3.0

pytestmark = pytest.mark.usefixtures("one_thread")


def causal_model(seed: int = 0) -> gnn_model.SPELL:
    """A causal model in eval mode with non-trivial BatchNorm statistics (as after training)."""
    torch.manual_seed(seed)
    model = gnn_model.SPELL(DIMS, channel1=16, channel2=8, causal=True)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def stream(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Nodes in graph_building's session order: 4 Hz timestamps over 60 s with ties (several speakers
    at one instant), three identities, random features."""
    rng = np.random.default_rng(seed)
    nodes = {"time_s": np.round(rng.uniform(0, 60, n) * 4) / 4 + 40000.0,
             "identity": rng.choice(["User001F", "User002M", "User003F"], n),
             "segment_id": np.array([f"seg{i:03d}" for i in range(n)])}
    order, codes = graph_building.session_order(nodes)
    return {**{k: v[order] for k, v in nodes.items()}, "codes": codes[order],
            "x": rng.standard_normal((n, sum(DIMS.values()))).astype(np.float32)}


def offline_logits(model: gnn_model.SPELL, nodes: dict[str, np.ndarray], cross_identity: str) -> torch.Tensor:
    edge_index, edge_attr = graph_building.build_edges(torch.from_numpy(nodes["time_s"]),
                                                       torch.from_numpy(nodes["codes"]), TIME_EDGE, cross_identity)
    with torch.no_grad():
        return model(torch.from_numpy(nodes["x"]), edge_index, edge_attr)


@pytest.mark.parametrize("cross_identity", ["cin", "ciy"])
def test_online_equals_offline_on_one_unchunked_graph(cross_identity: str) -> None:
    model, nodes = causal_model(), stream()
    expected = offline_logits(model, nodes, cross_identity)
    gnn = online.OnlineGNN(model, TIME_EDGE, cross_identity)
    times = nodes["time_s"]
    starts = np.flatnonzero(np.r_[True, times[1:] != times[:-1]])
    got, largest = [], 0
    for group in np.split(np.arange(len(times)), starts[1:]):
        got.append(gnn.push(times[group], nodes["identity"][group].tolist(), torch.from_numpy(nodes["x"][group])))
        largest = max(largest, gnn.window)
        # kept: only nodes at most TIME_EDGE before the newest instant
        assert float(gnn.times.min()) >= times[group[0]] - TIME_EDGE - 1e-9
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-5, rtol=0)
    assert largest < len(times) / 4  # bounded by the window, not by the session


def test_causal_model_reads_no_later_node() -> None:
    """Changing the features of every node after t leaves the logits of the nodes up to t unchanged;
    the offline three-branch model does look ahead."""
    nodes = stream()
    cut = int(np.searchsorted(nodes["time_s"], nodes["time_s"][150], side="right"))
    changed = {**nodes, "x": nodes["x"].copy()}
    changed["x"][cut:] += 3.0
    model = causal_model()
    before, after = offline_logits(model, nodes, "cin"), offline_logits(model, changed, "cin")
    torch.testing.assert_close(before[:cut], after[:cut], atol=0, rtol=0)
    assert not torch.allclose(before[cut:], after[cut:])
    torch.manual_seed(0)
    offline = gnn_model.SPELL(DIMS, channel1=16, channel2=8).eval()
    looks_ahead = offline_logits(offline, nodes, "cin")[:cut], offline_logits(offline, changed, "cin")[:cut]
    assert not torch.allclose(*looks_ahead)


def test_causal_branches_hold_only_past_and_same_instant_edges() -> None:
    nodes = stream(80)
    times = torch.from_numpy(nodes["time_s"])
    edge_index, edge_attr = graph_building.build_edges(times, torch.from_numpy(nodes["codes"]), TIME_EDGE, "ciy")
    branches = gnn_model.branch_edges(edge_index, edge_attr, causal=True)
    assert list(branches) == list(gnn_model.CAUSAL_BRANCHES)
    source, target = branches["past"]
    assert bool((times[source] <= times[target]).all())
    assert branches["past"].shape[1] == int((times[edge_index[0]] <= times[edge_index[1]]).sum())
    source, target = branches["instant"]
    assert bool((times[source] == times[target]).all())


def test_causal_checkpoint_rebuilds_the_causal_variant(tmp_path: Path) -> None:
    model = causal_model()
    assert util.count_parameters(gnn_model.SPELL({"audio": 512, "eda": 512, "temp": 512}, causal=True)) == 126_302
    gnn_model.save_checkpoint(model, tmp_path / "best.pth", epoch=1)
    loaded, _ = gnn_model.load_checkpoint(tmp_path / "best.pth")
    assert loaded.causal and loaded.branches == gnn_model.CAUSAL_BRANCHES
    nodes = stream(60)
    torch.testing.assert_close(offline_logits(loaded.eval(), nodes, "cin"), offline_logits(model, nodes, "cin"))
    with pytest.raises(util.DataError, match="another model shape"):
        gnn_model.load_checkpoint(tmp_path / "best.pth", gnn_model.SPELL(DIMS, channel1=16, channel2=8))


def test_online_refuses_an_offline_model_and_nodes_out_of_order() -> None:
    with pytest.raises(ValueError, match="causal"):
        online.OnlineGNN(gnn_model.SPELL(DIMS).eval(), TIME_EDGE)
    gnn = online.OnlineGNN(causal_model(), TIME_EDGE)
    gnn.push([10.0], ["User001F"], torch.zeros(1, 32))
    with pytest.raises(ValueError, match="time order"):
        gnn.push([9.75], ["User001F"], torch.zeros(1, 32))
