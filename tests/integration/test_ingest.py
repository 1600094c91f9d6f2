"""The ingest job on real Spark: transforms, the bad-input corpus, real samples, and S3."""

import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from components.common.errors import InvalidInput
from components.common.schema import RAW_COLUMNS
from components.ingest import udfs
from components.ingest.config import IngestConfig
from components.ingest.job import main, run_ingest
from components.ingest.spark import build_spark_conf, create_session
from components.ingest.transforms import classify, clean_text_column, mark_duplicates, parse_lines
from pipelines.generate import GeneratorConfig, generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BAD = Path(__file__).resolve().parents[1] / "data" / "raw_bad"


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    """A session with the job's UDF jar, as the job starts it (compiled here if need be)."""
    jar = udfs.find_jar()
    assert jar is not None, "the ingest UDF did not compile (is a JDK installed?)"
    session = create_session(build_spark_conf("local[2]", jars=[str(jar)]))
    assert udfs.register(session), "the ingest UDF is not on this session's classpath"
    return session


def _splits(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / name) for name in ("train", "validation", "test")}


def test_classify_names_the_first_failing_rule(spark):
    good = [
        "US",
        "1",
        "R1",
        "P",
        "2",
        "T",
        "Books",
        "4",
        "1",
        "2",
        "N",
        "Y",
        "H",
        "fine",
        "2015-01-02",
    ]

    def line(**changes) -> str:
        fields = dict(zip(RAW_COLUMNS, good, strict=True)) | changes
        return "\t".join(fields.values())

    cases = [
        (line(), None),
        (line(star_rating="9", review_body=""), "star_rating"),  # first rule wins
        (line(review_id="R2", review_body="<br />"), "empty_body"),
        (line(review_id="R3", review_date="2015-13-01"), "review_date"),
        (line(review_id="R4", total_votes="0"), "votes"),
        ("only\tthree\tfields", "field_count"),
        (line(), "duplicate_review_id"),
    ]
    rows = [(i, "f", text) for i, (text, _) in enumerate(cases)]
    df = spark.createDataFrame(rows, "_row_id long, source_file string, value string")
    got = {r["_row_id"]: r["reason"] for r in mark_duplicates(classify(parse_lines(df))).collect()}
    assert [got[i] for i in range(len(cases))] == [reason for _, reason in cases]


@pytest.fixture(scope="module")
def generated_out(tmp_path_factory) -> tuple[Path, dict]:
    raw = tmp_path_factory.mktemp("raw")
    generate(GeneratorConfig(rows=6000, seed=11), raw)
    out = tmp_path_factory.mktemp("out")
    # the book's options: undersampling, 90/5/5, every row (no dedupe)
    book = dict(balance=True, split=(0.9, 0.05, 0.05), dedupe=False)
    stats = run_ingest(IngestConfig(input=str(raw), output=str(out / "a"), seed=42, **book))
    again = run_ingest(IngestConfig(input=str(raw), output=str(out / "b"), seed=42, **book))
    other = run_ingest(IngestConfig(input=str(raw), output=str(out / "c"), seed=7, **book))
    return out, {"a": stats, "b": again, "c": other}


