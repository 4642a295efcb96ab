"""Train the three-branch GNN on the training sessions' graphs, select the epoch on the validation sessions
and report the test sessions beside the other systems; the last printed line is the path of metrics.json.

    python train_val.py [graph flags as generate_graph.py] [--num_epoch 700] [--exp NAME] ...

The command of temporal_gnn/gnn_training.py (gnn_training.run), which documents the training, the
evaluation and what results/<exp>/ holds.
"""

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
from encoder.core import util
from temporal_gnn.gnn_training import print_summary, run


def main(argv: list[str] | None = None) -> None:
    print_summary(run(argv))


if __name__ == "__main__":
    util.run_cli(main)
