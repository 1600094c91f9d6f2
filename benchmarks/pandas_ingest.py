"""The book's single-process ingest path, as the baseline: pandas + scikit-learn.

``python -m benchmarks.pandas_ingest --input DIR --output DIR``: read every raw TSV with quoting
disabled, drop malformed rows, clean the body, label, balance by groupby-sample, stratified
90/5/5 split with scikit-learn, write Parquet.
"""

from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from components.common.schema import pandas_read_options

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True, help="directory of raw TSV(.gz) files")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    args = parser.parse_args(argv)
    options = pandas_read_options() | {"on_bad_lines": "skip", "encoding_errors": "replace"}
    files = sorted(Path(args.input).glob("*.tsv*"))
    df = pd.concat([pd.read_csv(f, **options) for f in files], ignore_index=True)
    df = df.dropna(subset=["star_rating", "review_body"])
    df = df[df["star_rating"].between(1, 5)].drop_duplicates("review_id")
    body = df["review_body"].str.replace(_BR, " ", regex=True).map(html.unescape)
    df = df.assign(review_body=body.str.replace(r"\s+", " ", regex=True).str.strip())
    df["label"] = df["star_rating"].astype(int) - 1
    smallest = df["label"].value_counts().min()
    df = df.groupby("label", group_keys=False).sample(n=smallest, random_state=args.seed)
    train, holdout = train_test_split(
        df, test_size=0.1, stratify=df["label"], random_state=args.seed
    )
    validation, test = train_test_split(
        holdout, test_size=0.5, stratify=holdout["label"], random_state=args.seed
    )
    out = Path(args.output)
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        (out / name).mkdir(parents=True, exist_ok=True)
        part.to_parquet(out / name / "part-0.parquet", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
