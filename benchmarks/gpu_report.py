"""Collect the parts of benchmarks/gpu_check.sh into one JSON file and print its headline figures.

    python benchmarks/gpu_report.py --work DIR --out gpu_check.json

Reads DIR/status/<part>.json (exit status and seconds of each part, written by gpu_check.sh),
DIR/parts/<part>.json (bench_gpu.py results), DIR/cuda_tests.xml (pytest's JUnit report; when it is
missing, as pytest writes it only when it ends, the per-test lines of `pytest -v` in DIR/logs/tests.log,
which a killed run leaves: the test it was killed in counts as failed) and DIR/logs/demo.log
(run_pipeline.py's output, for its `stage times (s): ...` line). Standard library only, so the report is
written even when torch or the project cannot be imported.

A headline figure is null, with its reason under `reasons`, when its part failed or did not run, or was
not measured on CUDA at full size (a CPU or --quick run keeps its own figures under `parts`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

STAGE_TIMES = re.compile(r"stage times \(s\): (?P<stages>.*?); total (?P<total>[0-9.]+)")
# pytest -v: "tests/test_cuda.py::test_x PASSED   [ 12%]" once the test ends; only "tests/test_cuda.py::test_x "
# while it runs (so the last line of a killed run); a teardown error adds a line "... ERROR"
VERBOSE_LINE = re.compile(r"^(?P<id>[^\s:]+\.py::\S+) ?(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)?"
                          r"(?: \((?P<reason>.*?)\))?", re.MULTILINE)
# pytest -rA's short summary: "FAILED tests/test_cuda.py::test_x - AssertionError: ..."
SUMMARY_LINE = re.compile(r"^(?:FAILED|ERROR) (?P<id>\S+::\S+) - (?P<message>.*)$", re.MULTILINE)
SUMMARY_SKIP = re.compile(r"^SKIPPED \[\d+\] \S+: (?P<reason>.*)$", re.MULTILINE)
COLLECTED = re.compile(r"collected (?P<n>\d+) items?(?: / \d+ deselected / (?P<selected>\d+) selected)?")
OUTCOMES = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "failed", "SKIPPED": "skipped",
            "XFAIL": "skipped"}
# headline key -> (part, key in that part's results)
FIGURES = {
    "extract_nodes_per_s_fp32": ("encoder", "extract_nodes_per_s_fp32"),
    "extract_nodes_per_s_amp": ("encoder", "extract_nodes_per_s_amp"),
    "extract_nodes_per_s_batch1": ("encoder", "extract_nodes_per_s_batch1"),
    "extract_model_only_nodes_per_s_fp32": ("encoder", "extract_model_only_nodes_per_s_fp32"),
    "extract_model_only_nodes_per_s_amp": ("encoder", "extract_model_only_nodes_per_s_amp"),
    "extract_nodes_per_s_device_fp32": ("encoder", "extract_nodes_per_s_device_fp32"),
    "extract_nodes_per_s_device_amp": ("encoder", "extract_nodes_per_s_device_amp"),
    "extract_max_abs_diff_device_vs_cpu_spectrograms_fp32": ("encoder",
                                                             "extract_max_abs_diff_device_vs_cpu_spectrograms_fp32"),
    "extract_model_only_nodes_per_s_amp_nondeterministic": ("encoder",
                                                            "extract_model_only_nodes_per_s_amp_nondeterministic"),
    "encoder_train_clips_per_s_cpu_spectrograms": ("encoder", "encoder_train_clips_per_s_cpu_spectrograms"),
    "encoder_train_model_only_clips_per_s_contiguous": ("encoder", "encoder_train_model_only_clips_per_s_contiguous"),
    "encoder_train_model_only_clips_per_s_fp32": ("encoder", "encoder_train_model_only_clips_per_s_fp32"),
    "encoder_train_model_only_clips_per_s_nondeterministic": ("encoder",
                                                              "encoder_train_model_only_clips_per_s_nondeterministic"),
    "encoder_train_clips_per_s": ("encoder", "encoder_train_clips_per_s"),
    "encoder_train_model_only_clips_per_s": ("encoder", "encoder_train_model_only_clips_per_s"),
    "gnn_epoch_s_300k": ("gnn", "gnn_epoch_s"),
    "gnn_peak_mem_gb": ("gnn", "gnn_peak_mem_gb"),
    "gnn_predict_nodes_per_s": ("gnn", "gnn_predict_nodes_per_s"),
}
PRINTED = ("device", "torch", "cuda_tests_passed", "cuda_tests_failed", "demo_end_to_end_s",
           "extract_nodes_per_s_device_fp32", "extract_nodes_per_s_device_amp", "extract_nodes_per_s_fp32",
           "extract_nodes_per_s_amp", "extract_nodes_per_s_batch1", "encoder_train_clips_per_s",
           "encoder_train_clips_per_s_cpu_spectrograms", "gnn_epoch_s_300k", "gnn_peak_mem_gb")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def part_status(status: dict[str, Any] | None) -> str:
    if status is None:
        return "did not run"
    if status.get("skipped"):
        return f"skipped ({status['skipped']})"
    rc = status.get("rc")
    if rc in (124, 137):
        return f"timed out after {status.get('limit_s')} s"
    return "ok" if rc == 0 else f"failed (exit status {rc})"


def log_tail(path: Path, lines: int = 15) -> list[str] | None:
    """The last lines of a part's output (progress-bar redraws dropped), for the report of a failed part."""
    try:
        text = read_log(path)
    except OSError:
        return None
    kept = [line for line in text.splitlines() if line.strip()]
    return [line[:500] for line in kept[-lines:]]


