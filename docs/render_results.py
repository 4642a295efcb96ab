"""Writes the results tables of README.md and docs/results.md from the runs' own JSON, so that a figure
cannot drift from the run that produced it.

    python docs/render_results.py [--check]

Each run is a file `docs/runs/<name>.json`: the command, commit, date and machine it came from, and
`result`, the JSON the command wrote (a CV summary, a seeds summary, a comparison over seeds, a late fusion, a
balanced-decision study, the differences between two systems of one run). A page marks where a run's table goes:

    <!-- run: <name> -->
    ...rewritten from docs/runs/<name>.json...
    <!-- end run -->

and `<!-- runs: contributions <name> <name> ... -->` ... `<!-- end run -->` for one table of several
comparisons over seeds (what each option adds, per system, with the verdict its interval gives).
`--check` rewrites nothing and exits 1 naming the pages that are not what the runs give.

    python docs/render_results.py --record NAME RESULT.json --command "python run_pipeline.py ..." \
        [--option LABEL] [--commit C] [--wall_s S]

writes docs/runs/NAME.json from a result a command wrote (commit: default HEAD; date: today; machine:
this one's cores and processor).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from encoder.core import metrics, util  # noqa: E402
from temporal_gnn import balanced_decision, cv_results, late_fusion, systems  # noqa: E402

RUNS_DIR = REPO_ROOT / "docs" / "runs"
PAGES = (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "results.md")
BLOCK = re.compile(r"(<!-- (run|runs): ([^>]*?) -->\n)(.*?)(<!-- end run -->)", re.DOTALL)


def system_label(name: str) -> str:
    """How the tables name a system (systems.py's label: the temporal baseline is the GRU)."""
    return systems.get(name).label if name in systems.names() else name


def read_run(name: str, runs_dir: Path = RUNS_DIR) -> dict[str, Any]:
    path = runs_dir / f"{name}.json"
    if not path.is_file():
        raise util.DataError(f"no run named {name!r} (a page marks it)", path)
    return util.read_json(path)


def provenance(run: dict[str, Any]) -> str:
    """`command` (commit, date, machine, wall time): the line above every table."""
    wall = f", {run['wall_s']:.0f} s" if run.get("wall_s") else ""
    return f"`{run['command']}` (commit {run['commit']}, {run['date']}, {run['machine']}{wall}):"


def table_text(result: dict[str, Any]) -> str:
    """A run's table as its command prints it."""
    if "fusion_minus_classical_over_seeds" in result:
        return late_fusion.format_fusion(result)
    if "balanced_minus_plain_over_seeds" in result:
        return balanced_decision.format_balanced(result)
    if "differences" in result:
        return balanced_decision.format_differences(result)
    if "over_seeds" in result:
        return cv_results.format_seed_differences(result)
    if "per_seed" in result:
        return cv_results.format_seeds(result)
    if "folds" in result:
        return cv_results.format_summary(result)
    if "b_minus_a" in next(iter(result.get("rows", {}).values()), {}):
        return cv_results.format_comparison(result)
    raise ValueError(f"no table for a result with keys {sorted(result)}")


def verdict(row: dict[str, Any]) -> str:
    """What a seed-averaged paired difference says: a gain or a loss only when its interval is clear of zero."""
    if row["ci95"] is None:
        return "no interval"
    low, high = row["ci95"]
    return "gain" if low > 0 else "loss" if high < 0 else "holds zero"


def contributions_table(names: list[str], runs_dir: Path = RUNS_DIR) -> str:
    """One Markdown row per option and system: B − A on each seed, the mean over seeds [95% CI] and the
    verdict. A system whose predictions the option does not change (B − A zero on every seed) is named
    below the table instead."""
    lines = ["| option | system | B − A per seed | mean over seeds [95% CI] | verdict |",
             "| --- | --- | --- | --- | --- |"]
    unchanged = []
    for name in names:
        run = read_run(name, runs_dir)
        result = run["result"]
        n_sessions = result["bootstrap"]["n_sessions"]
        for system, row in result["over_seeds"].items():
            if not any(row["per_seed"]):  # the same predictions in both runs (an option after this system)
                unchanged.append(f"{system_label(system)} under {run['option']}")
                continue
            per_seed = ", ".join(f"{v:+.4f}" for v in row["per_seed"])
            lines.append(f"| {run['option']} | {system_label(system)} | {per_seed} | "
                         f"{metrics.format_estimate(row, n_sessions, '+')} | {verdict(row)} |")
    if unchanged:
        lines += ["", f"Not listed, the same on every seed in both runs: {', '.join(unchanged)}."]
    return "\n".join(lines)


def render_block(kind: str, spec: str, runs_dir: Path = RUNS_DIR) -> str:
    """The text between a block's markers."""
    words = spec.split()
    if kind == "runs":
        if not words or words[0] != "contributions":
            raise ValueError(f"unknown block <!-- runs: {spec} -->")
        commands = "; ".join(provenance(read_run(n, runs_dir)).removesuffix(":") for n in words[1:])
        return f"From {commands}:\n\n{contributions_table(words[1:], runs_dir)}\n"
    run = read_run(spec.strip(), runs_dir)
    return f"{provenance(run)}\n\n```\n{table_text(run['result'])}\n```\n"


def render_page(text: str, runs_dir: Path = RUNS_DIR) -> str:
    """`text` with every marked block rewritten from its runs."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group(2), m.group(3), runs_dir) + m.group(5), text)


def record_run(name: str, result_path: Path, command: str, option: str | None = None, commit: str | None = None,
               wall_s: float | None = None, runs_dir: Path = RUNS_DIR) -> Path:
    """docs/runs/<name>.json: `result_path`'s JSON with where it came from; returns its path."""
    import datetime
    import os
    import platform
    import subprocess

    if commit is None:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    machine = f"{os.cpu_count()}-core {platform.processor() or platform.machine()} CPU, one run"
    run = {"command": command, "commit": commit, "date": datetime.date.today().isoformat(), "machine": machine,
           **({"option": option} if option else {}), **({"wall_s": wall_s} if wall_s else {}),
           "result": util.read_json(result_path)}
    path = runs_dir / f"{name}.json"
    util.write_json(run, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a page is out of date")
    parser.add_argument("--record", nargs=2, metavar=("NAME", "RESULT"), help="write docs/runs/NAME.json from RESULT")
    parser.add_argument("--command", help="with --record: the command that wrote RESULT")
    parser.add_argument("--option", help="with --record: the option a comparison measures (contributions tables)")
    parser.add_argument("--commit", help="with --record: the commit the run used (default HEAD)")
    parser.add_argument("--wall_s", type=float, help="with --record: the run's wall time in seconds")
    args = parser.parse_args(argv)
    if args.record:
        if not args.command:
            parser.error("--record needs --command")
        print(record_run(args.record[0], Path(args.record[1]), args.command, args.option, args.commit, args.wall_s))
        return
    stale = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        rendered = render_page(text)
        if rendered == text:
            continue
        stale.append(page)
        if not args.check:
            with util.atomic_path(page) as tmp:
                tmp.write_text(rendered, encoding="utf-8")
    if args.check and stale:
        raise SystemExit(f"out of date (run python docs/render_results.py): {', '.join(map(str, stale))}")
    print("\n".join(f"rewrote {page}" for page in stale) or "every page is up to date")


if __name__ == "__main__":
    util.run_cli(main)
