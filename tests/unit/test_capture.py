"""Capture: CloudEvents to records, pairing, the sink's spool and its flush transaction."""

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from components.common.errors import InvalidInput, StorageError
from components.monitor import capture
from components.monitor.sink import SinkConfig, Spool

V1_REQUEST = {"instances": ["Great card, works.", {"review_body": "Ça ne marche pas!!"}]}
V1_RESPONSE = {
    "predictions": [
        {"star_rating": 5, "label": "5", "score": 0.9,
         "probabilities": {"1": 0.01, "2": 0.01, "3": 0.03, "4": 0.05, "5": 0.9}},
        {"star_rating": 1, "label": "1", "score": 0.6,
         "probabilities": {"1": 0.6, "2": 0.2, "3": 0.1, "4": 0.05, "5": 0.05}},
    ]
}  # fmt: skip


def headers(event_id: str, kind: str, **extra: str) -> dict[str, str]:
    return {"Ce-Id": event_id, "Ce-Type": kind, "Ce-Specversion": "1.0",
            "Ce-Time": "2026-12-01T07:15:00Z", "Ce-Inferenceservicename": "review-classifier",
            "Ce-Endpoint": "default", **{f"Ce-{k}": v for k, v in extra.items()}}  # fmt: skip


def pair(event_id: str, received: float = 0.0, request=V1_REQUEST, response=V1_RESPONSE,
         **extra: str) -> list[capture.Event]:  # fmt: skip
    return [
        capture.event_from_http(headers(event_id, capture.REQUEST_TYPE, **extra),
                                json.dumps(request).encode(), received),
        capture.event_from_http(headers(event_id, capture.RESPONSE_TYPE, **extra),
                                json.dumps(response).encode(), received),
    ]  # fmt: skip


def test_event_needs_id_and_a_kserve_type():
    with pytest.raises(InvalidInput, match="ce-id"):
        capture.event_from_http({"ce-type": capture.REQUEST_TYPE}, b"{}", 0)
    with pytest.raises(InvalidInput, match="ce-type 'other'"):
        capture.event_from_http({"ce-id": "1", "ce-type": "other"}, b"{}", 0)
    with pytest.raises(InvalidInput, match="UTF-8"):
        capture.event_from_http(headers("1", capture.REQUEST_TYPE), b"\xff\xfe", 0)


def test_v1_pair_gives_one_record_per_instance_with_properties():
    out = capture.pair_events(pair("a", annotations='{"review-classifier/model-version": "7"}'),
                              set(), now=1.0, pair_timeout=60)  # fmt: skip
    assert [r["instance"] for r in out.records] == [0, 1]
    first, second = out.records
    assert first["model_version"] == "7" and first["model_name"] == "review-classifier"
    assert first["predicted_star"] == 5 and first["confidence"] == 0.9
    assert json.loads(second["probabilities"])["1"] == 0.6
    assert second["text"] == "Ça ne marche pas!!" and second["non_ascii_share"] == 1 / 18
    assert first["word_count"] == 3 and first["text_length"] == 18
    assert out.paired_ids == ["a"] and not out.carry and not out.dropped


def test_top_words_of_a_low_confidence_prediction_reach_the_record_and_parquet():
    response = json.loads(json.dumps(V1_RESPONSE))
    response["predictions"][1]["top_words"] = ["marche", "pas"]
    first, second = capture.pair_events(pair("t", response=response), set(), 1.0, 60).records
    assert first["top_words"] == "" and json.loads(second["top_words"]) == ["marche", "pas"]
    frame = pd.read_parquet(io.BytesIO(capture.to_parquet_bytes([first, second])))
    assert frame["top_words"].tolist() == ["", '["marche", "pas"]']


def test_properties_are_of_the_text_as_ingest_cleans_it():
    request = {"instances": ["Fine&amp;dandy<br />ok"]}
    response = {"predictions": V1_RESPONSE["predictions"][:1]}
    (record,) = capture.pair_events(
        pair("c", request=request, response=response), set(), 1, 60
    ).records
    assert record["text"] == "Fine&amp;dandy<br />ok"  # what was served
    assert record["text_length"] == len("Fine&dandy ok") and record["word_count"] == 2


def test_without_text_only_properties_are_kept():
    (record, _) = capture.pair_events(pair("a"), set(), 1.0, 60, keep_text=False).records
    assert record["text"] is None and record["text_length"] == 18


