"""Bad input to the dataframe stage (docs/outputs.md, errors and dropped data): a one-line error naming
the file (and row), a non-zero exit, nothing written; a few broken segments are skipped and
counted, too many stop the stage.

Each case is a copy of the `tiny` dataset with one fault injected. The CLI runs (a few seconds of
start-up each) are started together in background threads when the module's fixture is set up.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from encoder.core import frames, util

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Fault:
    file: Path  # the file the error must name
    row: int | None  # the 1-based line it must name, if any


def tree(root: Path) -> list[str]:
    """Every file and folder under root (hidden temporaries included), or None when root is absent."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else None


def edit_line(path: Path, row: int, edit: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[row - 1] = ",".join(edit(lines[row - 1].split(",")))
    path.write_text("\n".join(lines), encoding="utf-8")


def first_row(path: Path, n_fields: int) -> int:
    """1-based line number of the first data row of a bio file with n_fields fields (2 outside a
    segment, 3 inside)."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if i > 2 and line.count(",") == n_fields - 1)


def bio_file(root: Path, modality: str, session: int) -> Path:
    return sorted((root / modality / f"Session{session:02d}").glob("*.csv"))[0]


# --------------------------------------------------------------------------- fault injections


def root_missing(root: Path) -> Fault:
    shutil.rmtree(root)
    return Fault(root, None)


def root_empty(root: Path) -> Fault:
    shutil.rmtree(root)
    root.mkdir()
    return Fault(root, None)


def header_rows_missing(root: Path) -> Fault:
    path = root / "annotation" / "Sess02_eval.csv"
    path.write_text("\n".join(path.read_text().split("\n")[2:]))
    return Fault(path, 1)


def header_row_wrong(root: Path) -> Fault:
    path = root / "annotation" / "Sess33_eval.csv"
    edit_line(path, 2, lambda cells: [c.replace("start", "begin") for c in cells])
    return Fault(path, 1)


def first_header_row_missing(root: Path) -> Fault:
    path = root / "annotation" / "Sess01_eval.csv"
    path.write_text("\n".join(path.read_text().split("\n")[1:]))
    return Fault(path, 1)


def unknown_emotion(root: Path) -> Fault:
    path = root / "annotation" / "Sess37_eval.csv"
    edit_line(path, 6, lambda cells: cells[:4] + ["disgust"] + cells[5:])  # the dataset spells it "disqust"
    return Fault(path, 6)


def eda_non_numeric(root: Path) -> Fault:
    path = bio_file(root, "EDA", 2)
    row = first_row(path, 3) + 2
    edit_line(path, row, lambda cells: ["0.51x"] + cells[1:])
    return Fault(path, row)


def temp_nan(root: Path) -> Fault:
    path = bio_file(root, "TEMP", 33)
    row = first_row(path, 2) + 1
    edit_line(path, row, lambda cells: ["NaN"] + cells[1:])
    return Fault(path, row)


def eda_empty_value(root: Path) -> Fault:
    path = bio_file(root, "EDA", 37)
    row = first_row(path, 3)
    edit_line(path, row, lambda cells: [""] + cells[1:])
    return Fault(path, row)


def eda_short_timestamp(root: Path) -> Fault:
    path = bio_file(root, "EDA", 1)
    row = first_row(path, 3) + 1
    edit_line(path, row, lambda cells: [cells[0], cells[1][:-1]] + cells[2:])
    return Fault(path, row)


def temp_impossible_timestamp(root: Path) -> Fault:
    path = bio_file(root, "TEMP", 2)
    row = first_row(path, 2) + 3
    edit_line(path, row, lambda cells: [cells[0], cells[1][:10] + "25" + cells[1][12:]] + cells[2:])
    return Fault(path, row)


def temp_unix_timestamp(root: Path) -> Fault:
    path = bio_file(root, "TEMP", 37)
    row = first_row(path, 3)
    edit_line(path, row, lambda cells: [cells[0], "1598003203.250"] + cells[2:])
    return Fault(path, row)


# name -> (injection, regex the error message must match)
CASES: dict[str, tuple[Callable[[Path], Fault], str]] = {
    "root_missing": (root_missing, "not found"),
    "root_empty": (root_empty, "empty"),
    "header_rows_missing": (header_rows_missing, "header"),
    "header_row_wrong": (header_row_wrong, "header"),
    "first_header_row_missing": (first_header_row_missing, "header"),
    "unknown_emotion": (unknown_emotion, "unknown emotion label 'disgust'"),
    "eda_non_numeric": (eda_non_numeric, "non-numeric or NaN EDA value '0.51x'"),
    "temp_nan": (temp_nan, "non-numeric or NaN TEMP value 'NaN'"),
    "eda_empty_value": (eda_empty_value, "non-numeric or NaN EDA value"),
    "eda_short_timestamp": (eda_short_timestamp, "malformed timestamp"),
    "temp_impossible_timestamp": (temp_impossible_timestamp, "malformed timestamp"),
    "temp_unix_timestamp": (temp_unix_timestamp, "malformed timestamp '1598003203.250'"),
}
# Also run as real processes (the rest run the same script in this interpreter, see run_cli_in_process).
SUBPROCESS_CASES = ("root_missing", "unknown_emotion", "eda_non_numeric")


def drop_wavs(root: Path, n: int, kept: list[str]) -> list[str]:
    """Delete the wavs of n segments that would otherwise be kept."""
    segments = kept[::3][:n]
    for segment in segments:
        (root / "wav" / f"Session{segment[4:6]}" / f"{segment}.wav").unlink()
    return segments


def strip_segment_from_bio(root: Path, segment: str) -> None:
    """Remove a kept segment's label from its EDA rows: it keeps its wav but has no joined bio rows."""
    path = root / "EDA" / f"Session{segment[4:6]}" / f"{segment[:-4]}.csv"
    text = path.read_text()
    assert f",{segment}\n" in text
    path.write_text(text.replace(f",{segment}\n", "\n"))


def run_cli_process(root: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "encoder/build_frames.py", "--root", str(root), *args], cwd=REPO,
                          capture_output=True, timeout=300)
    # decoded by hand: text=True would turn the progress bars' carriage returns into newlines
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def run_cli_in_process(root: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                       *args: str) -> tuple[int, str, str]:
    """The same script run in this interpreter (argparse, util.run_cli and all), without the few seconds
    of interpreter start-up."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["encoder/build_frames.py", "--root", str(root), *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "encoder" / "build_frames.py"), run_name="__main__")
    out, err = capsys.readouterr()
    return info.value.code, out, err


def copy_or_link(src: str, dst: str) -> None:
    """Wavs are only ever deleted from the copies, never edited: hard-link them to save time."""
    if src.endswith(".wav"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@dataclass
class Run:
    root: Path
    before: list[str] | None
    future: Future

    def result(self) -> tuple[int, str, str, list[str] | None]:
        return (*self.future.result(), tree(self.root))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_raw: Path):
    """Broken copies of tiny for every case; a few real CLI processes started in the background."""
    base = tmp_path_factory.mktemp("broken")
    clean = frames.build_frames(tiny_raw)
    kept = list(clean.gt["segment_id"])
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {}

    def start(name: str, root: Path, *args: str) -> None:
        runs[name] = Run(root, tree(root), pool.submit(run_cli_process, root, *args))

    def fresh(name: str) -> Path:
        root = base / name / "KEMDy20"
        shutil.copytree(tiny_raw, root, copy_function=copy_or_link)
        return root

    # Skipping: 3 segments without wav and 1 without bio rows (plus the segments of tiny whose
    # participant lacks one bio file) stay under MAX_SKIP_SHARE ...
    removed, stripped = kept[::3][:3], kept[1]
    few = fresh("few_skipped")
    drop_wavs(few, 3, kept)
    strip_segment_from_bio(few, stripped)
    strict = fresh("few_skipped_strict")
    drop_wavs(strict, 3, kept)
    strip_segment_from_bio(strict, stripped)
    start("few_skipped", few)
    # ... but not under a stricter --max-skip-share.
    start("few_skipped_strict", strict, "--max-skip-share", "0.05")
    faults = {}
    for name, (inject, _) in CASES.items():
        root = fresh(name)
        faults[name] = (root, inject(root))
        if name in SUBPROCESS_CASES:
            start(name, root)
    yield {"faults": faults, "runs": runs, "few": (few, removed, stripped), "strict": strict, "base": base,
           "kept": kept, "no_bio": clean.report["dropped"]["no_joined_bio_rows"],
           "annotated": clean.report["segments_annotated"]}
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------- in process


@pytest.mark.parametrize("name", list(CASES))
def test_build_frames_raises_one_line_error(setup, name):
    root, fault = setup["faults"][name]
    before = tree(root)
    with pytest.raises(util.DataError, match=CASES[name][1]) as info:
        frames.build_frames(root)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{fault.file}")
    assert info.value.path == fault.file
    if fault.row is None:
        assert ", row " not in message
    else:
        assert f"{fault.file}, row {fault.row}: " in message
        assert info.value.row == fault.row
    assert tree(root) == before


def test_too_many_segments_without_wav_fail(setup, tiny_raw):
    root = setup["base"] / "many_without_wav" / "KEMDy20"
    shutil.copytree(tiny_raw, root)
    n_annotated, no_bio = setup["annotated"], setup["no_bio"]
    n_drop = int(0.15 * n_annotated) + 1 - no_bio  # with the segments that lack a bio file: just over 15 %
    assert n_drop > 0
    drop_wavs(root, n_drop, setup["kept"])
    with pytest.raises(util.DataError,
                       match=rf"{n_drop + no_bio} of {n_annotated} annotated segments .*MAX_SKIP_SHARE=0.15"):
        frames.build_frames(root)
    # allowing a larger share builds, and says what was dropped
    built = frames.build_frames(root, max_skip_share=0.25)
    assert built.report["dropped"] == {"no_wav": n_drop, "no_joined_bio_rows": no_bio}
    assert built.report["segments_kept"] == n_annotated - n_drop - no_bio


def test_segments_without_wav_and_bio_are_skipped_and_counted(setup):
    few, removed, stripped = setup["few"]
    built = frames.build_frames(setup["strict"])
    no_bio = setup["no_bio"] + 1
    assert built.report["dropped"] == {"no_wav": 3, "no_joined_bio_rows": no_bio}
    kept = set(built.gt["segment_id"])
    assert stripped not in kept and stripped not in built.entities
    assert not kept & set(removed)
    assert built.report["segments_kept"] == built.report["segments_annotated"] - 3 - no_bio
    assert f"dropped: 3 without wav, {no_bio} without joined EDA/TEMP rows" in frames.format_report(built)
    # without the wav check, the segments without wav are kept
    unchecked = frames.build_frames(setup["strict"], check_wav=False)
    assert set(removed) <= set(unchecked.gt["segment_id"])
    assert unchecked.report["dropped"] == {"no_wav": 0, "no_joined_bio_rows": no_bio}


# --------------------------------------------------------------------------- through the CLI


def visible_lines(stream: str) -> list[str]:
    """The non-blank lines a terminal would show (text after the last carriage return of a line)."""
    return [line.split("\r")[-1] for line in stream.split("\n") if line.split("\r")[-1].strip()]


def check_cli_failure(code: int, out: str, err: str, fault: Fault) -> None:
    assert code == 1, out + err
    assert "Traceback" not in err
    location = f"{fault.file}, row {fault.row}: " if fault.row else f"{fault.file}: "
    assert f"error: {location}" in err
    assert not any(line.startswith("error: ") for line in out.splitlines())


def check_one_clean_line(err: str) -> None:
    lines = visible_lines(err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")


@pytest.fixture(scope="module")
def in_process_runs() -> dict[str, tuple[int, str, str, list[str] | None, list[str] | None]]:
    """Results of run_cli_in_process per case, shared by the two tests below: (code, stdout, stderr,
    tree before, tree after)."""
    return {}


def cli_in_process(name: str, setup, in_process_runs, capsys, monkeypatch):
    if name not in in_process_runs:
        root, _ = setup["faults"][name]
        before = tree(root)
        in_process_runs[name] = (*run_cli_in_process(root, capsys, monkeypatch), before, tree(root))
    return in_process_runs[name]


@pytest.mark.parametrize("name", list(CASES))
def test_cli_fails_naming_file_and_writes_nothing(setup, in_process_runs, name, capsys, monkeypatch):
    root, fault = setup["faults"][name]
    code, out, err, before, after = cli_in_process(name, setup, in_process_runs, capsys, monkeypatch)
    check_cli_failure(code, out, err, fault)
    assert after == before  # no artifact, no temporary file
    if root.exists():
        assert not any((root / artifact).exists() for artifact in frames.artifacts())


@pytest.mark.parametrize("name", CASES)
def test_cli_error_is_one_clean_line(setup, in_process_runs, name, capsys, monkeypatch):
    _, _, err, _, _ = cli_in_process(name, setup, in_process_runs, capsys, monkeypatch)
    check_one_clean_line(err)


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_cli_process_fails_naming_file_and_writes_nothing(setup, name):
    run = setup["runs"][name]
    code, out, err, after = run.result()
    check_cli_failure(code, out, err, setup["faults"][name][1])
    assert after == run.before


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_cli_process_error_is_one_clean_line(setup, name):
    _, _, err, _ = setup["runs"][name].result()
    check_one_clean_line(err)


def test_cli_skips_and_reports_a_few_broken_segments(setup):
    few, removed, stripped = setup["few"]
    run = setup["runs"]["few_skipped"]
    code, out, err, after = run.result()
    assert code == 0, err
    assert f"dropped: 3 without wav, {setup['no_bio'] + 1} without joined EDA/TEMP rows" in out
    assert "wrote 6 artifacts" in out
    assert sorted(set(after) - set(run.before)) == sorted(frames.artifacts())  # no temporary left over
    gt = pd.read_csv(few / "gt_aug.csv")
    assert len(gt) == len(setup["kept"]) - 4
    assert stripped not in set(gt["segment_id"]) and not set(removed) & set(gt["segment_id"])


def test_cli_fails_above_max_skip_share(setup):
    run = setup["runs"]["few_skipped_strict"]
    code, out, err, after = run.result()
    assert code == 1
    check_one_clean_line(err)
    line = visible_lines(err)[0]
    assert line.startswith(f"error: {setup['strict']}: {3 + setup['no_bio'] + 1} of ")
    assert "MAX_SKIP_SHARE=0.05" in line
    assert after == run.before
