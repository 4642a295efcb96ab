"""The bio streams the encoder reads beside speech: one entry per signal in BIO_STREAMS, which every reader,
dataset, normalisation, model, extraction, online embedder and the synthetic generator iterate over.

An entry says where a signal lives in a KEMDy20 root and how the encoder treats it:

* `name`: the stream's key inside the project: its node-feature block and `--modalities` value (`eda`), its
  training-set normalisation (`eda_mean`, `eda_std`), its 1-D trunk and auxiliary head in the encoder
  (`bio.eda`, `bio_heads.eda`) and its loss column in the training log (`loss_eda`);
* `folder`: its folder in a KEMDy20 root (`EDA/SessionSS/SessSS_scriptCC_UserUUUG.csv`, rows
  `value,timestamp[,segment_id]` after two preamble lines: kemdy20.read_bio), which also names its
  dataframe-stage table (`EDA_aug.csv`) and that table's value column (`EDA_value`);
* `sd_floor`: the least participant sd, in the signal's units, about its sensor's resolution
  (participant.py: a flat recording is not divided by nearly zero).

Each stream gets a 1-D ResNet18 trunk (one input channel; EDA four with `eda_components`) and a head of its
own; its 512-d pooled vector joins the node embedding after the audio's, in the list's order. A node is a
timestamp where every stream has a row (frames.py joins them). A checkpoint records the streams it was
trained with (its normalisation), so an encoder trained before a stream was added still loads and embeds
with its own streams. Adding a stream: docs/kemdy20.md#adding-a-bio-stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

AUDIO = "audio"  # the speech stream's block, first in every node embedding
FUSED = "fused"  # the encoder's head over every stream
RESERVED = (AUDIO, FUSED, "contour", "bio")  # names the encoder gives to modules of its own


@dataclass(frozen=True)
class BioStream:
    """One bio signal (see the module docstring)."""

    name: str
    folder: str
    sd_floor: float

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower() or self.name in RESERVED:
            raise ValueError(f"bio stream name {self.name!r}: a lower-case identifier other than {RESERVED}")
        if self.sd_floor <= 0:
            raise ValueError(f"bio stream {self.name}: sd_floor must be positive, not {self.sd_floor}")

    @property
    def value_column(self) -> str:
        """Its value column in the dataframe stage's tables (`EDA_value`)."""
        return f"{self.folder}_value"

    @property
    def table_file(self) -> str:
        """Its dataframe-stage table under the root (`EDA_aug.csv`)."""
        return f"{self.folder}_aug.csv"


BIO_STREAMS: tuple[BioStream, ...] = (
    BioStream("eda", "EDA", 0.01),  # Empatica E4 electrodermal activity, µS (resolution 0.01 µS)
    BioStream("temp", "TEMP", 0.02),  # Empatica E4 wrist skin temperature, °C (resolution 0.02 °C)
)


def names() -> tuple[str, ...]:
    """The bio streams' names, in BIO_STREAMS order."""
    return tuple(stream.name for stream in BIO_STREAMS)


def folders() -> tuple[str, ...]:
    """The bio streams' KEMDy20 folders, in BIO_STREAMS order."""
    return tuple(stream.folder for stream in BIO_STREAMS)


def feature_order(bio: Iterable[str] | None = None) -> tuple[str, ...]:
    """The encoder's blocks of a node embedding: audio, then the bio streams `bio` (default BIO_STREAMS')."""
    return (AUDIO, *(names() if bio is None else bio))


def heads(bio: Iterable[str] | None = None) -> tuple[str, ...]:
    """The encoder's heads, in the order their losses are summed: one per block of feature_order, then fused."""
    return (*feature_order(bio), FUSED)


def stream(name: str) -> BioStream:
    """The entry of BIO_STREAMS named `name`; KeyError naming the list when there is none."""
    for entry in BIO_STREAMS:
        if entry.name == name:
            return entry
    raise KeyError(f"no bio stream {name!r} in encoder/core/streams.py BIO_STREAMS (it lists {', '.join(names())})")
