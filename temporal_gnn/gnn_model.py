"""SPELL-style three-branch temporal GNN (the original's architecture, kept) and its checkpoints.

    per modality Linear(d_m -> c1), summed -> BN -> ReLU
    per branch b in (forward: edge_attr >= 0, backward: <= 0, undirected: all):
        EdgeConv(MLP 2c1 -> c1 -> c1) -> BN_b -> ReLU -> dropout
        SAGEConv(c1 -> c2)  (one layer shared by the three branches) -> BN_b -> ReLU -> dropout
        SAGEConv(c2 -> 7)
    logits = sum over the branches (no softmax: the loss takes logits)

EdgeConv is PyG's layer computed per node where it can be (FactorisedEdgeConv: same parameters, same
outputs and gradients, several times faster to train; benchmarks/bench_gnn.py).

Batch normalisation is per branch, also after the shared SAGEConv: the three branches see different
neighbourhoods, so one shared BatchNorm would normalise each branch with batch statistics of that
branch while its running statistics (used at evaluation) mix all three, a train/eval mismatch.

Parameters at the default 1536-d input (3 x 512), c1 = 64, c2 = 16, 7 classes:
    input Linear  3 x (512*64 + 64)                     = 98,496
    input BN      2*64                                   =    128
    EdgeConv MLP  3 x ((128*64 + 64) + (64*64 + 64))    = 37,248
    BN after it   3 x 2*64                               =    384
    SAGEConv      64*16 + 16 (neighbours) + 64*16 (root) =  2,064   shared
    BN after it   3 x 2*16                               =     96
    SAGEConv out  3 x (16*7 + 7 + 16*7)                  =    693
    total                                                = 139,109

Causal variant (`causal=True`, train_val.py --causal; predict.py --online): every edge it reads goes
from the past or the same instant, j -> k with t_j <= t_k (in PyG message passing edge (j, k) carries
j's message to k; edge_attr = sign(t_j - t_k) <= 0). Restricted to those edges the backward and the
undirected branch would read the same edges, and the forward branch only the same-instant ones, so
the causal model has two branches:
    past     edge_attr <= 0  (earlier neighbours within time_edge, same-instant ones, self-loop)
    instant  edge_attr == 0  (same-instant neighbours, any identity, and the self-loop)
with the same layers per branch: 126,302 parameters at the default sizes (139,109 minus one branch:
12,416 + 128 + 32 + 231). Its three message-passing layers each reach at most time_edge seconds back,
so a node's logits depend on nodes up to 3 x time_edge seconds earlier and on none later: the
logits of a node are final when it arrives, which online.py uses to label a stream exactly.

SPELL's own model reports 139,365 at the same sizes. The difference, +256, is two changes: SPELL has
one BatchNorm after the shared SAGEConv where this model has one per branch (2*16 = 32 here x 3 = 96,
so SPELL has 64 fewer), and SPELL builds a spatial Linear(4 -> 64) for bounding-box inputs that its
forward never uses on this data (4*64 + 64 = 320 more): 139,109 - 64 + 320 = 139,365. Neither this
model nor SPELL's layers read a per-edge weight; see generate_graph.py on the original's `--edge_weight`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch_geometric.nn import SAGEConv

from encoder.core import config, util
from encoder.core.checkpoints import load_state_dict, read_torch_file, save_torch_file

Pair = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
BRANCHES = ("forward", "backward", "undirected")
CAUSAL_BRANCHES = ("past", "instant")
CHECKPOINT_FORMAT = "spell-gnn-1"
# Blocks a GNN reads only when `modalities` names them: by default it reads the encoder's three streams,
# as the original model did, whatever else the features carry (the text block, encoder/core/text.py, the
# pretrained blocks, encoder/core/pretrained.py, and the hand-crafted speech statistics, classical.py).
OPT_IN_BLOCKS = ("text", "lm", "ssl", "prosody")
# Blocks computed from the whole segment (its transcript; a bidirectional pass over its speech; statistics of
# its whole wav): they carry the future of every node but the segment's last, so no causal model reads them.
WHOLE_SEGMENT_BLOCKS = ("text", "lm", "ssl", "prosody")


def future_blocks(modalities: Sequence[str]) -> list[str]:
    """The blocks of `modalities` that carry the whole segment (WHOLE_SEGMENT_BLOCKS), which a causal
    model must not read."""
    return [m for m in modalities if m in WHOLE_SEGMENT_BLOCKS]


def refuse_future_blocks(modalities: Sequence[str], refusal: str, path: Path | None = None) -> None:
    """util.DataError "<refusal> <blocks>: computed from the whole segment, ..." when `modalities` holds a
    future_blocks block (train_val.py --causal, predict.py --online)."""
    future = future_blocks(modalities)
    if future:
        raise util.DataError(f"{refusal} {', '.join(future)}: computed from the whole segment, it carries the "
                             "future of its nodes", path)


def branch_edges(edge_index: torch.Tensor, edge_attr: torch.Tensor, causal: bool = False) -> dict[str, torch.Tensor]:
    """Edges of each branch: forward attr >= 0, backward attr <= 0 (ties and self-loops in both),
    undirected all; causal: past attr <= 0, instant attr == 0 (no edge from a later node)."""
    attr = edge_attr.reshape(-1)
    if causal:
        return {"past": edge_index[:, attr <= 0], "instant": edge_index[:, attr == 0]}
    return {"forward": edge_index[:, attr >= 0], "backward": edge_index[:, attr <= 0], "undirected": edge_index}


def modality_slices(feature_dims: Mapping[str, int], modalities: Sequence[str] | None) -> dict[str, tuple[int, int]]:
    """Column range [start, end) of each chosen modality in node features laid out as `feature_dims`
    (insertion order = the manifest's feature_order), in that order; every block except OPT_IN_BLOCKS
    when `modalities` is empty. ValueError for unknown or repeated names. Shared by every model that
    reads node features."""
    chosen = tuple(modalities) if modalities else tuple(m for m in feature_dims if m not in OPT_IN_BLOCKS)
    unknown = [m for m in chosen if m not in feature_dims]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"modalities {list(chosen)} must be distinct names from {list(feature_dims)}")
    slices, offset = {}, 0
    for name, dim in feature_dims.items():
        if name in chosen:
            slices[name] = (offset, offset + int(dim))
        offset += int(dim)
    return slices


class FactorisedEdgeConv(nn.Module):
    """PyG's EdgeConv with max aggregation, out_k = max over edges (j, k) of mlp([x_k, x_j - x_k]) (0 for
    a node without in-edges), computed with the MLP's first Linear split per node: with W = [W_a | W_b],
    W [x_k, x_j - x_k] + b = (W_a - W_b) x_k + b + W_b x_j, so that Linear runs once per node, not once per
    edge (about 60 per node here), and each edge only gathers and adds two rows. The rest of the MLP runs
    per edge on exactly those pre-activations, so the layer equals EdgeConv whatever follows the first
    Linear. `mlp` (a Sequential starting with a Linear of 2 x in_channels inputs) is stored as `nn`, as
    EdgeConv stores it, so state dicts of either load into the other."""

    def __init__(self, mlp: nn.Sequential):
        super().__init__()
        if not isinstance(mlp, nn.Sequential) or not mlp or not isinstance(mlp[0], nn.Linear) \
                or mlp[0].in_features % 2:
            raise ValueError("the MLP must be a Sequential starting with a Linear of 2 x in_channels inputs")
        self.nn = mlp

    def forward(self, x: Pair, edge_index: torch.Tensor) -> torch.Tensor:
        """x: [n, c] states, or (sources [n_src, c], targets [n_dst, c]); edge (j, k) = edge_index[:, e]
        carries source j to target k. Returns [n_dst, out_channels]."""
        x_src, x_dst = (x, x) if isinstance(x, torch.Tensor) else x
        first, rest = self.nn[0], self.nn[1:]
        w_dst, w_src = first.weight.chunk(2, dim=1)
        per_dst = functional.linear(x_dst, w_dst - w_src, first.bias)
        per_src = functional.linear(x_src, w_src)
        src, dst = edge_index[0], edge_index[1]
        messages = rest(per_dst.index_select(0, dst) + per_src.index_select(0, src))
        return _MaxAggregation.apply(messages, dst, x_dst.size(0))


class _MaxAggregation(torch.autograd.Function):
    """Per target, the channel-wise max of its edges' messages [E, h] (0 for a target without edges): PyG's
    max aggregation, torch's scatter_reduce 'amax'. The gradient of a max is split evenly among the edges
    that tie for it, as scatter_reduce's own backward splits it, but in a few passes over the edges where
    that backward takes many (it was a third of a training epoch)."""

    @staticmethod
    def forward(ctx: Any, messages: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
        out = messages.new_zeros(size, messages.size(1)).scatter_reduce_(
            0, index.unsqueeze(1).expand_as(messages), messages, "amax", include_self=False)
        ctx.save_for_backward(messages, index, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        messages, index, out = ctx.saved_tensors
        winner = messages == out.index_select(0, index)
        ties = torch.zeros_like(out).index_add_(0, index, winner.to(out.dtype))
        share = grad_out / ties.clamp(min=1)
        return torch.where(winner, share.index_select(0, index), 0.0), None, None


class SPELL(nn.Module):
    """Three-branch GNN over node features whose modality blocks are laid out as in `feature_dims`
    (insertion order = the manifest's feature_order); `modalities` picks the blocks used (default: every
    block except OPT_IN_BLOCKS); `causal`
    builds the two-branch variant that reads no edge from a later node (see the module docstring).

    The layers are also callable one by one (`embed`, `edge_layer`, `sage_layer`, `out_layer`) on a
    bipartite pair (source states, target states), which is how online.py extends the graph by the
    nodes of one instant without recomputing the others."""

    def __init__(self, feature_dims: Mapping[str, int], modalities: Sequence[str] | None = None,
                 channel1: int = 64, channel2: int = 16, dropout: float = 0.2,
                 num_classes: int = config.NUM_CLASSES, causal: bool = False):
        super().__init__()
        self.feature_dims = {str(k): int(v) for k, v in feature_dims.items()}
        self.slices = modality_slices(self.feature_dims, modalities)
        self.modalities = tuple(self.slices)
        self.channel1, self.channel2, self.dropout, self.num_classes = channel1, channel2, dropout, num_classes
        self.causal = bool(causal)
        self.branches = CAUSAL_BRANCHES if self.causal else BRANCHES
        self.inputs = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], channel1) for m in self.modalities})
        self.bn_in = nn.BatchNorm1d(channel1)
        self.edge_convs = nn.ModuleList(
            FactorisedEdgeConv(nn.Sequential(nn.Linear(2 * channel1, channel1), nn.ReLU(),
                                             nn.Linear(channel1, channel1)))
            for _ in self.branches)
        self.bn_edge = nn.ModuleList(nn.BatchNorm1d(channel1) for _ in self.branches)
        self.sage_shared = SAGEConv(channel1, channel2)
        self.bn_sage = nn.ModuleList(nn.BatchNorm1d(channel2) for _ in self.branches)
        self.sage_out = nn.ModuleList(SAGEConv(channel2, num_classes) for _ in self.branches)

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (stored in checkpoints)."""
        return {"feature_dims": dict(self.feature_dims), "modalities": list(self.modalities),
                "channel1": self.channel1, "channel2": self.channel2, "dropout": self.dropout,
                "num_classes": self.num_classes, "causal": self.causal}

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """Logits [n, num_classes] for node features x [n, D]."""
        h = self.embed(x)
        logits = 0
        for i, edges in enumerate(branch_edges(edge_index, edge_attr, self.causal).values()):
            z = functional.dropout(self.edge_layer(i, h, edges), self.dropout, self.training)
            z = functional.dropout(self.sage_layer(i, z, edges), self.dropout, self.training)
            logits = logits + self.out_layer(i, z, edges)
        return logits

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per node, no edges: the modality Linears summed, BN, ReLU -> [n, channel1]."""
        h = sum(self.inputs[m](x[:, a:b]) for m, (a, b) in self.slices.items())
        return functional.relu(self.bn_in(h))

    def edge_layer(self, branch: int, x: Pair, edges: torch.Tensor) -> torch.Tensor:
        """EdgeConv of `branch`, BN, ReLU; x = states of all nodes, or (sources, targets)."""
        return functional.relu(self.bn_edge[branch](self.edge_convs[branch](x, edges)))

    def sage_layer(self, branch: int, x: Pair, edges: torch.Tensor) -> torch.Tensor:
        """The shared SAGEConv, BN of `branch`, ReLU."""
        return functional.relu(self.bn_sage[branch](self.sage_shared(x, edges)))

    def out_layer(self, branch: int, x: Pair, edges: torch.Tensor) -> torch.Tensor:
        """The output SAGEConv of `branch`: that branch's logits."""
        return self.sage_out[branch](x, edges)


def save_checkpoint(model: SPELL, path: Path, **extra: Any) -> None:
    """Model configuration + state dict (+ `extra`, e.g. epoch and score), written atomically."""
    save_torch_file({"format": CHECKPOINT_FORMAT, "model_config": model.config,
                     "state_dict": model.state_dict(), **util.to_jsonable(extra)}, path)


def load_checkpoint(path: Path, model: SPELL | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[SPELL, dict[str, Any]]:
    """Load a checkpoint into `model` (or a model rebuilt from its stored configuration).

    A missing or unreadable file, or one whose shapes differ from `model`, is a DataError naming it."""
    ckpt = read_torch_file(path, "a GNN checkpoint written by train_val.py", CHECKPOINT_FORMAT, map_location)
    if model is None:
        try:
            model = SPELL(**ckpt["model_config"])
        except (KeyError, TypeError, ValueError) as err:
            raise util.DataError(f"bad model configuration in checkpoint ({err})", path) from None
    load_state_dict(model, ckpt.get("state_dict", {}), path, f"GNN {model.config}")
    return model, ckpt