def test_balance_and_split_invariants(generated_out):
    out, stats = generated_out
    splits = _splits(out / "a")
    smallest = min(stats["a"].classes_before.values())
    assert stats["a"].classes_after == {str(s): smallest for s in range(1, 6)}
    ids = [set(df["review_id"]) for df in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for name, fraction in (("train", 0.9), ("validation", 0.05), ("test", 0.05)):
        per_class = splits[name]["label"].value_counts()
        assert set(per_class.index) == {0, 1, 2, 3, 4}
        assert (abs(per_class - smallest * fraction) <= 1).all(), (name, per_class)
    assert (splits["train"]["label"] == splits["train"]["star_rating"] - 1).all()


def test_same_seed_same_splits_other_seed_other_splits(generated_out):
    out, _ = generated_out
    a, b, c = (_splits(out / k)["test"]["review_id"] for k in "abc")
    assert set(a) == set(b)
    assert set(a) != set(c)


def test_stats_has_the_interface_keys(generated_out):
    out, _ = generated_out
    stats = json.loads((out / "a" / "stats.json").read_text())
    for key in ("rows_read", "rows_accepted", "rejected", "classes_before", "classes_after",
                "splits", "label_map", "inputs"):  # fmt: skip
        assert key in stats
    assert stats["rows_read"] == stats["rows_accepted"] + sum(stats["rejected"].values())
    assert len(stats["inputs"]) == 6 and all(i["etag"] and i["size"] > 0 for i in stats["inputs"])
    assert stats["label_map"]["id2label"]["4"] == "5"


def test_bad_input_corpus_gives_exact_reject_counts(tmp_path):
    expected = json.loads((BAD / "rows" / "expected.json").read_text())
    stats = run_ingest(IngestConfig(input=str(BAD / "rows"), output=str(tmp_path), balance=False))
    assert stats.rows_read == expected["rows_read"]
    assert stats.rows_accepted == expected["rows_accepted"]
    assert stats.rejected == expected["rejected"]
    assert {Path(k).name: v for k, v in stats.input_status.items()} == expected["input_status"]
    rejects = pd.read_parquet(tmp_path / "rejects")
    assert rejects["reason"].value_counts().to_dict() == {
        k: v for k, v in expected["rejected"].items() if v
    }
    assert rejects["raw_line"].str.len().gt(0).all() and rejects["source_file"].notna().all()
    # duplicates get their raw line from a second read: each is its own row's line
    dups = rejects[rejects["reason"] == "duplicate_review_id"]
    assert len(dups) == 2 and (dups["raw_line"].str.split("\t").str[2] == dups["review_id"]).all()
    assert dups["source_file"].str.endswith("amazon_reviews_us_Bad_v1_00.tsv").all()
    kept = pd.concat(_splits(tmp_path).values())
    assert "RVALID001" in set(kept["review_id"])  # the first copy of a duplicate is kept
    assert not kept["review_body"].str.contains("<br", regex=False).any()
    assert kept["review_body"].str.contains('"', regex=False).any()  # &#34; decoded


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("wrong_header", r"amazon_reviews_us_Swapped_v1_00.tsv: wrong header"),
        ("truncated_gzip", r"amazon_reviews_us_Cut_v1_00.tsv.gz: unreadable gzip"),
    ],
)
def test_unreadable_files_fail_with_a_message_naming_the_file(tmp_path, folder, message):
    with pytest.raises(InvalidInput, match=message):
        run_ingest(IngestConfig(input=str(BAD / folder), output=str(tmp_path)))


