"""Transcripts and the text feature block: decoding (UTF-8 and cp949), transcription marks, the
dataframe stage's count of missing/undecodable transcripts, the synthetic transcripts' emotion words
(the other signals pinned by a digest that the words do not move), and the text block itself."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoder.core import config, frames, kemdy20, synthetic, text

# sha256 over (relative path, sha256 of content) of every .wav and .csv file (annotation, EDA, TEMP) of
# the tiny preset, seed 0, pinned for synthetic.GENERATOR_VERSION 2 (first pinned before transcripts carried
# emotion words, commit 069467f; the transcripts' stream never moves it). Depends on the pinned numpy/scipy
# producing the same floats; a new GENERATOR_VERSION pins it again.
TINY_SIGNALS_SHA256 = "392576684369627bcb97d560098b7d24f23f89fc44f817711c80a3a15df8eff6"


def signals_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".wav", ".csv")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@pytest.mark.parametrize("words", ["오늘 날씨가 정말 좋네요", "천", "징", "화가 나요", "안녕 ·", "음... 그래요?"])
def test_transcript_decodes_from_cp949_and_utf8(words: str) -> None:
    """`천` (C3 B5) and `징` (C2 A1) in cp949 are valid UTF-8 (`õ`, `¡`): the guard reads them as cp949."""
    for encoding in ("cp949", "utf-8"):
        try:
            data = words.encode(encoding)
        except UnicodeEncodeError:
            continue
        assert kemdy20.decode_transcript(data)[0] == words, encoding
    assert kemdy20.decode_transcript(b"\xef\xbb\xbf" + words.encode("utf-8")) == (words, "utf-8")


AMBIGUOUS_UTF8 = ["체크·카드", "밥·국", "물·불", "비·눈", "카페 é", "café", "25°C", "naïve"]


@pytest.mark.parametrize("words", ["오늘 25°C 정말", "카페·식당", "café 좋아요", "오늘·내일", "무게는 1.5µg", "안녕 ·",
                                   *AMBIGUOUS_UTF8])
def test_utf8_transcript_with_a_two_byte_character_reads_as_utf8(words: str) -> None:
    """UTF-8 Korean holding a U+0080-U+07FF character (`·`, `°`, `é`); AMBIGUOUS_UTF8 are valid cp949 too
    (`체크·카드` reads as cp949 `泥댄겕쨌移대뱶`), which the old rule took."""
    assert kemdy20.decode_transcript(words.encode("utf-8")) == (words, "utf-8")


@pytest.mark.parametrize("words", AMBIGUOUS_UTF8)
def test_ambiguous_utf8_cases_are_valid_cp949(words: str) -> None:
    words.encode("utf-8").decode("cp949")


def test_random_korean_words_with_a_two_byte_character_read_as_utf8() -> None:
    """One to four random syllables with `·`, `°`, `é`, `×` or `ü` somewhere among them, alone or after
    other words: the old rule read the 10% whose bytes are valid cp949 as cp949 gibberish."""
    rng = np.random.default_rng(1)
    syllables = [chr(c) for c in range(0xAC00, 0xD7A4)]
    valid_cp949 = 0
    for _ in range(3000):
        word = list(rng.choice(syllables, size=rng.integers(1, 5)))
        word.insert(rng.integers(0, len(word) + 1), str(rng.choice(list("·°é×ü"))))
        words = " ".join(["".join(rng.choice(syllables, size=2)) for _ in range(rng.integers(0, 3))] + ["".join(word)])
        data = words.encode("utf-8")
        try:
            data.decode("cp949")
            valid_cp949 += 1
        except UnicodeDecodeError:
            pass
        assert kemdy20.decode_transcript(data) == (words, "utf-8")
    assert valid_cp949 > 100  # the ambiguous case is exercised


@pytest.mark.parametrize(("data", "words"), [("°".encode(), "째"), ("é".encode(), "챕"), ("·".encode(), "쨌")])
def test_lone_two_byte_character_is_cp949(data: bytes, words: str) -> None:
    """A lone `°` (C2 B0) is byte for byte cp949 `째`: nothing tells the two apart, the dataset's encoding wins."""
    assert data == words.encode("cp949")
    assert kemdy20.decode_transcript(data) == (words, "cp949")


@pytest.mark.parametrize("words", ["천", "징", "천 징", "체 청", "째", "천!", "25째", "청 체 철"])
def test_cp949_korean_that_is_valid_utf8_stays_cp949(words: str) -> None:
    """cp949 `천` = C3 B5 is UTF-8 `õ`, `째` = C2 B0 is `°`: the cp949 reading holds the Hangul and wins."""
    data = words.encode("cp949")
    data.decode("utf-8")  # valid UTF-8 as well, else the case would test nothing
    assert kemdy20.decode_transcript(data) == (words, "cp949")


