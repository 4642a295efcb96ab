"""Online inference with the causal GNN: every node is labelled when it arrives, from the nodes seen so
far, and every segment at its last node. `predict.py --online` and benchmarks/bench_online.py use it.

Receptive field. The causal model (gnn_model.SPELL(causal=True), trained by `train_val.py --causal`)
reads only edges j -> k with t_k - time_edge <= t_j <= t_k. Its three message-passing layers
(EdgeConv, shared SAGEConv, output SAGEConv) each reach at most time_edge seconds back, so the logits of
a node depend on nodes up to 3 x time_edge seconds before it (21.6 s at the default 7.2 s) and on no
later node. Two consequences:

* a node's logits, and its state after every layer, are final when it arrives: no later node is an
  in-neighbour of an earlier one;
* to add a node, each layer needs only the previous layer's states of the node's in-neighbours, all at
  most time_edge seconds old. `OnlineGNN` therefore keeps, for the nodes of the last time_edge seconds,
  their three layer states from when they arrived (those states already summarise the 2 x time_edge
  seconds before them) and evicts older nodes. A replay that kept only node features would have to
  recompute the last 3 x time_edge seconds at every step instead.

Per arrival the work is the new nodes' own layers over their in-neighbours (gnn_model's EdgeConv and PyG's
SAGEConv on a bipartite (window -> new nodes) edge set): no graph is rebuilt. The result equals the causal
model's output on one unchunked graph of the whole session (same edges, same aggregations; eval-mode
BatchNorm is a per-node affine map), up to float rounding.

Nodes arrive in graph_building's order (time, then identity, then segment ID) and are processed one
instant at a time: the nodes of one 4 Hz timestamp (both speakers) arrive together, since same-instant
nodes are each other's in-neighbours.

Threads. One instant is one or two nodes: one encoder pass over so few inputs is too little work to
share between threads. On the project's 2-core machine, shared with other jobs at the time, a single
node took 23 ms through the demo encoder on one torch thread and 103 ms on two (the second thread
mostly waits), so predict.py --online and benchmarks/bench_online.py run the replay on one thread.

Embedding. A node's encoder clip is centred on it: it reads up to clip_length // 2 steps (1.25 s at the
default 11) of its segment after the node, and the segment's end (edge padding). A live system can
therefore embed a node at the earliest clip_length // 2 steps after its timestamp, or at its segment's
end if sooner; the replay reads the recording, so the latency it measures is the computation alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from encoder.core import io
from encoder.core.custom_transforms import Normalization, SpectrogramParams, clip_spectrogram
from encoder.core.dataset import Segment
from encoder.core.participant import InputOptions, OnlineParticipants, audio_input, bio_inputs
from encoder.core.prediction import autocast
from temporal_gnn import gnn_model, graph_building


class OnlineGNN:
    """The causal GNN over a stream of nodes in time order; `push` returns the new nodes' logits.

    Keeps the nodes of the last `time_edge` seconds (their times, identity codes and layer states);
    see the module docstring for why that window suffices."""

    def __init__(self, model: gnn_model.SPELL, time_edge: float, cross_identity: str = "cin",
                 device: torch.device | str = "cpu"):
        if not model.causal:
            raise ValueError("online inference needs a causal GNN (train_val.py --causal)")
        if cross_identity not in ("cin", "ciy"):
            raise ValueError(f"cross_identity must be cin or ciy, not {cross_identity!r}")
        self.model = model.eval()
        self.time_edge = float(time_edge)
        self.cross_identity = cross_identity
        self.device = torch.device(device)
        self.codes: dict[str, int] = {}
        self.times = torch.zeros(0, dtype=torch.float64)
        self.identity = torch.zeros(0, dtype=torch.long)
        branches = len(model.branches)
        self.h0 = torch.zeros(0, model.channel1, device=self.device)
        self.h1 = [torch.zeros(0, model.channel1, device=self.device) for _ in range(branches)]
        self.h2 = [torch.zeros(0, model.channel2, device=self.device) for _ in range(branches)]

    @property
    def window(self) -> int:
        """Nodes currently kept."""
        return len(self.times)

    def edges(self, times: torch.Tensor, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges j -> k from the kept and the new nodes (sources: kept first, then new) into the new
        nodes k (targets), by graph_building's rule restricted to t_j <= t_k, with edge_attr = sign(t_j - t_k)."""
        src_t = torch.cat([self.times, times])
        src_id = torch.cat([self.identity, identity])
        delta = src_t[None, :] - times[:, None]  # [new k, source j] = t_j - t_k, as build_edges computes it
        timed = (delta >= -self.time_edge) & (delta < 0)
        if self.cross_identity == "cin":
            timed &= src_id[None, :] == identity[:, None]
        target, source = torch.nonzero(timed | (delta == 0), as_tuple=True)
        return torch.stack([source, target]), torch.sign(delta[target, source]).to(torch.float32)

    @torch.no_grad()
    def push(self, times: Sequence[float] | np.ndarray, identities: Sequence[str],
             features: torch.Tensor) -> torch.Tensor:
        """Add nodes (times not before any earlier node's) with their features [m, D]; returns their
        logits [m, classes]. Nodes of the same instant must come in the same call."""
        times = torch.as_tensor(np.asarray(times, dtype=np.float64))
        if len(self.times) and bool(times.min() < self.times.max()):
            raise ValueError("nodes must arrive in time order")
        identity = torch.tensor([self.codes.setdefault(str(i), len(self.codes)) for i in identities],
                                dtype=torch.long)
        self._evict(float(times.min()))
        edge_index, edge_attr = self.edges(times, identity)
        branches = gnn_model.branch_edges(edge_index.to(self.device), edge_attr.to(self.device), causal=True)
        model = self.model
        h0 = model.embed(features.to(self.device))
        h0_src = torch.cat([self.h0, h0])
        logits = torch.zeros(len(times), model.num_classes, device=self.device)
        h1s, h2s = [], []
        for i, edges in enumerate(branches.values()):
            h1 = model.edge_layer(i, (h0_src, h0), edges)
            h2 = model.sage_layer(i, (torch.cat([self.h1[i], h1]), h1), edges)
            logits += model.out_layer(i, (torch.cat([self.h2[i], h2]), h2), edges)
            h1s.append(h1)
            h2s.append(h2)
        self.times, self.identity = torch.cat([self.times, times]), torch.cat([self.identity, identity])
        self.h0 = h0_src
        self.h1 = [torch.cat([old, new]) for old, new in zip(self.h1, h1s, strict=True)]
        self.h2 = [torch.cat([old, new]) for old, new in zip(self.h2, h2s, strict=True)]
        return logits

    def _evict(self, earliest_new: float) -> None:
        """Drop nodes that can be no in-neighbour of a node at `earliest_new` or later: t_j - t < -time_edge
        (the same float test as the edge rule, so nothing the rule would keep is dropped)."""
        keep = (self.times - earliest_new) >= -self.time_edge
        if bool(keep.all()):
            return
        self.times, self.identity, self.h0 = self.times[keep], self.identity[keep], self.h0[keep.to(self.device)]
        self.h1 = [h[keep.to(self.device)] for h in self.h1]
        self.h2 = [h[keep.to(self.device)] for h in self.h2]


