"""The book's Deequ constraints as named checks on the splits (pure pandas)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class CheckOutcome:
    """One named check: did it pass, the figure it measured, and against what."""

    name: str
    passed: bool
    value: float
    threshold: float | str
    detail: str
    source: str = "constraint"
    seconds: float = 0.0
    advice: str = ""  # what to change when it failed (components/validate/advice.py)

    def to_dict(self) -> dict:
        return asdict(self)


def _outcome(name: str, bad: int, total: int, detail: str, limit: float = 0.0) -> CheckOutcome:
    share = bad / total if total else 0.0
    return CheckOutcome(name, share <= limit, share, limit, f"{detail}: {bad} of {total} rows")


def deequ_constraints(
    splits: dict[str, pd.DataFrame], marketplaces: tuple[str, ...], min_rows: int
) -> list[CheckOutcome]:
    """The Deequ constraints of the book, as named checks.

    review_id complete and unique (across all splits), star_rating in 1..5, marketplace in the
    allowed set, helpful_votes >= 0, total_votes >= helpful_votes, and a minimum row count.
    """
    out: list[CheckOutcome] = []
    everything = pd.concat(splits.values(), keys=list(splits), names=["split"]).reset_index(0)
    n = len(everything)
    out.append(
        _outcome(
            "review_id_complete",
            int(everything["review_id"].isna().sum()),
            n,
            "rows without review_id",
        )
    )
    out.append(
        _outcome(
            "review_id_unique",
            int(everything["review_id"].duplicated().sum()),
            n,
            "rows repeating an earlier review_id",
        )
    )
    stars = pd.to_numeric(everything["star_rating"], errors="coerce")
    out.append(
        _outcome(
            "star_rating_in_range",
            int((~stars.between(1, 5)).sum()),
            n,
            "rows with star_rating outside 1..5",
        )
    )
    out.append(
        _outcome(
            "marketplace_in_set",
            int((~everything["marketplace"].isin(marketplaces)).sum()),
            n,
            f"rows with marketplace not in {list(marketplaces)}",
        )
    )
    out.append(
        _outcome(
            "helpful_votes_non_negative",
            int((everything["helpful_votes"] < 0).sum()),
            n,
            "rows with helpful_votes < 0",
        )
    )
    out.append(
        _outcome(
            "total_votes_ge_helpful_votes",
            int((everything["total_votes"] < everything["helpful_votes"]).sum()),
            n,
            "rows with total_votes < helpful_votes",
        )
    )
    for name, df in splits.items():
        need = min_rows if name == "train" else max(1, min_rows // 20)
        out.append(
            CheckOutcome(
                f"min_row_count_{name}",
                len(df) >= need,
                float(len(df)),
                need,
                f"{name} has {len(df)} rows; at least {need} required",
            )
        )
    return out


def leakage_by_id(splits: dict[str, pd.DataFrame]) -> CheckOutcome:
    """The same review (review_id) in two splits: strict, any overlap fails."""
    names = list(splits)
    overlaps = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = set(splits[a]["review_id"]) & set(splits[b]["review_id"])
            if common:
                overlaps.append(f"{a}/{b}: {len(common)}")
    total = sum(len(df) for df in splits.values())
    bad = sum(int(x.split(": ")[1]) for x in overlaps)
    detail = "review_ids in two splits" + (f" ({', '.join(overlaps)})" if overlaps else "")
    return _outcome("train_test_leakage_review_id", bad, total, detail)


def short_texts(splits: dict[str, pd.DataFrame], min_chars: int, max_share: float) -> CheckOutcome:
    """Empty or very short texts (after cleaning) across all splits."""
    texts = pd.concat([df["review_body"] for df in splits.values()])
    bad = int((texts.fillna("").str.strip().str.len() < min_chars).sum())
    return _outcome(
        "empty_or_short_texts",
        bad,
        len(texts),
        f"texts shorter than {min_chars} characters",
        max_share,
    )
