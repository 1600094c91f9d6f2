"""Write the malformed raw-file corpus under tests/data/raw_bad/ (run once; output is committed).

``rows/`` must ingest with exactly the reject counts in ``rows/expected.json``; each other
folder holds one file the job must refuse with a message naming it.
"""

import gzip
import json
from pathlib import Path

from components.common.schema import RAW_COLUMNS

HERE = Path(__file__).parent / "raw_bad"
HEADER = "\t".join(RAW_COLUMNS)


def row(
    review_id: str,
    star: str = "5",
    body: str = "Great card, works fine.",
    date: str = "2015-08-31",
    helpful: str = "0",
    total: str = "1",
) -> str:
    return "\t".join(
        [
            "US",
            "12345678",
            review_id,
            "B00TESTPID",
            "123456789",
            "Test &amp; Product",
            "Gift Card",
            star,
            helpful,
            total,
            "N",
            "Y",
            "Headline",
            body,
            date,
        ]
    )


def main() -> None:
    rows = HERE / "rows"
    rows.mkdir(parents=True, exist_ok=True)
    valid = [
        row(f"RVALID{i:03d}", star=str(1 + i % 5), body=f"Body &#34;{i}&#34;<br />line two")
        for i in range(10)
    ]
    bad = {
        "field_count": [row("RFIELD001").rsplit("\t", 1)[0], row("RFIELD002") + "\textra"],
        "star_rating": [
            row("RSTAR001", star="6"),
            row("RSTAR002", star="five"),
            row("RSTAR003", star="0"),
            row("RSTAR004", star=""),
        ],
        "empty_body": [
            row("REMPTY001", body=""),
            row("REMPTY002", body="   "),
            row("REMPTY003", body="<br /><br />"),
        ],
        "review_date": [
            row("RDATE001", date="2015-02-30"),
            row("RDATE002", date="08/31/2015"),
            row("RDATE003", date=""),
        ],
        "votes": [
            row("RVOTE001", helpful="3", total="1"),
            row("RVOTE002", helpful="-1"),
            row("RVOTE003", total="many"),
        ],
        "duplicate_review_id": [
            row("RVALID001", body="second copy"),
            row("RVALID002", body="another copy"),
        ],
    }
    lines = [HEADER, *valid[:5]]
    for kind_rows in bad.values():
        lines.extend(kind_rows)
    lines.extend(valid[5:])
    (rows / "amazon_reviews_us_Bad_v1_00.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Non-UTF-8 bytes: two latin-1 encoded rows and one valid row, gzipped.
    latin = [
        row("RENC001", body="Caf\u00e9 cr\u00e8me"),
        row("RENC002", body="Na\u00efve \u00fcber"),
    ]
    payload = (HEADER + "\n").encode() + b"\n".join(r.encode("latin-1") for r in latin) + b"\n"
    payload += (row("RVALIDGZ1", star="4") + "\n").encode()
    (rows / "amazon_reviews_us_Latin1_v1_00.tsv.gz").write_bytes(gzip.compress(payload, mtime=0))
    (rows / "amazon_reviews_us_Empty_v1_00.tsv").write_bytes(b"")
    (rows / "amazon_reviews_us_HeaderOnly_v1_00.tsv").write_text(HEADER + "\n")
    (rows / "notes.txt").write_text("not a raw file: ignored by the ingest listing\n")
    expected = {
        "rows_read": len(lines) - 1 + len(latin) + 1,
        "rows_accepted": 11,
        "rejected": {"encoding": 2, **{k: len(v) for k, v in bad.items()}},
        "input_status": {
            "amazon_reviews_us_Bad_v1_00.tsv": "ok",
            "amazon_reviews_us_Latin1_v1_00.tsv.gz": "ok",
            "amazon_reviews_us_Empty_v1_00.tsv": "empty",
            "amazon_reviews_us_HeaderOnly_v1_00.tsv": "header_only",
        },
    }
    (rows / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    wrong = HERE / "wrong_header"
    wrong.mkdir(exist_ok=True)
    swapped = HEADER.replace("star_rating\thelpful_votes", "helpful_votes\tstar_rating")
    (wrong / "amazon_reviews_us_Swapped_v1_00.tsv").write_text(swapped + "\n" + row("RW1") + "\n")
    truncated = HERE / "truncated_gzip"
    truncated.mkdir(exist_ok=True)
    full = gzip.compress(("\n".join([HEADER] + valid * 50) + "\n").encode(), mtime=0)
    (truncated / "amazon_reviews_us_Cut_v1_00.tsv.gz").write_bytes(full[: len(full) // 2])


if __name__ == "__main__":
    main()