class NodeEmbedder:
    """The encoder's embedding of single nodes as they arrive: the node's clip spectrogram (its own STFT,
    equal to the slice of the segment spectrogram that batch extraction uses) and its bio clips, one
    forward pass per instant. A segment's wav is read at its first node and released at its last.
    With the checkpoint's participant options on (participant_norm, eda_components) the participant's
    statistics and EDA components come from what has arrived by the node's clip end only
    (participant.OnlineParticipants), as the causal model's batch extraction does (STE_forward.py --causal,
    participant.prefix_views); ordinary extraction uses the whole session."""

    def __init__(self, model: torch.nn.Module, state: dict[str, Any], device: torch.device, amp: bool = False):
        self.model = model.eval()
        self.norm = Normalization.from_dict(state["normalization"])
        self.params = SpectrogramParams.from_dict(state["inputs"])
        self.clip_length = int(state["inputs"]["clip_length"])
        self.options = InputOptions.from_inputs(state["inputs"])
        self.participants = OnlineParticipants(self.params, self.options, self.clip_length)
        self.device = device
        self.amp = amp
        self.wavs: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def embed(self, nodes: Sequence[tuple[Segment, int]]) -> torch.Tensor:
        """Embeddings [m, 512 · the encoder's streams] of (segment, step) nodes."""
        specs, bio = [], []
        for seg, step in nodes:
            if seg.segment_id not in self.wavs:
                self.wavs[seg.segment_id] = io.read_wav(seg.wav, self.params.sample_rate)
            wav = self.wavs[seg.segment_id]
            steps = np.array([step])
            offset = int(seg.frame_offsets(self.params, steps)[0])
            seen = self.participants.view(seg, step, wav)
            specs.append(audio_input(seen, clip_spectrogram(wav, offset, self.clip_length, self.params), self.norm,
                                     self.options))
            bio.append(bio_inputs(seen, steps, self.norm, self.options))
        audio = torch.from_numpy(np.stack(specs))[:, None].to(self.device)
        clips = {name: torch.from_numpy(np.concatenate([b[name] for b in bio])).to(self.device) for name in bio[0]}
        with torch.inference_mode(), autocast(self.device, self.amp):
            out = self.model(audio, clips)
        return out.embedding.float()

    def release(self, segment_id: str) -> None:
        self.wavs.pop(segment_id, None)


