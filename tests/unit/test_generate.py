import gzip
import itertools
from pathlib import Path

import pandas as pd
import pytest

from components.common.schema import RAW_COLUMNS, pandas_read_options
from pipelines.generate import (
    MALFORMED_KINDS,
    PHRASES,
    GeneratorConfig,
    generate,
    text_rating_of,
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("gen")
    return out, generate(GeneratorConfig(rows=30_000, seed=7, label_noise=0.15), out)


def _frame(out: Path) -> pd.DataFrame:
    files = sorted(out.glob("*.tsv.gz"))
    return pd.concat([pd.read_csv(f, **pandas_read_options()) for f in files], ignore_index=True)


def test_phrases_identify_exactly_one_level():
    for (a, pa), (b, pb) in itertools.permutations(PHRASES.items(), 2):
        for x, y in itertools.product(pa, pb):
            assert x.lower() not in y.lower(), f"{x!r} (level {a}) is inside {y!r} (level {b})"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def body(seed: int, name: str) -> bytes:
        generate(GeneratorConfig(rows=2000, seed=seed), tmp_path / name)
        return b"".join(
            gzip.decompress(p.read_bytes()) for p in sorted((tmp_path / name).glob("*.gz"))
        )

    assert body(1, "a") == body(1, "b")
    assert body(1, "a") != body(2, "c")


def test_files_match_the_raw_schema_exactly(generated):
    out, manifest = generated
    files = sorted(out.glob("*.tsv.gz"))
    assert [f.name for f in files] == sorted(manifest.files)
    assert all(
        f.name.startswith("amazon_reviews_us_") and f.name.endswith("_v1_00.tsv.gz") for f in files
    )
    for f in files:
        lines = gzip.decompress(f.read_bytes()).decode().splitlines()
        assert lines[0].split("\t") == list(RAW_COLUMNS)
        assert {len(line.split("\t")) for line in lines[1:]} == {15}
    df = _frame(out)
    assert len(df) == manifest.rows_valid == 30_000
    assert df["review_id"].is_unique
    assert df["star_rating"].between(1, 5).all()
    assert (df["helpful_votes"] >= 0).all() and (df["helpful_votes"] <= df["total_votes"]).all()
    assert pd.to_datetime(df["review_date"], format="%Y-%m-%d").notna().all()
    assert set(df["vine"]) <= {"Y", "N"} and set(df["verified_purchase"]) <= {"Y", "N"}


def test_marginals_lengths_and_html_look_like_the_real_data(generated):
    df = _frame(generated[0])
    five_star = (df["star_rating"] == 5).mean()
    assert 0.59 < five_star < 0.65
    words = df["review_body"].str.replace("<br />", " ").str.split().str.len()
    assert 20 <= words.median() <= 32
    assert df["review_body"].str.contains("<br />", regex=False).mean() > 0.1
    assert df["review_body"].str.contains("&#34;", regex=False).any()
    assert df["product_category"].nunique() == 6


def test_label_noise_is_what_was_asked(generated):
    out, manifest = generated
    df = _frame(out)
    text = df["review_body"].map(text_rating_of)
    assert text.notna().all(), "every body must carry exactly one sentiment level"
    noise = float((text.astype(int) != df["star_rating"].astype(int)).mean())
    assert noise == pytest.approx(0.15, abs=0.01)
    assert manifest.label_noise_realized == pytest.approx(noise, abs=1e-9)
    assert manifest.max_accuracy == pytest.approx(1 - noise, abs=1e-9)


def test_malformed_rows_are_injected_per_kind(tmp_path):
    manifest = generate(GeneratorConfig(rows=500, seed=3, malformed_per_kind=4), tmp_path)
    assert manifest.malformed == {kind: 4 for kind in MALFORMED_KINDS}
    raw = b"".join(gzip.decompress(p.read_bytes()) for p in tmp_path.glob("*.gz"))
    lines = raw.split(b"\n")[1:]
    assert sum(1 for line in lines if line and line.count(b"\t") == 13) >= 4  # field_count
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert sum(manifest.files.values()) == 500 + 4 * len(MALFORMED_KINDS)


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="label_noise"):
        GeneratorConfig(label_noise=0.9)
    with pytest.raises(ValueError, match="unknown categories"):
        GeneratorConfig(categories=("Cars",))
