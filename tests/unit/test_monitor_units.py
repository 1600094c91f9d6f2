"""The monitor's pure parts: reference weighting, drift scores, the decision, the review queue."""

import io

import numpy as np
import pandas as pd
import pytest

from components.common.schema import RAW_COLUMNS, label_map_for
from components.monitor import drift, feedback

ID2LABEL = label_map_for("star_rating").id2label


def _train(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(5), n // 5)  # balanced, as ingest leaves the split
    texts = [("word " * int(5 + 3 * lab + rng.integers(0, 3))).strip() for lab in labels]
    return pd.DataFrame({"review_body": texts, "label": labels})


def _traffic(train: pd.DataFrame, n: int, **overrides) -> pd.DataFrame:
    from components.validate.suites import text_only_properties

    sample = train.sample(n, replace=True, random_state=1)
    frame = text_only_properties(sample["review_body"]).reset_index(drop=True)
    frame["predicted_label"] = sample["label"].map(ID2LABEL).values
    frame["confidence"] = 0.95
    return frame.assign(**overrides)


def test_reference_takes_the_class_mix_before_balancing():
    before = {"1": 100, "2": 50, "3": 50, "4": 100, "5": 700}
    ref = drift.reference_sample(_train(), ID2LABEL, before, max_rows=4000)
    shares = drift.label_shares(ref)
    assert shares["5"] == pytest.approx(0.70, abs=0.03) and shares["2"] == pytest.approx(
        0.05, abs=0.02
    )


def test_same_distribution_is_no_drift_and_longer_texts_are():
    train, th = _train(), drift.Thresholds()
    ref = drift.reference_sample(train, ID2LABEL, {}, 1000)
    same = _traffic(train, 400)
    scores, _ = drift.run_drift(ref, drift.traffic_frame(same), th)
    assert not any(s["drifted"] for s in scores.values()), scores
    longer = same.assign(text_length=same["text_length"] * 3, word_count=same["word_count"] * 3)
    scores, result = drift.run_drift(ref, drift.traffic_frame(longer), th)
    assert {c for c, s in scores.items() if s["drifted"]} == {"text_length", "word_count"}
    assert scores["text_length"]["method"] == "Kolmogorov-Smirnov"
    assert scores["text_length"]["traffic_mean"] == pytest.approx(
        3 * scores["text_length"]["reference_mean"], rel=0.2)  # fmt: skip
    verdict = drift.decide(400, scores, drift.confidence_figures(longer, th), 0, th)
    assert verdict.retrain and verdict.drifted_properties == ["text_length", "word_count"]
    assert any(
        r.startswith("property text_length drifted: Kolmogorov-Smirnov") for r in verdict.reasons
    )


def test_decision_on_confidence_labels_and_too_little_traffic():
    th = drift.Thresholds(min_records=100, min_labelled=50)
    calm = {"p": {"drifted": False}}
    unsure = {"low_confidence_share": 0.5}
    assert drift.decide(200, calm, {"low_confidence_share": 0.1}, 0, th).status == "ok"
    verdict = drift.decide(200, calm, unsure, 0, th)
    assert verdict.retrain and "50.0% of predictions below 0.7 confidence" in verdict.reasons[0]
    few = drift.decide(10, {}, unsure, 0, th)
    assert few.status == "insufficient_traffic" and not few.retrain
    labels = drift.decide(10, {}, unsure, 60, th)
    assert labels.retrain and labels.reasons[0] == "60 labelled feedback rows (>= 50)"


def test_review_queue_has_the_unsure_predictions_and_an_empty_label():
    records = pd.DataFrame({c: ["x", "y", "z"] for c in feedback.QUEUE_COLUMNS if c != "label"})
    records["confidence"] = [0.9, 0.4, 0.69]
    queue = feedback.review_queue(records, 0.70)
    assert list(queue["confidence"]) == [0.4, 0.69] and set(queue["label"]) == {""}
    assert list(queue.columns) == list(feedback.QUEUE_COLUMNS)


def test_the_review_queue_carries_top_words_and_reads_older_captures():
    base = {c: ["x", "y"] for c in feedback.QUEUE_COLUMNS if c not in ("label", "top_words")}
    records = pd.DataFrame({**base, "confidence": [0.3, 0.5], "top_words": ['["meh"]', None]})
    queue = feedback.review_queue(records, 0.70)
    assert queue["top_words"].tolist() == ['["meh"]', ""]
    older = pd.DataFrame({**base, "confidence": [0.3, 0.9]})  # captured without the column
    assert feedback.review_queue(older, 0.70)["top_words"].tolist() == [""]


def test_labelled_rows_become_raw_rows_for_ingest():
    csv = ("request_id,instance,time,text,label\n"
           "r1,0,2026-12-01T07:00:00Z,\"Great\tvalue\nreally\",5\n"
           "r2,0,2026-12-01T07:00:00Z,not labelled,\n"
           "r3,1,2026-12-01T07:00:00Z,bad label,seven\n")  # fmt: skip
    df = feedback.read_labelled(csv.encode(), "queue.csv")
    raw = pd.read_csv(io.StringIO(feedback.to_raw_rows(df)), sep="\t", dtype=str,
                      keep_default_na=False)  # fmt: skip
    assert list(raw.columns) == list(RAW_COLUMNS)
    assert list(raw["review_id"]) == ["fb-r1-0", "fb-r3-1"]
    assert list(raw["star_rating"]) == ["5", "seven"]  # ingest quarantines "seven"
    assert raw["review_body"][0] == "Great value really"
    assert set(raw["review_date"]) == {"2026-12-01"} and set(raw["product_category"]) == {
        "Feedback"
    }


def test_make_monitor_without_a_local_stack_says_what_to_do(tmp_path, monkeypatch, capsys):
    from pipelines.monitor import main

    monkeypatch.setenv("LOCAL_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert main(["--no-retrain"]) == 1
    assert "no local stack is running; run `make pipeline-run` first" in capsys.readouterr().err
