"""The raw Amazon Customer Reviews schema and the label maps derived from star ratings.

The raw files are TSV with a header row, tab separated and written without quoting, so a
reader must disable quote handling: review bodies contain bare double quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from components.common.errors import ConfigurationError

# (name, type) in file order; types are the logical types every reader maps to its own.
RAW_SCHEMA: tuple[tuple[str, str], ...] = (
    ("marketplace", "string"),
    ("customer_id", "string"),
    ("review_id", "string"),
    ("product_id", "string"),
    ("product_parent", "string"),
    ("product_title", "string"),
    ("product_category", "string"),
    ("star_rating", "int"),
    ("helpful_votes", "int"),
    ("total_votes", "int"),
    ("vine", "string"),
    ("verified_purchase", "string"),
    ("review_headline", "string"),
    ("review_body", "string"),
    ("review_date", "date"),
)
RAW_COLUMNS: tuple[str, ...] = tuple(name for name, _ in RAW_SCHEMA)
RAW_SEPARATOR = "\t"
RAW_FILE_PATTERN = "amazon_reviews_us_{category}_v1_00.tsv.gz"
STAR_RATINGS: tuple[int, ...] = (1, 2, 3, 4, 5)


class LabelMode(str, Enum):
    """How star ratings become class labels."""

    STAR_RATING = "star_rating"
    SENTIMENT = "sentiment"

    @classmethod
    def parse(cls, value: str | LabelMode) -> LabelMode:
        """Return the mode named by ``value`` or raise with the allowed values."""
        try:
            return cls(value)
        except ValueError as e:
            allowed = ", ".join(m.value for m in cls)
            raise ConfigurationError(f"label_mode {value!r} is not one of: {allowed}") from e


@dataclass(frozen=True)
class LabelMap:
    """Class ids, their names and the star ratings each one covers.

    It travels with the data (ingest stats, model config) so that no later stage hard-codes it.
    """

    mode: LabelMode
    id2label: dict[int, str]
    star_to_label: dict[int, int] = field(repr=False)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def label_for_star(self, star_rating: int) -> int:
        """Return the class id of a star rating in 1..5."""
        try:
            return self.star_to_label[star_rating]
        except KeyError as e:
            raise ConfigurationError(f"star_rating {star_rating!r} is not in 1..5") from e

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "id2label": {str(i): name for i, name in self.id2label.items()},
            "star_to_label": {str(s): i for s, i in self.star_to_label.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> LabelMap:
        return cls(
            mode=LabelMode.parse(data["mode"]),
            id2label={int(i): str(name) for i, name in data["id2label"].items()},
            star_to_label={int(s): int(i) for s, i in data["star_to_label"].items()},
        )


def label_map_for(mode: str | LabelMode) -> LabelMap:
    """Return the label map of a label mode: 5 star classes, or 3 sentiment classes."""
    mode = LabelMode.parse(mode)
    if mode is LabelMode.STAR_RATING:
        return LabelMap(
            mode=mode,
            id2label={s - 1: str(s) for s in STAR_RATINGS},
            star_to_label={s: s - 1 for s in STAR_RATINGS},
        )
    return LabelMap(
        mode=mode,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        star_to_label={1: 0, 2: 0, 3: 1, 4: 2, 5: 2},
    )


def pandas_read_options() -> dict:
    """``pandas.read_csv`` options that read the raw files as they are written (no quoting)."""
    import csv

    dtypes = {"string": "string", "int": "Int64", "date": "string"}
    return {
        "sep": RAW_SEPARATOR,
        "quoting": csv.QUOTE_NONE,
        "header": 0,
        "names": list(RAW_COLUMNS),
        "dtype": {name: dtypes[kind] for name, kind in RAW_SCHEMA},
        "keep_default_na": False,
        "skip_blank_lines": True,
    }