def junit_counts(path: Path) -> dict[str, Any] | None:
    """passed/failed/skipped counts and the failures' names and first message lines of a JUnit report."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures: list[str] = []
    skip_reasons: set[str] = set()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            counts["failed"] += 1
            message = (bad.get("message") or "").strip()
            failures.append(f"{name}: {message.splitlines()[0][:300] if message else bad.tag}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            skip_reasons.add(case.find("skipped").get("message", ""))
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures, "skip_reasons": sorted(skip_reasons), "source": "junit"}


def pytest_log_counts(path: Path) -> dict[str, Any] | None:
    """The counts of junit_counts from the output of `pytest -v -rA`, complete or cut short by a kill: a test
    whose line has no outcome was running when pytest was killed and counts as failed (`unfinished`); tests
    collected but never started are `not_run`. None when the log names no test."""
    try:
        text = read_log(path)
    except OSError:
        return None
    outcomes: dict[str, str] = {}  # test id -> passed / failed / skipped / unfinished, in the order they ran
    verbose_reasons: set[str] = set()
    for match in VERBOSE_LINE.finditer(text):
        test, outcome = match["id"], OUTCOMES.get(match["outcome"] or "", "unfinished")
        if outcomes.get(test) in (None, "unfinished") or outcome == "failed":  # a teardown error overrides a pass
            outcomes[test] = outcome
        if outcome == "skipped" and match["reason"]:
            verbose_reasons.add(match["reason"])
    if not outcomes:
        return None
    messages = {m["id"]: m["message"].strip() for m in SUMMARY_LINE.finditer(text)}
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures, unfinished = [], []
    for test, outcome in outcomes.items():
        if outcome == "unfinished":
            unfinished.append(test)
            failures.append(f"{test}: killed while running (no outcome in the log)")
            outcome = "failed"
        elif outcome == "failed":
            failures.append(f"{test}: {messages.get(test, 'failed (no message in the log)')[:300]}")
        counts[outcome] += 1
    collected = COLLECTED.search(text)
    total = None if collected is None else int(collected["selected"] or collected["n"])
    skip_reasons = {m["reason"].strip() for m in SUMMARY_SKIP.finditer(text)} or verbose_reasons
    return {**counts, "failures": failures, "skip_reasons": sorted(skip_reasons), "source": "log",
            "collected": total, "unfinished": unfinished,
            "not_run": None if total is None else max(total - len(outcomes), 0)}


def read_log(path: Path) -> str:
    """A log's text, progress-bar redraws dropped (what follows the last carriage return of each line)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines())


