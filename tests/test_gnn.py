"""GNN stage: model shape and parameter count, checkpoints, hand-worked metrics, and a short training
run on synthetic graphs (beats the majority baseline, reports only val/test sessions, deterministic)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.nn import EdgeConv

from encoder.core import config, metrics, util
from encoder.core.synthetic_nodes import write_synthetic_nodes
from temporal_gnn import gnn_model, gnn_training, graph_building, graph_data

DIMS = {"audio": 16, "eda": 8, "temp": 8}
SPLITS = {"train": (1, 2, 3, 4, 5, 6), "val": (7, 8), "test": (9, 10)}
GRAPH_FLAGS = ["--numv", "100", "--time_edge", "3"]
TRAIN_FLAGS = ["--channel1", "16", "--channel2", "8", "--lr", "0.01", "--batch_size", "4", "--patience", "0"]



@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gnn")
    write_synthetic_nodes(root / "features", SPLITS, nodes_per_session=400, feature_dims=DIMS, seed=0, snr=2.0)
    return graphs_of(root)


def graphs_of(root: Path, graph_flags: list[str] = GRAPH_FLAGS) -> dict[str, Path]:
    """Graphs of the node files in root/features, in root/graphs."""
    flags = ["--features_dir", str(root / "features"), "--graphs_dir", str(root / "graphs"), *graph_flags]
    graph_building.run(flags)
    return {"root": root, "features": root / "features", "graphs": root / "graphs"}


def train_args(data: dict[str, Path], results: Path, *extra: str, graph_flags: list[str] = GRAPH_FLAGS) -> list[str]:
    return ["--features_dir", str(data["features"]), "--graphs_dir", str(data["graphs"]),
            "--results_dir", str(results), *graph_flags, *TRAIN_FLAGS, *extra]


@pytest.fixture(scope="module")
def trained(dataset: dict[str, Path]) -> dict:
    """One short training run; every graph handed to `predict` is recorded by its sessions."""
    seen: list[int] = []
    original = gnn_training.predict

    def recording_predict(model, graphs, *args, **kwargs):
        seen.extend(int(s) for g in graphs for s in g.session.unique())
        return original(model, graphs, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gnn_training, "predict", recording_predict)
        metrics = gnn_training.run(train_args(dataset, dataset["root"] / "results", "--num_epoch", "12", "--exp",
                                              "run"))
    return {"metrics": metrics, "predicted_sessions": set(seen), "out": dataset["root"] / "results" / "run"}


def test_parameter_count_of_default_model() -> None:
    model = gnn_model.SPELL({"audio": 512, "eda": 512, "temp": 512})
    assert util.count_parameters(model) == 139_109  # worked out in gnn_model's docstring
    audio_only = gnn_model.SPELL({"audio": 512, "eda": 512, "temp": 512}, ["audio"])
    assert util.count_parameters(audio_only) == 139_109 - 2 * (512 * 64 + 64)


def test_logits_shape_and_modality_slices() -> None:
    torch.manual_seed(0)
    x = torch.randn(30, 32)
    times = torch.arange(30, dtype=torch.float64) * 0.25
    edge_index, edge_attr = graph_building.build_edges(times, torch.zeros(30, dtype=torch.long), 1.0)
    model = gnn_model.SPELL(DIMS, ["eda"]).eval()
    logits = model(x, edge_index, edge_attr)
    assert logits.shape == (30, 7) and not torch.allclose(logits.exp().sum(1), torch.ones(30))
    changed = x.clone()
    changed[:, :16] += 5.0  # the audio block, unused by an EDA-only model
    changed[:, 24:] -= 5.0  # the temp block
    assert torch.equal(model(changed, edge_index, edge_attr), logits)
    with pytest.raises(ValueError, match="modalities"):
        gnn_model.SPELL(DIMS, ["video"])


def test_checkpoint_of_another_shape(tmp_path: Path) -> None:
    path = tmp_path / "best.pth"
    gnn_model.save_checkpoint(gnn_model.SPELL(DIMS, channel1=8), path, epoch=3)
    model, ckpt = gnn_model.load_checkpoint(path)
    assert model.channel1 == 8 and ckpt["epoch"] == 3
    with pytest.raises(util.DataError, match="another model shape") as err:
        gnn_model.load_checkpoint(path, gnn_model.SPELL(DIMS, channel1=16))
    assert str(path) in str(err.value)
    with pytest.raises(util.DataError, match="not found") as err:
        gnn_model.load_checkpoint(tmp_path / "missing.pth")
    assert str(tmp_path / "missing.pth") in str(err.value)


def test_metrics_against_hand_worked_confusion() -> None:
    # true 0 0 0 1 1 2, predicted 0 0 1 1 2 2 -> confusion [[2,1,0],[0,1,1],[0,0,1]]
    # F1: class a 2*1*(2/3)/(1+2/3) = 0.8, class b 0.5, class c 2*(1/2)*1/(3/2) = 2/3
    m = metrics.classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], class_names=("a", "b", "c"))
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6) and m["micro_f1"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    # segments: s1 = mean of two nodes -> class 1; s2 one node -> class 0
    ids, targets, pred, _ = metrics.segment_predictions(
        ["s1", "s2", "s1"], [[0.6, 0.4], [0.9, 0.1], [0.1, 0.9]], [1, 0, 1])
    assert ids == ["s1", "s2"] and targets.tolist() == [1, 0] and pred.tolist() == [1, 0]


def test_model_selection_score_is_the_segment_macro_f1_of_evaluate() -> None:
    # segments A (target 0): nodes [0.6, 0.4] and [0.2, 0.8] -> mean [0.4, 0.6] -> 1; B (target 1): 1;
    # C (target 1): 0. Class 0: no hit, one false positive, one miss -> F1 0; class 1: one hit, one false
    # positive, one miss -> F1 0.5; macro over the present classes 0.25 (at node level it would differ)
    pred = {"segment_ids": ["A", "B", "A", "C"], "targets": np.array([0, 1, 0, 1]),
            "probs": np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.9, 0.1]]), "sessions": np.zeros(4)}
    assert gnn_training.segment_macro_f1(pred) == pytest.approx(0.25)
    assert gnn_training.segment_macro_f1(pred) == gnn_training.evaluate(pred)["segment"]["macro_f1"]


def test_training_beats_majority_and_writes_results(trained: dict) -> None:
    metrics, out = trained["metrics"], trained["out"]
    gnn = metrics["test"]["segment"]["macro_f1"]
    assert gnn > metrics["baselines"]["majority"]["segment"]["macro_f1"] + 0.1
    assert metrics["metrics_path"] == str(out / "metrics.json")
    stored = util.read_json(out / "metrics.json")
    assert stored["test"]["segment"]["macro_f1"] == gnn
    assert {"node", "segment"} <= set(stored["test"]) and stored["baselines"]["encoder"]["segment"]["n"] > 0
    assert 1 <= stored["best"]["epoch"] <= 12 and len(stored["history"]["train_loss"]) == 12
    # the folder says what it was computed with: the commit, package versions, threads and device
    env = stored["environment"]
    assert env["device"] == "cpu" and env["packages"]["torch"] == torch.__version__
    assert env["torch_threads"] >= 1 and len(env["commit"] or "0" * 40) == 40
    for name in ("log.txt", "best.pth", "confusion_test.png", "curves.png", "predictions_test.csv"):
        assert (out / name).stat().st_size > 0
    model, ckpt = gnn_model.load_checkpoint(out / "best.pth")
    assert ckpt["epoch"] == stored["best"]["epoch"] and model.config == stored["model"]["config"]
    # the model folder and metrics.json record the settings objects it was trained with
    recorded = util.read_json(out / "model" / "model.json")["settings"]
    assert recorded["graph"] == {"numv": 100, "time_edge": 3.0, "cross_identity": "cin"}
    assert (recorded["gnn"]["num_epoch"], recorded["gnn"]["channel1"], recorded["gnn"]["causal"]) == (12, 16, False)
    assert {k: stored["args"][k] for k in recorded["gnn"]} == recorded["gnn"]


def test_evaluation_reads_val_and_test_sessions_only(trained: dict) -> None:
    metrics = trained["metrics"]
    assert metrics["splits"] == {k: list(v) for k, v in SPLITS.items()}
    assert trained["predicted_sessions"] == set(SPLITS["val"]) | set(SPLITS["test"])
    with open(trained["out"] / "predictions_test.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {util.parse_segment_id(row["segment_id"])["session"] for row in rows} == set(SPLITS["test"])
    assert metrics["test"]["segment"]["n"] == len(rows)


def test_summary_table_ends_with_metrics_path(trained: dict, capsys: pytest.CaptureFixture) -> None:
    gnn_training.print_summary(trained["metrics"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == trained["metrics"]["metrics_path"]
    assert [line.split()[0] for line in lines[-7:-3]] == ["majority", "encoder", "temporal", "GNN"]
    per_class = trained["metrics"]["test"]["segment"]["per_class"]
    assert lines[-3] == "GNN per-class F1 (test support): " + ", ".join(
        f"{name} {m['f1']:.2f} (n={m['support']})" for name, m in per_class.items())
    present = trained["metrics"]["test"]["segment"]["classes_present"]
    assert lines[-2].startswith(f"macro_f1 averages the {len(present)} classes present")


def test_deterministic_for_a_seed(dataset: dict[str, Path], tmp_path: Path) -> None:
    runs = [gnn_training.run(
        train_args(dataset, tmp_path / str(i), "--num_epoch", "2", "--seed", "5")) for i in range(2)]
    assert runs[0]["history"] == runs[1]["history"] and runs[0]["test"] == runs[1]["test"]
    temporal = [{k: v for k, v in run["baselines"]["temporal"].items() if k != "seconds"} for run in runs]
    assert temporal[0] == temporal[1]


def test_bad_graph_input(dataset: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(util.DataError, match="graph folder not found") as err:
        gnn_training.run(train_args(dataset, tmp_path, "--numv", "77"))
    assert str(dataset["graphs"] / "features_77_3_cin") in str(err.value)

    other = tmp_path / "other_features"
    write_synthetic_nodes(other, {"train": (1,)}, nodes_per_session=20, feature_dims=DIMS, seed=9)
    with pytest.raises(util.DataError, match="another feature manifest") as err:
        gnn_training.run(train_args(dataset, tmp_path) + ["--features_dir", str(other)])
    assert str(dataset["graphs"] / "features_100_3_cin" / graph_data.BUILD_FILE) in str(err.value)
    assert not (tmp_path / "features_100_3_cin").exists()


def test_causal_model_is_scored_on_one_unchunked_graph_per_session(dataset: dict[str, Path], tmp_path: Path) -> None:
    """`--causal` trains on the 100-node graphs but scores val and test as predict.py --online labels
    (online.py, equal to one unchunked graph per session): its test probabilities are the model's on one
    graph of all of a session's nodes, which the cuts every 100 nodes would change."""
    recorded: list[dict] = []
    original = gnn_training.predict

    def recording_predict(*args, **kwargs):
        recorded.append(original(*args, **kwargs))
        return recorded[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gnn_training, "predict", recording_predict)
        result = gnn_training.run(
            train_args(dataset, tmp_path, "--num_epoch", "2", "--exp", "causal", "--causal", "--no_temporal"))
    model, _ = gnn_model.load_checkpoint(tmp_path / "causal" / "best.pth")
    feature_dim = util.read_json(dataset["features"] / "manifest.json")["feature_dim"]

    def node_probs(numv: int | None) -> np.ndarray:
        probs = []
        for session in SPLITS["test"]:
            nodes = graph_building.read_nodes(dataset["features"] / "features_test" / f"Sess{session:02d}.pkl",
                                              feature_dim)
            for graph in graph_building.session_graphs(nodes, numv or len(nodes["time_s"]), 3.0, "cin"):
                with torch.no_grad():
                    probs.append(torch.softmax(model.eval()(graph.x, graph.edge_index, graph.edge_attr), dim=1))
        return torch.cat(probs).numpy()

    whole, chunked = node_probs(None), node_probs(100)
    assert np.abs(chunked - whole).max() > 1e-3  # the cuts matter here
    np.testing.assert_allclose(recorded[-1]["probs"], whole, atol=1e-5)  # the last evaluation: test
    ids, _, _, means = metrics.segment_predictions(recorded[-1]["segment_ids"], whole, recorded[-1]["targets"])
    with open(tmp_path / "causal" / "predictions_test.csv", encoding="utf-8") as fh:
        rows = {row["segment_id"]: row for row in csv.DictReader(fh)}
    stored = np.array([[float(rows[i][f"p_{e}"]) for e in config.EMOTIONS] for i in ids])
    np.testing.assert_allclose(stored, means, atol=1e-4)
    assert result["counts"]["test"]["graphs"] == len(SPLITS["test"]) and "unchunked" in result["eval_graphs"]