def test_undecodable_transcript() -> None:
    assert kemdy20.decode_transcript(b"\xff\xff\xfe\x80") == (None, None)


def test_random_korean_round_trips_in_both_encodings() -> None:
    rng = np.random.default_rng(0)
    syllables = [chr(c) for c in range(0xAC00, 0xD7A4)]
    for _ in range(3000):
        words = " ".join("".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(rng.integers(1, 4)))
        for encoding in ("cp949", "utf-8"):
            assert kemdy20.decode_transcript(words.encode(encoding)) == (words, encoding)


def test_transcription_marks_are_stripped_and_counted() -> None:
    plain, marks = kemdy20.clean_transcript("b/ (그래서)/(그래서) 어/ 나는 l/ 정말+ 좋아* (웃음) n/ o/ u/ 끝.")
    assert plain == "그래서 어 나는 정말 좋아 웃음 끝."
    assert marks == {"dual": 1, "noise": 5, "slash": 1, "plus": 1, "star": 1, "parenthesis": 2}
    no_marks = dict.fromkeys(kemdy20.TRANSCRIPT_MARKS, 0)
    assert kemdy20.clean_transcript("  그냥   말이에요  ") == ("그냥 말이에요", no_marks)


def test_frames_count_missing_and_undecodable_transcripts(tiny_raw: Path, tmp_path: Path) -> None:
    root = tmp_path / "KEMDy20"
    shutil.copytree(tiny_raw, root)
    txts = kemdy20.transcript_files(root)
    txts[0].unlink()
    txts[1].write_bytes(b"\xff\xff\xfe\x80")
    txts[2].write_bytes("l/ 정말+ 좋아요".encode())
    built = frames.build_frames(root)
    report = built.report["transcripts"]
    kept = set(built.gt["segment_id"])
    expected_missing = {p.stem: status for p, status in ((txts[0], "missing"), (txts[1], "undecodable"))
                        if p.stem in kept}
    assert report["segments_without_transcript"] == expected_missing
    assert report["missing"] + report["undecodable"] == len(expected_missing)
    assert report["read"] == len(built.gt) - len(expected_missing)
    assert report["encodings"]["utf-8"] == int(txts[2].stem in kept)
    gt = built.gt.set_index("segment_id")
    for segment_id, status in expected_missing.items():  # kept, empty, with the reason
        assert (gt.loc[segment_id, "transcript"], gt.loc[segment_id, "transcript_status"]) == ("", status)
    if txts[2].stem in kept:
        assert gt.loc[txts[2].stem, "transcript"] == "정말 좋아요"
        assert report["marks_stripped"]["noise"] == 1
    assert "transcripts of kept segments" in frames.format_report(built)
    frames.write_frames(built, root)
    back = frames.load_frames(root).gt
    assert list(back["transcript"]) == list(built.gt["transcript"])
    assert "transcript" in pd.read_csv(root / "gt_aug.csv").columns


def test_synthetic_signals_unchanged_by_the_emotion_words(tiny_raw: Path) -> None:
    assert signals_digest(tiny_raw) == TINY_SIGNALS_SHA256


def test_synthetic_transcripts_carry_the_emotion_weakly(tiny_root: Path) -> None:
    gt = frames.load_frames(tiny_root).gt
    assert (gt["transcript_status"] == "ok").all()
    typical = [{w for w in synthetic.EMOTION_WORDS[t]} for t in gt["target"]]
    words = [t.split() for t in gt["transcript"]]
    share = sum(sum(w in typ for w in ws) for ws, typ in zip(words, typical, strict=True)) / sum(map(len, words))
    # about TEXT_EMOTION_SHARE (0.05), plus stray emotion words and filler words that happen to be typical
    assert 0.03 < share < 0.15
    assert all(3 <= len(ws) <= 8 for ws in words)


def test_text_block_fixed_size_saved_and_reloaded(tmp_path: Path) -> None:
    docs = ["오늘 날씨가 정말 좋네요", "화가 나요 진짜", "슬퍼요 눈물이", "무서워요 떨려요", "기뻐요 행복해요"]
    block = text.TextBlock.fit(docs, {"dim": 8, "min_df": 1})
    vectors = block.transform([*docs, "", "처음 보는 말"])
    assert vectors.shape == (7, 8) and vectors.dtype == np.float32
    assert not vectors[5].any()  # the empty transcript: the zero vector
    np.testing.assert_allclose(np.linalg.norm(vectors[:5], axis=1), 1, atol=1e-6)
    assert block.describe()["directions"] <= len(docs)  # fewer documents than dim: zero-padded
    block.save(tmp_path / text.FILE)
    again = text.TextBlock.load(tmp_path / text.FILE)
    np.testing.assert_array_equal(again.transform(docs), vectors[:5])
    assert text.TextBlock.fit(["", "  "]) is None
    assert config.TEXT["dim"] == text.TextBlock.fit(docs * 20, {"min_df": 1}).dim
