import pandas as pd
import pytest

from components.common.errors import ConfigurationError
from components.common.schema import (
    RAW_COLUMNS,
    LabelMap,
    LabelMode,
    label_map_for,
    pandas_read_options,
)


def test_star_rating_map_is_star_minus_one():
    m = label_map_for("star_rating")
    assert [m.label_for_star(s) for s in range(1, 6)] == [0, 1, 2, 3, 4]
    assert m.id2label == {0: "1", 1: "2", 2: "3", 3: "4", 4: "5"}
    assert m.label2id["5"] == 4
    assert m.num_labels == 5


def test_sentiment_map_groups_1_2_3_and_4_5():
    m = label_map_for(LabelMode.SENTIMENT)
    assert [m.label_for_star(s) for s in range(1, 6)] == [0, 0, 1, 2, 2]
    assert m.id2label == {0: "negative", 1: "neutral", 2: "positive"}


def test_label_map_round_trips_through_json_dict():
    for mode in LabelMode:
        m = label_map_for(mode)
        assert LabelMap.from_dict(m.to_dict()) == m


def test_unknown_mode_and_star_fail_naming_the_allowed_values():
    with pytest.raises(ConfigurationError, match="star_rating, sentiment"):
        label_map_for("stars")
    with pytest.raises(ConfigurationError, match="1..5"):
        label_map_for("star_rating").label_for_star(6)


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("amazon_reviews_us_Gift_Card_v1_00.sample.tsv", 1452),
        ("amazon_reviews_us_Mobile_Electronics.sample.tsv", 85),
    ],
)
def test_real_samples_parse_with_the_raw_schema(reviews_dir, name, rows):
    path = reviews_dir / name
    with open(path, encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split("\t") == list(RAW_COLUMNS)
    df = pd.read_csv(path, **pandas_read_options())
    assert len(df) == rows
    assert list(df.columns) == list(RAW_COLUMNS)
    assert df["star_rating"].between(1, 5).all()
    assert (df["helpful_votes"] <= df["total_votes"]).all()
    assert pd.to_datetime(df["review_date"], format="%Y-%m-%d").notna().all()
    # quoting is disabled: bare double quotes stay inside their field
    assert df["review_body"].str.len().gt(0).all()
