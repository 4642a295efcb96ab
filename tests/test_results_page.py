"""docs/render_results.py: the results tables of README.md and docs/results.md are rewritten from the runs'
JSON in docs/runs/, so a page whose figure differs from its run fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from script_module import load_script

from encoder.core import config, util

render = load_script(config.REPO_ROOT / "docs" / "render_results.py")


def test_every_page_is_what_its_runs_give() -> None:
    marked = 0
    for page in render.PAGES:
        text = page.read_text(encoding="utf-8")
        marked += len(render.BLOCK.findall(text))
        assert render.render_page(text) == text, f"{page} is out of date: python docs/render_results.py"
    assert marked >= 3  # the pages do hold generated tables


def comparison(per_seed: list[float], ci95: list[float] | None) -> dict:
    mean = sum(per_seed) / len(per_seed)
    return {"over_seeds": {"gnn": {"macro_f1": mean, "ci95": ci95, "paired": True, "per_seed": per_seed, "sd": 0.01}},
            "bootstrap": {"n_sessions": 12}, "seeds": ["first", "seed_1"]}


def test_contributions_rows_and_verdicts_from_hand_made_runs(tmp_path: Path) -> None:
    runs = {"gain": ([0.02, 0.04], [0.005, 0.06]), "zero": ([0.01, -0.01], [-0.03, 0.03]),
            "loss": ([-0.05, -0.03], [-0.07, -0.01]), "few": ([0.1, 0.1], None)}
    for name, (values, ci) in runs.items():
        util.write_json({"command": f"cmd {name}", "commit": "abc1234", "date": "2026-12-04", "machine": "m",
                         "option": f"option {name}", "result": comparison(values, ci)}, tmp_path / f"{name}.json")
    same = comparison([0.02, 0.04], [0.005, 0.06])  # the GNN gains; the encoder is shared by A and B
    same["over_seeds"]["encoder"] = {"macro_f1": 0.0, "ci95": [0.0, 0.0], "paired": True, "per_seed": [0.0, 0.0],
                                     "sd": 0.0}
    util.write_json({"command": "cmd same", "commit": "abc1234", "date": "2026-12-04", "machine": "m",
                     "option": "option graphs only", "result": same}, tmp_path / "same.json")
    page = "intro\n<!-- runs: contributions gain zero loss few same -->\nstale\n<!-- end run -->\nafter\n"
    rendered = render.render_page(page, tmp_path)
    lines = rendered.splitlines()
    assert lines[0] == "intro" and lines[-1] == "after" and "stale" not in rendered
    assert lines[2] == "From " + "; ".join(f"`cmd {name}` (commit abc1234, 2026-12-04, m)"
                                           for name in (*runs, "same")) + ":"
    rows = [line for line in lines if line.startswith("| option ")][1:]  # after the header
    assert rows == ["| option gain | GNN | +0.0200, +0.0400 | +0.0300 [+0.0050, +0.0600] | gain |",
                    "| option zero | GNN | +0.0100, -0.0100 | +0.0000 [-0.0300, +0.0300] | holds zero |",
                    "| option loss | GNN | -0.0500, -0.0300 | -0.0400 [-0.0700, -0.0100] | loss |",
                    "| option few | GNN | +0.1000, +0.1000 | +0.1000 [n/a (12 sessions)] | no interval |",
                    "| option graphs only | GNN | +0.0200, +0.0400 | +0.0300 [+0.0050, +0.0600] | gain |"]
    assert "Not listed, the same on every seed in both runs: encoder under option graphs only." in lines
    assert render.render_page(rendered, tmp_path) == rendered  # rendering is idempotent


def test_a_run_block_says_where_its_table_came_from(tmp_path: Path) -> None:
    result = tmp_path / "compare.json"
    util.write_json(comparison([0.02, 0.04], [0.005, 0.06]), result)
    path = render.record_run("one", result, "python x.py --flag", option="flag", commit="abc1234", wall_s=61.2,
                             runs_dir=tmp_path)
    run = util.read_json(path)
    assert run["result"] == util.read_json(result) and run["commit"] == "abc1234" and run["option"] == "flag"
    rendered = render.render_page("<!-- run: one -->\n<!-- end run -->\n", tmp_path)
    assert rendered.splitlines()[1] == f"`python x.py --flag` (commit abc1234, {run['date']}, {run['machine']}, 61 s):"
    assert "gnn          +0.0200  +0.0400" in rendered and "+0.0300 [+0.0050, +0.0600]" in rendered
    with pytest.raises(util.DataError, match="no run named 'missing'"):
        render.render_page("<!-- run: missing -->\n<!-- end run -->\n", tmp_path)