def demo_times(log: Path) -> dict[str, Any] | None:
    """The stage times run_pipeline.py printed (whole seconds, as it rounds them) and its reported total."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = STAGE_TIMES.findall(text)
    if not found:
        started = re.findall(r"^\[(\w+)\] running", text, flags=re.MULTILINE)
        return {"stages_started": started}
    stages, total = found[-1]
    parsed = {}
    for item in stages.split(","):
        name, _, value = item.strip().rpartition(" ")
        parsed[name] = float(value)
    return {"stage_times_s": parsed, "reported_total_s": float(total)}


def build_report(work: Path, quick: bool) -> dict[str, Any]:
    statuses = {p.stem: read_json(p) for p in sorted((work / "status").glob("*.json"))}
    parts = {p.stem: read_json(p) for p in sorted((work / "parts").glob("*.json"))}
    env = parts.get("env") or {}
    cuda = bool(env.get("cuda_available"))
    reasons: dict[str, str] = {}
    notes: dict[str, str] = {}  # about figures that are there but partial
    report: dict[str, Any] = {
        "quick": quick,
        "device": env.get("device"),
        "torch": env.get("torch"),
        "cuda_available": env.get("cuda_available"),
        "env": env or None,
    }
    if not env:
        reasons["device"] = reasons["torch"] = f"env part: {part_status(statuses.get('env'))}"

    tests = junit_counts(work / "cuda_tests.xml") or pytest_log_counts(work / "logs" / "tests.log")
    report["cuda_tests"] = tests
    if tests is None:
        report["cuda_tests_passed"] = report["cuda_tests_failed"] = None
        reasons["cuda_tests_passed"] = reasons["cuda_tests_failed"] = \
            f"no pytest report nor per-test lines; tests part: {part_status(statuses.get('tests'))}"
    elif not cuda:
        report["cuda_tests_passed"] = report["cuda_tests_failed"] = None
        reasons["cuda_tests_passed"] = reasons["cuda_tests_failed"] = \
            f"no CUDA device: {tests['skipped']} CUDA tests skipped"
    else:
        report["cuda_tests_passed"], report["cuda_tests_failed"] = tests["passed"], tests["failed"]
        if tests["source"] == "log":
            notes["cuda_tests_failed"] = (f"from the log, no JUnit report (tests part: "
                                          f"{part_status(statuses.get('tests'))}): {len(tests['unfinished'])} "
                                          f"killed while running, {tests['not_run']} never started")
    report["cuda_tests_skipped"] = None if tests is None else tests["skipped"]

    demo = demo_times(work / "logs" / "demo.log") or {}
    demo_status = statuses.get("demo") or {}
    report["demo"] = {"status": part_status(statuses.get("demo")), "wall_s": demo_status.get("seconds"), **demo}
    report["demo_stage_times_s"] = demo.get("stage_times_s") if cuda and not quick else None
    if "stage_times_s" not in demo:
        report["demo_end_to_end_s"] = None
        reasons["demo_end_to_end_s"] = f"no stage-times line; demo part: {report['demo']['status']}"
    elif not cuda or quick:
        report["demo_end_to_end_s"] = None
        reasons["demo_end_to_end_s"] = ("not on CUDA" if not cuda else "quick run") + \
            f": the demo ran on {'tiny data' if quick else 'the demo preset'}, figures under demo"
    else:
        report["demo_end_to_end_s"] = demo_status.get("seconds")

    for key, (part, source) in FIGURES.items():
        results = parts.get(part) or {}
        value = (results.get("results") or {}).get(source)
        report[key] = None
        if not results:
            reasons[key] = f"{part} part: {part_status(statuses.get(part))}"
        elif results.get("device_type") != "cuda":
            reasons[key] = f"no CUDA device: {part} ran on {results.get('device')}" + \
                (" at quick sizes" if results.get("quick") else "") + f", figures under parts.{part}"
        elif results.get("quick"):
            reasons[key] = f"quick sizes, figures under parts.{part}"
        elif value is None:
            why = {**results.get("errors", {}), **results.get("skipped", {})}
            reasons[key] = f"not measured ({part} part: {part_status(statuses.get(part))}; {why or 'no value'})"
        else:
            report[key] = value

    report["parts"] = {name: {"status": part_status(status), **(status or {}), "results": parts.get(name)}
                       for name, status in statuses.items()}
    for name, entry in report["parts"].items():
        if entry["status"] != "ok" and not entry.get("skipped"):
            entry["log_tail"] = log_tail(work / "logs" / f"{name}.log")
    report["failed_parts"] = [name for name, status in statuses.items() if part_status(status) != "ok"
                              and not (status or {}).get("skipped")]
    report["reasons"] = reasons
    report["notes"] = notes
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = build_report(args.work, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    width = max(map(len, PRINTED))
    for key in PRINTED:
        value = report.get(key)
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        note = report["reasons"].get(key) if value is None else report["notes"].get(key)
        note = f"  ({note})" if note else ""
        print(f"{key:<{width}}  {shown}{note}")
    print(f"failed parts: {', '.join(report['failed_parts']) or 'none'}")
    print(args.out)
    return 1 if report["failed_parts"] else 0


if __name__ == "__main__":
    sys.exit(main())
