"""The logit-adjusted loss of the GNN and the temporal baseline (train_val.py --logit_adjust_tau): the
loss is taken on logits + tau * log(prior), prior = the training nodes' class frequencies; worked by hand
on a model whose logits are zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from encoder.core import config
from encoder.core.prediction import logit_offset, training_prior
from temporal_gnn import gnn_training


class ZeroLogits(nn.Module):
    """Logits 0 for every node, with one trainable parameter so that the optimiser has something to step."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.NUM_CLASSES))

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        return torch.zeros(len(x), config.NUM_CLASSES) + 0.0 * self.bias


def graphs() -> list[Data]:
    y = torch.zeros(4, config.NUM_CLASSES)
    y[[0, 1, 2], 0] = 1.0  # three neutral nodes
    y[3, 1] = 1.0  # one happy node
    return [Data(x=torch.zeros(4, 1), y=y, edge_index=torch.zeros(2, 0, dtype=torch.long),
                 edge_attr=torch.zeros(0, 1))]


@pytest.mark.parametrize("tau", [0.0, 1.0, 0.5])
def test_the_loss_is_taken_on_logits_plus_tau_log_prior(tau: float) -> None:
    data = graphs()
    prior = training_prior(torch.cat([g.y for g in data]).numpy())
    # add-one smoothed class mass: neutral 3 + 1, happy 1 + 1, the five others 0 + 1, over 4 + 7 = 11
    assert prior.tolist() == pytest.approx([4 / 11, 2 / 11] + [1 / 11] * 5)
    offset = logit_offset(prior, tau)
    assert (offset is None) is (tau == 0.0)
    model = ZeroLogits()
    loss = gnn_training._train_epoch(model, DataLoader(data, batch_size=1), torch.optim.SGD(model.parameters(), lr=0.1),
                                  None, torch.device("cpu"), gnn_training.gnn_logits, offset)
    # zero logits + tau log(prior): softmax is prior^tau / sum(prior^tau); the loss averages -log of it at
    # each node's class: three neutral nodes and one happy one
    p = np.asarray(prior) ** tau / (np.asarray(prior) ** tau).sum()
    assert loss == pytest.approx(-(3 * np.log(p[0]) + np.log(p[1])) / 4, rel=1e-6)


def test_the_flag_defaults_to_config_and_reaches_the_run() -> None:
    assert gnn_training.parse_args([]).logit_adjust_tau == config.GNN["logit_adjust_tau"] == 0.0
    assert gnn_training.parse_args(["--logit_adjust_tau", "1"]).logit_adjust_tau == 1.0
