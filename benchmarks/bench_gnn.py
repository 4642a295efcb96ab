"""GNN training epoch: SPELL with PyG's EdgeConv against the factorised one (gnn_model.FactorisedEdgeConv).

Random temporal graphs of the default training shape (numv 2000 nodes per graph, two speakers at about
4 Hz each, time edge 7.2 s within a speaker: about 60 edges per node, 1536-d features, soft labels) are
built with graph_building.build_edges; the same SPELL weights are trained for one epoch (batches of 16
graphs, train_val's own epoch function, Adam) twice, once with PyG's EdgeConv in every branch and once
with the factorised layer, from the same seed (same batches, same dropout masks). The two losses must
agree; the last line printed is `ratio=<PyG s / ours s>`. One thread by default (bench_graph.py's choice): the
project's CPUs are shared, and OpenMP threads on busy cores stall each other, which makes timings noise.

    python benchmarks/bench_gnn.py [--device cpu|cuda|0] [--nodes 32000] [--numv 2000] [--batch_size 16]
                                   [--time_edge 7.2] [--threads 1] [--causal]
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import copy
import time

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import EdgeConv

from encoder.core import config, util
from encoder.core.distributed import resolve_device
from temporal_gnn import gnn_model, gnn_training, graph_building

FEATURE_DIMS = {"audio": 512, "eda": 512, "temp": 512}
SPEAKER_HZ = 4.0  # nodes per second of each of the two speakers


def random_graphs(nodes: int, numv: int, time_edge: float, seed: int = 0) -> list[Data]:
    """Graphs of `numv` nodes (the last one shorter) at random times of two speakers, 1536-d features."""
    generator = torch.Generator().manual_seed(seed)
    dim = sum(FEATURE_DIMS.values())
    graphs = []
    for start in range(0, nodes, numv):
        n = min(numv, nodes - start)
        times = torch.sort(torch.rand(n, generator=generator, dtype=torch.float64) * n / (2 * SPEAKER_HZ)).values
        identity = torch.randint(0, 2, (n,), generator=generator)
        edge_index, edge_attr = graph_building.build_edges(times, identity, time_edge)
        y = torch.rand(n, config.NUM_CLASSES, generator=generator)
        graphs.append(Data(x=torch.randn(n, dim, generator=generator), y=y / y.sum(1, keepdim=True),
                           edge_index=edge_index, edge_attr=edge_attr))
    return graphs


def with_pyg_edgeconv(model: gnn_model.SPELL) -> gnn_model.SPELL:
    """A copy of `model` whose EdgeConvs are PyG's, around the same MLPs (same state dict)."""
    reference = copy.deepcopy(model)
    reference.edge_convs = nn.ModuleList(EdgeConv(conv.nn) for conv in reference.edge_convs)
    reference.load_state_dict(model.state_dict())
    return reference


def timed_epoch(model: gnn_model.SPELL, graphs: list[Data], batch_size: int,
                device: torch.device) -> tuple[float, float]:
    """Seconds and mean loss of one training epoch (gnn_training._train_epoch), seeded for batches and dropout."""
    loader = DataLoader(graphs, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    loss = gnn_training._train_epoch(model, loader, optimizer, None, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or a CUDA index")
    parser.add_argument("--nodes", type=int, default=32000, help="nodes of all graphs together")
    parser.add_argument("--numv", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--time_edge", type=float, default=7.2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--causal", action="store_true", help="the two-branch causal model")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    graphs = random_graphs(args.nodes, args.numv, args.time_edge)
    util.seed_everything(0)
    ours = gnn_model.SPELL(FEATURE_DIMS, causal=args.causal).to(device)
    reference = with_pyg_edgeconv(ours)
    small = random_graphs(2 * args.numv // 10, args.numv // 10, args.time_edge, seed=1)
    for model in (reference, ours):  # warm-up on small graphs, on copies: the timed runs start equal
        timed_epoch(copy.deepcopy(model), small, 2, device)
    reference_s, reference_loss = timed_epoch(reference, graphs, args.batch_size, device)
    ours_s, our_loss = timed_epoch(ours, graphs, args.batch_size, device)
    if abs(reference_loss - our_loss) > 1e-4 * max(1.0, abs(reference_loss)):
        raise SystemExit(f"losses disagree: PyG {reference_loss:.6f}, ours {our_loss:.6f}")
    edges = sum(g.num_edges for g in graphs)
    print(f"{len(graphs)} graphs of {args.numv} nodes ({args.nodes} nodes, {edges / args.nodes:.1f} edges per node, "
          f"{sum(FEATURE_DIMS.values())}-d), batch {args.batch_size}, {'causal' if args.causal else 'three-branch'} "
          f"SPELL on {device} ({torch.get_num_threads()} threads)")
    print(f"one epoch: PyG EdgeConv {reference_s:.2f} s (loss {reference_loss:.6f}), "
          f"factorised {ours_s:.2f} s (loss {our_loss:.6f})")
    print(f"ratio={reference_s / ours_s:.2f}")


if __name__ == "__main__":
    util.run_cli(main)
