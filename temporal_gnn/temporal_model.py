"""The temporal baseline without a graph (the GRU row beside every GNN figure, docs/evaluation.md): a GRU
over each speaker's node sequence.

    per modality Linear(d_m -> c1), summed -> BN -> ReLU      (as gnn_model.SPELL.embed)
    GRU(c1 -> c1 per direction), bidirectional; causal: forward only
    dropout -> Linear(c1 x directions -> 7)

It reads the same node features and modality blocks as the GNN (`modalities`), but no edge: its
input is one speaker's nodes of one session sorted by time and cut into windows
(graph_data.speaker_windows), and a node's logits depend on the nodes of its own window only. What it
lacks against the GNN is the graph: the neighbourhood rule (same speaker within time_edge seconds),
the same-instant nodes of the other speaker and the permutation-invariant aggregation.

A GRU rather than a temporal convolution: the nodes of a speaker are not evenly spaced (the other
speaker's turns and pauses fall between its segments), so a convolution over node positions would
mix time scales anyway, and a GRU needs no kernel size to tune; its reach is set by the window.

Parameters at the default 1536-d input (3 x 512), c1 = 64, 7 classes:
    input Linear  3 x (512*64 + 64)                        = 98,496
    input BN      2*64                                      =    128
    GRU           2 directions x 3 gates x (64*64 + 64*64 + 2*64) = 49,920   (causal: one direction, 24,960)
    output Linear 128*7 + 7                                 =    903   (causal: 64*7 + 7 = 455)
    total                                                   = 149,447  (causal: 124,039)
beside the GNN's 139,109 (causal 126,302).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch_geometric.utils import to_dense_batch

from encoder.core import config
from temporal_gnn.gnn_model import modality_slices


class TemporalGRU(nn.Module):
    """GRU over batched node sequences: `forward(x, batch)` takes the nodes of all sequences
    concatenated, each sequence's nodes contiguous and in time order, and `batch` the sequence index
    of every node (sorted, as a torch_geometric Batch gives it). `causal`: forward direction only, so
    a node's logits depend on the earlier nodes of its sequence and on itself, on no later node."""

    def __init__(self, feature_dims: Mapping[str, int], modalities: Sequence[str] | None = None,
                 channel1: int = 64, dropout: float = 0.2, num_classes: int = config.NUM_CLASSES,
                 causal: bool = False):
        super().__init__()
        self.feature_dims = {str(k): int(v) for k, v in feature_dims.items()}
        self.slices = modality_slices(self.feature_dims, modalities)
        self.modalities = tuple(self.slices)
        self.channel1, self.dropout, self.num_classes, self.causal = channel1, dropout, num_classes, bool(causal)
        self.inputs = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], channel1) for m in self.modalities})
        self.bn_in = nn.BatchNorm1d(channel1)
        self.gru = nn.GRU(channel1, channel1, batch_first=True, bidirectional=not self.causal)
        self.out = nn.Linear(channel1 * (1 if self.causal else 2), num_classes)

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model."""
        return {"feature_dims": dict(self.feature_dims), "modalities": list(self.modalities),
                "channel1": self.channel1, "dropout": self.dropout, "num_classes": self.num_classes,
                "causal": self.causal}

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Logits [n, num_classes] for node features x [n, D] of the sequences numbered by `batch` [n]."""
        h = functional.relu(self.bn_in(sum(self.inputs[m](x[:, a:b]) for m, (a, b) in self.slices.items())))
        dense, mask = to_dense_batch(h, batch)
        packed = pack_padded_sequence(dense, mask.sum(dim=1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=dense.size(1))
        return self.out(functional.dropout(states[mask], self.dropout, self.training))
