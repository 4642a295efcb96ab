"""The `text` feature block: a segment's transcript as a fixed-size vector, built in (no download).

    character n-gram TF-IDF (scikit-learn TfidfVectorizer, config.TEXT: analyzer, ngram_range, min_df,
    max_features, sublinear_tf; rows l2-normalised)
    -> projection on the top `dim` right singular vectors of the training TF-IDF matrix (TruncatedSVD,
       random_state = config.TEXT["seed"]); when the training documents or n-grams are fewer than `dim`,
       the missing directions are zero rows, so the block always has `dim` values
    -> each row l2-normalised (a transcript without any known n-gram stays the zero vector)

It is fitted on the transcripts of the training sessions' segments only (one document per segment
with a readable transcript, frames.py), never on validation or test text. Every node carries its
segment's vector, so all nodes of a segment share it.

Saved as one `.npz` (no pickle: `np.load(allow_pickle=False)` reads it): `terms` (the n-gram of each
TF-IDF column), `idf`, `components` [dim, n-grams] and `settings` (JSON text). `transform` rebuilds the
vectorizer from them, so a saved block gives the same vectors as the fitted one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config, util

FILE = "text_block.npz"
NAME = "text"  # the block's name in feature_order / --modalities
VECTORIZER_KEYS = ("analyzer", "ngram_range", "min_df", "max_features", "sublinear_tf")


@dataclass
class TextBlock:
    terms: np.ndarray  # str [V]
    idf: np.ndarray  # float64 [V]
    components: np.ndarray  # float64 [dim, V]
    settings: dict[str, Any]
    explained_variance: float = 0.0  # share of the training TF-IDF variance the kept directions hold

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, documents: Sequence[str], settings: dict[str, Any] | None = None) -> TextBlock | None:
        """Fit on `documents` (training transcripts); None when they hold no n-gram at all."""
        from sklearn.decomposition import TruncatedSVD

        settings = util.merge_settings(config.TEXT, settings)
        vectorizer = _vectorizer(settings)
        try:
            matrix = vectorizer.fit_transform(list(documents))
        except ValueError:  # "empty vocabulary": no document has a word
            return None
        terms = np.array(vectorizer.get_feature_names_out(), dtype=str)
        dim = int(settings["dim"])
        kept = min(dim, matrix.shape[0], matrix.shape[1] - 1)
        components = np.zeros((dim, len(terms)))
        explained = 0.0
        if kept >= 1:
            svd = TruncatedSVD(n_components=kept, random_state=int(settings["seed"])).fit(matrix)
            components[:kept] = svd.components_
            explained = float(svd.explained_variance_ratio_.sum())
        return cls(terms, vectorizer.idf_.astype(np.float64), components, settings, explained)

    def transform(self, documents: Sequence[str]) -> np.ndarray:
        """float32 [n, dim]: one vector per document."""
        vectorizer = _vectorizer(self.settings, vocabulary=list(self.terms))
        vectorizer.idf_ = self.idf
        projected = np.asarray(vectorizer.transform(list(documents)) @ self.components.T)
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        return (projected / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """What the manifest and model.json record about the block (besides its file and sha256)."""
        kept = int((np.abs(self.components).sum(axis=1) > 0).sum())
        return {"dim": self.dim, "ngrams": len(self.terms), "directions": kept,
                "explained_variance": round(self.explained_variance, 6), "settings": self.settings,
                "method": "character n-gram TF-IDF (scikit-learn) -> truncated SVD -> l2 per segment"}

    def save(self, path: Path) -> None:
        with util.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, terms=self.terms, idf=self.idf, components=self.components,
                     settings=np.array(json.dumps(util.to_jsonable(self.settings))),
                     explained_variance=np.array(self.explained_variance))

    @classmethod
    def load(cls, path: Path) -> TextBlock:
        """A saved block; util.DataError naming the file when it is missing or not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["terms"], data["idf"], data["components"], json.loads(str(data["settings"])),
                           float(data["explained_variance"]))
        except (OSError, KeyError, ValueError) as err:
            raise util.DataError(f"not a text block written by STE_forward.py ({err})", path) from None


def _vectorizer(settings: dict[str, Any], vocabulary: list[str] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    kwargs = {k: settings[k] for k in VECTORIZER_KEYS}
    kwargs["ngram_range"] = tuple(kwargs["ngram_range"])
    if vocabulary is not None:
        kwargs.pop("min_df")
        kwargs.pop("max_features")
    return TfidfVectorizer(**kwargs, vocabulary=vocabulary, dtype=np.float64)


def documents(segments: Sequence[Any]) -> list[str]:
    """The transcripts of `segments` (dataset.Segment) that have one, in order: the fitting documents."""
    return [s.transcript for s in segments if s.transcript is not None]


def vectors(block: TextBlock, segments: Sequence[Any]) -> dict[str, np.ndarray]:
    """Segment ID -> its text vector; a segment without a readable transcript gets the empty
    transcript's vector (the zero vector), as the dataframe stage's report counts."""
    rows = block.transform([s.transcript or "" for s in segments])
    return {s.segment_id: row for s, row in zip(segments, rows, strict=True)}
