"""The original's models_gnn module: the three-branch SPELL GNN and its causal variant, now
temporal_gnn/gnn_model.py; its names are re-exported here for code that imports models_gnn."""

from temporal_gnn.gnn_model import (
    BRANCHES,
    CAUSAL_BRANCHES,
    CHECKPOINT_FORMAT,
    OPT_IN_BLOCKS,
    SPELL,
    WHOLE_SEGMENT_BLOCKS,
    FactorisedEdgeConv,
    branch_edges,
    future_blocks,
    load_checkpoint,
    modality_slices,
    refuse_future_blocks,
    save_checkpoint,
)

__all__ = ["BRANCHES", "CAUSAL_BRANCHES", "CHECKPOINT_FORMAT", "OPT_IN_BLOCKS", "SPELL", "WHOLE_SEGMENT_BLOCKS",
           "FactorisedEdgeConv", "branch_edges", "future_blocks", "load_checkpoint", "modality_slices",
           "refuse_future_blocks", "save_checkpoint"]