@pytest.fixture(scope="module")
def with_blocks(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    """Synthetic node features that carry the text, lm and ssl blocks beside the three streams."""
    root = tmp_path_factory.mktemp("blocks")
    write_synthetic_nodes(root / "features", SPLITS, nodes_per_session=60, seed=0, snr=2.0,
                          feature_dims={**DIMS, "text": 4, "lm": 4, "ssl": 4})
    return graphs_of(root)


@pytest.mark.parametrize("block", ["text", "lm", "ssl"])
def test_causal_model_refuses_whole_segment_blocks(with_blocks: dict[str, Path], tmp_path: Path, block: str) -> None:
    """The text, lm and ssl blocks are computed from the whole segment (the future of its nodes): --causal
    refuses them with one line, before anything is written (these features carry them: without the check
    it would train on them)."""
    flags = ["--num_epoch", "1", "--no_temporal", "--modalities", f"audio,{block}"]
    with pytest.raises(util.DataError, match=f"--causal cannot read {block}: computed from the whole segment") as err:
        gnn_training.run(
            train_args(with_blocks, tmp_path / "causal", "--causal", *flags))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "causal").exists()


def pyg_twin(model: gnn_model.SPELL) -> gnn_model.SPELL:
    """A copy of `model` whose EdgeConvs are PyG's around copies of the same MLPs: the layer the
    checkpoints of format spell-gnn-1 were trained with."""
    twin = copy.deepcopy(model)
    twin.edge_convs = torch.nn.ModuleList(EdgeConv(conv.nn) for conv in twin.edge_convs)
    twin.load_state_dict(model.state_dict())  # EdgeConv re-initialises its MLP
    return twin


