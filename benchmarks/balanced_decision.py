"""Would the balanced decision serve macro-F1 better than the plain argmax? Both decisions of every learned system
over a `run_pipeline.py --cv K` run's saved test probabilities (temporal_gnn/balanced_decision.py says how).

    python benchmarks/balanced_decision.py RUN [--tau 1] [--modalities M] [--out FILE.json]

Per seed of RUN and per system (the encoder alone, the GRU, the GNN): pooled segment macro-F1 of the plain argmax
and of argmax(log p - tau · log training prior), session-bootstrap intervals, the paired difference; then the
difference over the seeds. `--out` also writes the figures as JSON (docs/render_results.py --record takes it).
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import sys
from pathlib import Path

from encoder.core import config, util
from temporal_gnn.balanced_decision import balanced_decision, format_balanced


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run_pipeline.py --cv folder")
    parser.add_argument("--tau", type=float, default=1.0, help="the adjustment's strength (1: the balanced decision)")
    parser.add_argument("--modalities", default=config.MODALITIES, help="the GNN folder whose predictions are read")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = balanced_decision(args.run, args.tau, args.modalities)
    print(format_balanced(result))
    if args.out is not None:
        util.write_json(result, args.out)


if __name__ == "__main__":
    util.run_cli(main)