def test_v2_bodies_and_version_from_the_response():
    request = {"inputs": [{"name": "review_body", "datatype": "BYTES", "shape": [2],
                           "data": ["good", "bad"]}]}  # fmt: skip
    response = {"model_name": "rc", "model_version": "3", "outputs": [
        {"name": "star_rating", "datatype": "INT32", "shape": [2], "data": [4, 2]},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 5],
         "data": [0, 0, 0.2, 0.7, 0.1, 0.1, 0.5, 0.2, 0.1, 0.1]}]}  # fmt: skip
    out = capture.pair_events(pair("v2", request=request, response=response), set(), 1.0, 60)
    assert [(r["predicted_star"], r["confidence"], r["model_version"]) for r in out.records] == [
        (4, 0.7, "3"), (2, 0.5, "3")]  # fmt: skip


def test_duplicates_done_ids_waiting_and_timed_out_events():
    events = pair("a") + pair("a") + pair("done") + pair("late", received=100.0)[:1]
    events += pair("old", received=0.0)[1:]
    out = capture.pair_events(events, {"done"}, now=120.0, pair_timeout=60)
    assert len(out.records) == 2 and out.paired_ids == ["a"]
    assert [e.id for e in out.carry] == ["late"]
    assert out.dropped == {"duplicate": 4, "response_without_request": 1}


def test_mismatched_counts_are_dropped_as_unreadable():
    events = pair("x", response={"predictions": V1_RESPONSE["predictions"][:1]})
    out = capture.pair_events(events, set(), 1.0, 60)
    assert not out.records and out.dropped == {"unreadable": 1} and out.paired_ids == ["x"]


def test_partition_by_version_and_hour():
    record = {"model_version": "2", "time": "2026-12-01T07:59:59+01:00"}
    assert capture.partition_key(record) == ("2", "2026-12-01T06")
    key = capture.batch_object_key("s3://b/monitoring/captured/", "2", "2026-12-01T06", "x-1")
    assert key == "s3://b/monitoring/captured/model_version=2/hour=2026-12-01T06/part-x-1.parquet"


def _spool(tmp_path: Path, **kw) -> Spool:
    cfg = SinkConfig(output=str(tmp_path / "out"), spool_dir=str(tmp_path / "spool"),
                     instance="t", **kw)  # fmt: skip
    return Spool(cfg)


def _written(tmp_path: Path) -> pd.DataFrame:
    files = sorted((tmp_path / "out").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def test_spool_batches_many_inferences_into_one_object(tmp_path):
    spool = _spool(tmp_path)
    for i in range(50):
        for event in pair(f"r{i}", received=float(i)):
            spool.append(event)
    result = spool.flush()
    assert result["records"] == 100 and result["objects"] == 1
    df = _written(tmp_path)
    assert len(df) == 100 and df["request_id"].nunique() == 50
    assert str(df["time"].dt.tz) == "UTC"
    assert spool.flush() == {"records": 0, "objects": 0}


def test_interrupted_flush_is_redone_exactly_once(tmp_path, monkeypatch):
    spool = _spool(tmp_path)
    for i in range(10):
        for event in pair(f"r{i}"):
            spool.append(event)
    spool.append(pair("waiting", received=1e12)[0])  # its response has not come yet

    def fail(*_a, **_k):
        raise StorageError("S3 is down")

    monkeypatch.setattr(Spool, "_write_objects", fail)
    with pytest.raises(StorageError):
        spool.flush()
    monkeypatch.undo()
    assert not _written(tmp_path).size
    restarted = _spool(tmp_path)  # the flush is redone from its manifest at start-up
    assert len(_written(tmp_path)) == 20
    restarted.append(pair("waiting", received=1e12)[1])
    for event in pair("r3"):  # a client re-sending after a lost acknowledgement
        restarted.append(event)
    restarted.flush()
    df = _written(tmp_path)
    assert len(df) == 22 and df.groupby(["request_id", "instance"]).size().max() == 1
    assert restarted.dropped == {"duplicate": 2}


def test_a_failed_batch_is_retried_before_the_next_one(tmp_path, monkeypatch):
    spool = _spool(tmp_path)
    for event in pair("r1"):
        spool.append(event)
    original = Spool._write_objects

    def fail(*_a, **_k):
        raise StorageError("S3 is down")

    monkeypatch.setattr(Spool, "_write_objects", fail)
    with pytest.raises(StorageError):
        spool.flush()
    monkeypatch.setattr(Spool, "_write_objects", original)
    for event in pair("r2"):
        spool.append(event)
    spool.flush()
    df = _written(tmp_path)
    assert sorted(df["request_id"]) == ["r1", "r1", "r2", "r2"] and not spool.dropped