def random_edges(n_src: int, n_dst: int, n_edges: int, generator: torch.Generator) -> torch.Tensor:
    """Random (source, target) edges, some repeated (tied messages), none into the last two targets."""
    edges = torch.stack([torch.randint(0, n_src, (n_edges,), generator=generator),
                         torch.randint(0, n_dst - 2, (n_edges,), generator=generator)])
    return torch.cat([edges, edges[:, :5]], dim=1)


def mlp(channels: int, inner: str) -> torch.nn.Sequential:
    """The model's EdgeConv MLP, or one with BatchNorm and Dropout between the first Linear and the ReLU."""
    if inner == "bn_dropout":
        return torch.nn.Sequential(torch.nn.Linear(2 * channels, 6), torch.nn.BatchNorm1d(6), torch.nn.Dropout(0.3),
                                   torch.nn.ReLU(), torch.nn.Linear(6, 5))
    return torch.nn.Sequential(torch.nn.Linear(2 * channels, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5))


@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("inner,training", [("plain", True), ("bn_dropout", True), ("bn_dropout", False)])
def test_factorised_edgeconv_equals_pyg_edgeconv(bipartite: bool, inner: str, training: bool) -> None:
    """Same outputs and gradients (inputs and weights) as PyG's EdgeConv with copied weights; targets without
    edges get 0. With dropout inside the MLP the edges come sorted by target, so both layers draw the same
    masks for the same edges."""
    generator = torch.Generator().manual_seed(int(bipartite) + 2 * training)
    n_src, n_dst, channels = (13, 9, 4) if bipartite else (11, 11, 4)
    edges = random_edges(n_src, n_dst, 60, generator)
    if inner == "bn_dropout" and training:
        edges = edges[:, torch.argsort(edges[1], stable=True)]
    ours = gnn_model.FactorisedEdgeConv(mlp(channels, inner)).train(training)
    reference = EdgeConv(copy.deepcopy(ours.nn)).train(training)  # EdgeConv re-initialises its MLP
    reference.nn.load_state_dict(ours.nn.state_dict())
    results = []
    for layer in (reference, ours):
        x_src = torch.randn(n_src, channels, generator=torch.Generator().manual_seed(7)).requires_grad_()
        x_dst = torch.randn(n_dst, channels, generator=torch.Generator().manual_seed(8)).requires_grad_()
        torch.manual_seed(0)
        out = layer((x_src, x_dst) if bipartite else x_src, edges)
        (out * torch.linspace(-1, 2, out.numel()).reshape(out.shape)).sum().backward()
        grads = [x_src.grad] + ([x_dst.grad] if bipartite else []) + [p.grad for p in layer.parameters()]
        results.append((out, grads))
    (ref_out, ref_grads), (our_out, our_grads) = results
    assert our_out.shape == (n_dst, 5) and torch.equal(our_out[-2:], torch.zeros(2, 5))
    assert (ref_out[:-2] != 0).any()
    torch.testing.assert_close(our_out, ref_out, atol=1e-5, rtol=1e-5)
    assert len(our_grads) == len(ref_grads)
    for ours_grad, ref_grad in zip(our_grads, ref_grads, strict=True):
        assert ref_grad.abs().max() > 0
        torch.testing.assert_close(ours_grad, ref_grad, atol=1e-5, rtol=1e-5)