@dataclass
class Arrival:
    """The nodes of one instant of a replay: their (segment, step), their probabilities, the segments
    that ended at this instant with their mean node probabilities, and the seconds it took (from the
    nodes' arrival to their labels), of which `embed_seconds` in the encoder."""

    nodes: list[tuple[Segment, int]]
    probs: np.ndarray
    segments_done: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    embed_seconds: float = 0.0


def instants(segments: Sequence[Segment]) -> Iterator[list[tuple[Segment, int]]]:
    """The nodes of `segments` (one session) in graph_building's order (time, identity, segment ID),
    grouped by timestamp."""
    pairs = [(seg, step) for seg in segments for step in range(seg.n_steps)]
    columns = {"time_s": np.array([seg.ts[step] for seg, step in pairs]),
               "identity": np.array([seg.identity for seg, _ in pairs], dtype=str),
               "segment_id": np.array([seg.segment_id for seg, _ in pairs], dtype=str)}
    order, _ = graph_building.session_order(columns)
    times = columns["time_s"][order]
    starts = np.flatnonzero(np.r_[True, times[1:] != times[:-1]])
    for group in np.split(order, starts[1:]):
        yield [pairs[i] for i in group]


def replay(embedder: NodeEmbedder, gnn: OnlineGNN, segments: Sequence[Segment]) -> Iterator[Arrival]:
    """Replay one session: per instant, embed its nodes, extend the graph, label them; a segment is
    labelled (mean of its nodes' probabilities) at its last node."""
    sums: dict[str, np.ndarray] = {}
    for nodes in instants(segments):
        started = time.perf_counter()
        features = embedder.embed(nodes)
        embedded = time.perf_counter()
        logits = gnn.push([seg.ts[step] for seg, step in nodes], [seg.identity for seg, _ in nodes], features)
        probs = functional.softmax(logits, dim=1).cpu().numpy()
        arrival = Arrival(nodes, probs, embed_seconds=embedded - started)
        for (seg, step), p in zip(nodes, probs, strict=True):
            sums[seg.segment_id] = sums.get(seg.segment_id, 0.0) + p.astype(np.float64)
            if step == seg.n_steps - 1:
                arrival.segments_done[seg.segment_id] = sums.pop(seg.segment_id) / seg.n_steps
                embedder.release(seg.segment_id)
        arrival.seconds = time.perf_counter() - started
        yield arrival