def test_main_exits_non_zero_with_one_line(tmp_path, capsys):
    code = main(["--input", str(BAD / "truncated_gzip"), "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("ingest failed: ") and "Cut_v1_00.tsv.gz" in err[-1]


def test_real_gift_card_sample_has_zero_rejects(reviews_dir, tmp_path):
    path = reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.sample.tsv"
    book = dict(balance=True, split=(0.9, 0.05, 0.05), dedupe=False)
    stats = run_ingest(IngestConfig(input=str(path), output=str(tmp_path), **book))
    assert stats.rows_read == 1452 and stats.rows_accepted == 1452
    assert sum(stats.rejected.values()) == 0
    assert stats.classes_before == {"1": 54, "2": 14, "3": 33, "4": 85, "5": 1266}
    assert stats.classes_after == {str(s): 14 for s in range(1, 6)}
    assert stats.splits == {"train": 60, "validation": 5, "test": 5}


def test_sentiment_labels_on_real_mobile_electronics(reviews_dir, tmp_path):
    path = reviews_dir / "amazon_reviews_us_Mobile_Electronics.sample.tsv"
    stats = run_ingest(
        IngestConfig(input=str(path), output=str(tmp_path), label_mode="sentiment", balance=False)
    )
    assert stats.rows_accepted == 85 and sum(stats.rejected.values()) == 0
    assert set(stats.classes_before) == {"negative", "neutral", "positive"}
    train = pd.read_parquet(tmp_path / "train")
    expected = train["star_rating"].map({1: 0, 2: 0, 3: 1, 4: 2, 5: 2})
    assert (train["label"] == expected).all()


def test_s3_in_and_out_through_the_local_s3_server(stack, settings, storage, tmp_path):
    raw = tmp_path / "raw"
    manifest = generate(GeneratorConfig(rows=3000, seed=5, malformed_per_kind=2), raw)
    raw_uri = f"s3://{settings.data_bucket}/tests/ingest/raw/"
    out_uri = f"s3://{settings.data_bucket}/tests/ingest/run-1/"
    storage.upload_dir(raw, raw_uri)
    local_copy = tmp_path / "local-copy"
    stats = run_ingest(IngestConfig(input=raw_uri, output=out_uri), settings, str(local_copy))
    assert stats.read_path == "staged"  # the pip Spark has no S3A connector
    assert stats.rejected == {kind: 2 for kind in manifest.malformed}
    assert all(i["uri"].startswith(raw_uri) and i["etag"] for i in stats.inputs)
    keys = [o.key for o in storage.list_objects(out_uri)]
    for name in ("train", "validation", "test", "rejects"):
        assert any(k.startswith(f"tests/ingest/run-1/{name}/") and k.endswith(".parquet")
                   for k in keys), name  # fmt: skip
    remote = storage.get_json(out_uri + "stats.json")
    assert remote["splits"] == stats.splits and remote["data_version"] == stats.data_version
    # Spark wrote into the caller's local copy, and exactly that was uploaded (no re-download)
    local = sorted(str(p.relative_to(local_copy)) for p in local_copy.rglob("*.parquet"))
    prefix = "tests/ingest/run-1/"
    assert local and local == sorted(k[len(prefix) :] for k in keys if k.endswith(".parquet"))


def test_jvm_cleaning_matches_the_python_reference(spark):
    from components.common.text import clean_text
    from components.ingest.transforms import clean_text_column

    samples = [
        "Great &#34;gift&#34; card", "a<br />b<BR/>c<br>d", "x &amp; y &lt;br /&gt; z",
        "tabs\tand\u0007bells\n\nand   spaces ", "zero\u200bwidth", "caf&eacute; &#8217;s &#x27;",
        "\u3000wide\u3000space\u00a0nbsp", "plain text",
    ]  # fmt: skip
    df = spark.createDataFrame([(s,) for s in samples], "t string")
    got = [r[0] for r in df.select(clean_text_column(df["t"])).collect()]
    assert got == [clean_text(s) for s in samples]


# Each branch of the UDF's hand-written scan, and what the regex version treats specially.
UDF_CASES = [
    "Great &#34;gift&#34; card", "a<br />b<BR/>c<br>d<Br\t/>e", "<br", "<b>bold</b> <br x>",
    "<br / >", "x<br>", "<br>", "<<br>>", "x &amp; y &lt;br /&gt; z", "&amp;lt;br&amp;gt;",
    "AT&T & co", "&unknown; &#; &#x; &#65 &#65;", "caf&eacute; &#8217;s &#x27; &nbsp;&nbsp;x",
    "&amp;amp; &&#34;; &#34&#34; &#12a; &#x1F44D; &#0000000065; &#xD83D;&#xDC4D; &#0; &;",
    "&AMP; &Eacute;&eacute; &thetasym; &frac12;&sup2; a&b;c&d &#34;&#34;&#34; end&",
    "tabs\tand\u0007bells\n\nand   spaces ", "zero\u200bwidth\ufeffbom", "\u0085nel\u2028ls",
    "\u3000wide\u3000space\u00a0nbsp\u202f\u205f\u1680", "\x00\x1f\x7f\x9f", "   ", "",
    "plain text", "emoji \U0001F44D  ok", "single spaces only", " lead", "trail ", None,
]  # fmt: skip


def test_the_jvm_udf_cleans_exactly_like_the_regex_expression(spark):
    df = spark.createDataFrame([(s,) for s in UDF_CASES], "t string")
    both = df.select(udfs.clean_text_udf(df["t"]).alias("udf"), clean_text_column(df["t"]))
    got = [(r[0], r[1]) for r in both.collect()]
    assert [u for u, _ in got] == [e for _, e in got]
    assert got[1][0] == "a b c d e" and got[3][0] == "<b>bold</b> <br x>"


def test_the_regex_fallback_gives_the_same_output_as_the_udf(tmp_path, monkeypatch):
    config = {"input": str(BAD / "rows"), "balance": False, "text_fields": ("review_body",)}
    fast = run_ingest(IngestConfig(output=str(tmp_path / "udf"), **config))
    monkeypatch.setattr(udfs, "find_jar", lambda: None)  # as on a machine without a JDK
    slow = run_ingest(IngestConfig(output=str(tmp_path / "regex"), **config))
    assert (fast.text_cleaner, slow.text_cleaner) == ("jvm-udf", "spark-regex")
    assert fast.rejected == slow.rejected and fast.splits == slow.splits
    for name in ("train", "validation", "test", "rejects"):
        a, b = (pd.read_parquet(tmp_path / run / name) for run in ("udf", "regex"))
        key = "row_id" if name == "rejects" else "review_id"
        pd.testing.assert_frame_equal(
            a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        )


def test_split_cuts_rank_only_keys_below_the_bound_and_stay_exact(spark, monkeypatch):
    from components.ingest import transforms as tr

    counts = {0: 3000, 1: 200, 2: 40}
    rows = [(label, f"review {label} {i}") for label, n in counts.items() for i in range(n)]
    df = spark.createDataFrame(rows, "label int, review_body string")
    keys = df.select("label", tr._order_key(5).alias("k")).collect()
    by_label = {label: sorted(r["k"] for r in keys if r["label"] == label) for label in counts}

    def expected(balance: bool) -> dict:
        out = {}
        for label, sorted_keys in by_label.items():
            n = min(counts.values()) if balance else counts[label]
            train_end, val_end = tr.split_bounds(n, (0.8, 0.1, 0.1))
            out[label] = tuple(sorted_keys[r - 1] for r in (train_end, val_end, n))
        return out

    for balance in (True, False):
        assert tr.split_cuts(df, counts, (0.8, 0.1, 0.1), 5, balance) == expected(balance)
    bound = tr.key_bound(40, 3000)  # balancing keeps 40 of 3000: a few hundred are ranked
    assert 40 <= sum(k <= bound for k in by_label[0]) < 600 and tr.key_bound(40, 40) is None
    # a bound that falls short: those classes are ranked in full, with the same result
    monkeypatch.setattr(tr, "key_bound", lambda n, count: tr._KEY_MIN + 1 if n < count else None)
    assert tr.split_cuts(df, counts, (0.8, 0.1, 0.1), 5, True) == expected(True)


def test_rerun_into_the_same_s3_prefix_replaces_the_output(stack, settings, storage, tmp_path):
    raw = tmp_path / "raw"
    generate(GeneratorConfig(rows=2000, seed=9), raw)
    raw_uri = f"s3://{settings.data_bucket}/tests/rerun/raw/"
    out_uri = f"s3://{settings.data_bucket}/tests/rerun/out/"
    storage.upload_dir(raw, raw_uri)
    first = run_ingest(IngestConfig(input=raw_uri, output=out_uri), settings)
    second = run_ingest(IngestConfig(input=raw_uri, output=out_uri), settings)
    assert first.splits == second.splits
    local = tmp_path / "downloaded"
    storage.download_prefix(out_uri + "train/", local)
    rows = pd.read_parquet(local)
    assert len(rows) == second.splits["train"] and rows["review_id"].is_unique


def test_a_full_staging_disk_is_one_line_naming_the_directory(stack, settings, storage, tmp_path):
    """TMPDIR on a real 1 MiB tmpfs (bubblewrap) and 2 MB of S3 inputs: one line, no traceback."""
    import os
    import subprocess
    import sys

    from tests.cluster.pods import bwrap

    raw = tmp_path / "raw"
    raw.mkdir()
    lines = ["\t".join(RAW_COLUMNS)] + [
        "\t".join(["US", str(i), f"R{i}", "P", "1", "Title", "Electronics", "5", "0", "0", "N",
                   "Y", "headline", "x" * 400, "2015-08-31"]) for i in range(5000)
    ]  # fmt: skip
    (raw / "part.tsv").write_text("\n".join(lines) + "\n")
    raw_uri = f"s3://{settings.data_bucket}/tests/ingest/too-big/"
    storage.upload_dir(raw, raw_uri)
    argv = [bwrap(), "--dev-bind", "/", "/", "--size", str(1 << 20), "--tmpfs", "/run/staging",
            "--setenv", "TMPDIR", "/run/staging", sys.executable, "-m", "components.ingest",
            "--input", raw_uri, "--output", f"s3://{settings.data_bucket}/tests/ingest/nope/"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=os.environ,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("ingest failed")]
    assert "no space left in /run/staging/ingest-" in line and "MB free" in line, line
    assert "set TMPDIR" in line


def test_dedupe_keeps_each_text_once_with_its_majority_label(spark):
    from components.ingest import transforms as tr

    rows = [  # (_row_id, review_body, label)
        (0, "Great!", 4), (1, "great", 4), (2, "GREAT", 0),  # majority 4, first row 0
        (3, "Love it", 3), (4, "love it.", 4),  # a tie: the lower label, its first row
        (5, "Broke after a day", 0),  # unique
        (6, "ok", 2), (7, "Ok", 1), (8, "OK!", 1),  # majority 1: row 7 (first with label 1)
        # nothing left once normalized: each distinct text stays a text of its own
        (9, "\U0001F44D", 4), (10, "\U0001F44E", 0), (11, "!!!", 4),
    ]  # fmt: skip
    df = spark.createDataFrame(rows, "_row_id long, review_body string, label int")
    kept = {r["_row_id"]: r["label"] for r in tr.dedupe_texts(df).collect()}
    assert kept == {0: 4, 3: 3, 5: 0, 7: 1, 9: 4, 10: 0, 11: 4}
    assert tr.dedupe_counts(df) == {"repeated_texts": 3, "rows_dropped": 5,
                                    "conflicting_texts": 3, "conflicting_rows": 8}  # fmt: skip


def test_real_gift_card_defaults_dedupe_before_a_split_by_text(reviews_dir, tmp_path):
    path = reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.sample.tsv"
    stats = run_ingest(IngestConfig(input=str(path), output=str(tmp_path)))
    dups = stats.text_duplicates
    assert dups["rows_dropped"] > 0 and dups["conflicting_texts"] > 0 and dups["policy"]
    kept = sum(stats.splits.values())
    assert kept == stats.rows_accepted - dups["rows_dropped"]
    splits = _splits(tmp_path)
    texts = [set(df["review_body"].str.lower().str.replace(r"[\W_]+", " ", regex=True)
                 .str.strip()) for df in splits.values()]  # fmt: skip
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert abs(stats.splits["test"] - 0.1 * kept) <= 5  # 80/10/10, stratified