def test_factorised_edgeconv_without_edges_and_bad_mlp() -> None:
    layer = gnn_model.FactorisedEdgeConv(mlp(4, "plain"))
    out = layer((torch.randn(3, 4), torch.randn(5, 4)), torch.zeros((2, 0), dtype=torch.long))
    assert torch.equal(out, torch.zeros(5, 5))
    with pytest.raises(ValueError, match="Linear"):
        gnn_model.FactorisedEdgeConv(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(8, 4)))


@pytest.mark.parametrize("causal", [False, True])
def test_checkpoints_of_the_pyg_edgeconv_model_load_unchanged(tmp_path: Path, causal: bool) -> None:
    """Every branch uses the factorised layer, whose parameters are PyG EdgeConv's (same names, shapes):
    a checkpoint written by the model with PyG's EdgeConv loads as it is and gives the same logits."""
    assert gnn_model.CHECKPOINT_FORMAT == "spell-gnn-1"
    torch.manual_seed(0)
    model = gnn_model.SPELL(DIMS, channel1=16, channel2=8, causal=causal)
    assert all(isinstance(conv, gnn_model.FactorisedEdgeConv) for conv in model.edge_convs)
    assert len(model.edge_convs) == (2 if causal else 3)
    old = pyg_twin(model)
    for p in old.parameters():  # weights of their own, not the new model's
        p.data.add_(0.1 * torch.randn_like(p))
    old_state = old.state_dict()
    assert {k: v.shape for k, v in old_state.items()} == {k: v.shape for k, v in model.state_dict().items()}
    gnn_model.save_checkpoint(old, tmp_path / "best.pth", epoch=1)
    loaded, _ = gnn_model.load_checkpoint(tmp_path / "best.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in old_state.items())
    x = torch.randn(40, 32)
    times = torch.sort(torch.rand(40, dtype=torch.float64) * 8).values
    edge_index, edge_attr = graph_building.build_edges(times, torch.randint(0, 2, (40,)), 1.5)
    with torch.no_grad():
        logits = loaded.eval()(x, edge_index, edge_attr)
        torch.testing.assert_close(logits, old.eval()(x, edge_index, edge_attr), atol=1e-5, rtol=1e-4)
        assert (logits - model.eval()(x, edge_index, edge_attr)).abs().max() > 1e-2
