"""One command from recordings to a results table.

    python run_pipeline.py [--data DIR] [--preset demo] [--device auto|cpu|N] [--force] ...

The command of temporal_gnn/pipeline_run.py, whose docstring (this command's --help) documents the flags, the
stages and what is printed. One run at a time holds a work folder (a lock on <work>/.run_pipeline.lock): a
second one is refused at once, naming the first one's pid.
"""

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
from encoder.core import layout, util
from temporal_gnn.pipeline_run import check_inputs, parse_args, run


def main() -> None:
    args = parse_args()
    check_inputs(args)
    with util.exclusive_lock(args.work / layout.LOCK_FILE, "run_pipeline.py"):
        run(args)


if __name__ == "__main__":
    util.run_cli(main)
