"""The GNN's and the temporal baseline's learning options (config.GNN, gnn_training.py): block dropout of the
node features and the validation criterion that picks best.pth, each worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from encoder.core import config
from encoder.core.prediction import logit_offset
from temporal_gnn import gnn_training

SLICES = {"a": (0, 2), "b": (3, 5)}  # column 2 belongs to no block the model reads


def test_drop_blocks_zeroes_whole_blocks_and_scales_the_kept_ones() -> None:
    torch.manual_seed(0)
    out = gnn_training.drop_blocks(torch.ones(20000, 5), SLICES, 0.25)
    assert torch.equal(out[:, 2], torch.ones(20000))  # outside every block: untouched
    for a, b in SLICES.values():
        block = out[:, a:b]
        assert torch.equal(block[:, 0], block[:, 1])  # a block is dropped or kept as a whole
        assert set(block[:, 0].tolist()) == {0.0, np.float32(4 / 3)}  # kept: scaled by 1 / (1 - 0.25)
        assert (block[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    a, b = out[:, 0] == 0, out[:, 3] == 0  # each block drawn on its own
    assert (a & b).float().mean().item() == pytest.approx(0.25 ** 2, abs=0.01)


class Recorder(nn.Module):
    """Zero logits; keeps the node features of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.slices = SLICES
        self.bias = nn.Parameter(torch.zeros(config.NUM_CLASSES))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(len(x), config.NUM_CLASSES) + 0.0 * self.bias


def graph(targets: list[int]) -> Data:
    n = len(targets)
    y = torch.zeros(n, config.NUM_CLASSES)
    y[range(n), targets] = 1.0
    return Data(x=torch.ones(n, 5), y=y, target=torch.tensor(targets), session=torch.ones(n, dtype=torch.long),
                segment_id=[f"Sess01_script01_User001F_{k:03d}" for k in range(n)],
                edge_index=torch.zeros(2, 0, dtype=torch.long), edge_attr=torch.zeros(0, 1))


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_training_batches_see_the_blocks_dropped(p: float) -> None:
    model = Recorder()
    torch.manual_seed(0)
    gnn_training._train_epoch(model, DataLoader([graph([0] * 400)], batch_size=1),
                           torch.optim.SGD(model.parameters(), lr=0.1), None, torch.device("cpu"),
                           block_dropout=p)
    x = model.seen[0]
    assert torch.equal(x[:, 2], torch.ones(400))
    if p == 0:
        assert torch.equal(x, torch.ones(400, 5))
    else:
        assert set(x[:, 0].tolist()) == {0.0, 2.0} and 150 < int((x[:, 0] == 0).sum()) < 250


def test_node_loss_worked_by_hand() -> None:
    labels = np.zeros((2, config.NUM_CLASSES))
    labels[0, 0], labels[1, 1] = 1.0, 1.0
    uniform = np.full((2, config.NUM_CLASSES), 1 / config.NUM_CLASSES)
    assert gnn_training.node_loss(uniform, labels) == pytest.approx(math.log(7))
    probs = np.zeros((2, config.NUM_CLASSES))
    probs[:, :2] = 0.5
    assert gnn_training.node_loss(probs, labels) == pytest.approx(math.log(2), rel=1e-6)
    # the logit-adjusted loss: uniform probabilities plus log(prior) give softmax = prior
    prior = np.array([0.4, 0.2] + [0.08] * 5)
    offset = logit_offset(prior, 1.0)
    assert gnn_training.node_loss(uniform, labels, offset) == pytest.approx(-(math.log(0.4) + math.log(0.2)) / 2)


class Scripted(nn.Module):
    """Zero logits in training; in evaluation, the next of `script`'s logits (one validation pass per epoch)."""

    def __init__(self, script: list[list[list[float]]]):
        super().__init__()
        self.slices = SLICES
        self.bias = nn.Parameter(torch.zeros(config.NUM_CLASSES))
        self.script = [torch.tensor(s) for s in script]

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        if self.training:
            return torch.zeros(len(x), config.NUM_CLASSES) + 0.0 * self.bias
        return self.script.pop(0)


def logits(a: list[float], b: list[float]) -> list[list[float]]:
    return [a + [0.0] * (config.NUM_CLASSES - len(a)), b + [0.0] * (config.NUM_CLASSES - len(b))]


# Two validation segments, neutral and happy. Epoch 1: both right, loss log(1 + 6/e) = 1.2395 each;
# epoch 2: neutral sure, happy wrong (macro-F1 lower), mean loss (log(1 + 6e^-10) + log(e^0.5 + 6)) / 2 = 1.0183;
# epoch 3: both right again, loss log(1 + 6e^-1.2) = 1.0322 each.
SCRIPT = [logits([1.0], [0.0, 1.0]), logits([10.0], [0.5]), logits([1.2], [0.0, 1.2])]


@pytest.mark.parametrize(("select_on", "epoch"), [("macro_f1", 1), ("loss", 2), ("macro_f1_loss", 3),
                                                      ("last", 3)])
def test_the_validation_criterion_picks_the_epoch(select_on: str, epoch: int) -> None:
    settings = gnn_training.GnnSettings.from_config({"num_epoch": 3, "patience": 0, "eval_freq": 1,
                                                  "select_on": select_on})
    fit = gnn_training.Fit({"train": [graph([0, 1])], "val": [graph([0, 1])]}, batch_size=1)
    kept: list[dict] = []
    history, best = gnn_training._train(Scripted([s for s in SCRIPT]), fit, settings, torch.device("cpu"),
                                     lambda b: kept.append(dict(b)), lambda _: None)
    assert history["val_loss"] == pytest.approx([math.log(1 + 6 / math.e),
                                                 (math.log(1 + 6 * math.exp(-10)) + math.log(math.exp(0.5) + 6)) / 2,
                                                 math.log(1 + 6 * math.exp(-1.2))], rel=1e-6)
    assert history["val_segment_macro_f1"][0] == history["val_segment_macro_f1"][2] > history["val_segment_macro_f1"][1]
    assert best["epoch"] == epoch and kept[-1]["epoch"] == epoch


def test_the_options_default_to_config_and_are_checked() -> None:
    args = gnn_training.parse_args([])
    assert (args.block_dropout, args.select_on) == (config.GNN["block_dropout"], config.GNN["select_on"])
    flags = ["--block_dropout", "0.3", "--select_on", "loss"]
    settings = gnn_training.GnnSettings.from_args(gnn_training.parse_args(flags))
    assert (settings.block_dropout, settings.select_on) == (0.3, "loss")
    with pytest.raises(ValueError, match="block_dropout"):
        gnn_training.GnnSettings.from_config({"block_dropout": 1.0})
    with pytest.raises(ValueError, match="select_on"):
        gnn_training.GnnSettings.from_config({"select_on": "accuracy"})
