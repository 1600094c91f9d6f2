"""Captured traffic: KServe payload-logger CloudEvents to prediction records, records to Parquet.

KServe's payload logger (the agent beside the predictor) sends each request and each response
as its own CloudEvent in binary mode: the body is the payload as the predictor saw it, the
attributes are ``ce-*`` headers, and both events of one inference share ``ce-id``
(kserve/kserve ``pkg/logger/worker.go``: ``sendHttpCloudEvent`` sets the id, the types
``org.kubeflow.serving.inference.request``/``.response`` and the extensions
``inferenceservicename``, ``namespace``, ``component``, ``endpoint``, ``metadata`` and, when
set, ``annotations``; ``pkg/logger/handler.go`` gives request and response the same id). Our
local predictor's logger (``components/serve/payload_logger.py``) sends the same events.

Everything here is pure: the sink (``sink.py``) does the I/O.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from components.common.errors import InvalidInput
from components.common.text import clean_text
from components.validate.suites import TEXT_ONLY_PROPERTIES, text_only_properties

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_TYPES = (REQUEST_TYPE, RESPONSE_TYPE)
# The deploy step writes the registered version into this InferenceService annotation
# (components/deploy/inferenceservice.py); KServe forwards annotations in ``ce-annotations``.
VERSION_ANNOTATION = "review-classifier/model-version"
UNKNOWN_VERSION = "unknown"

RECORD_COLUMNS = (
    "request_id", "instance", "time", "model_name", "model_version", "endpoint", "text",
    *TEXT_ONLY_PROPERTIES, "predicted_star", "predicted_label", "confidence", "probabilities",
    "top_words",
)  # fmt: skip


@dataclass(frozen=True)
class Event:
    """One CloudEvent as the sink spools it: its attributes and its body (UTF-8 JSON text)."""

    id: str
    type: str
    time: str
    received: float
    body: str
    attributes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        return cls(**json.loads(line))


def event_from_http(headers: dict[str, str], body: bytes, received: float) -> Event:
    """A binary-mode CloudEvent (``ce-*`` headers + body) to an Event, or InvalidInput."""
    lower = {k.lower(): v for k, v in headers.items()}
    event_id, event_type = lower.get("ce-id", "").strip(), lower.get("ce-type", "").strip()
    if not event_id:
        raise InvalidInput("missing ce-id header: not a binary-mode CloudEvent")
    if event_type not in EVENT_TYPES:
        raise InvalidInput(f"ce-type {event_type!r} is not one of: {', '.join(EVENT_TYPES)}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"event {event_id}: body is not UTF-8 JSON") from e
    attributes = {k[3:]: v for k, v in lower.items()
                  if k.startswith("ce-") and k not in ("ce-id", "ce-type", "ce-time")}  # fmt: skip
    when = lower.get("ce-time") or datetime.fromtimestamp(received, UTC).isoformat()
    return Event(event_id, event_type, when, received, text, attributes)


def texts_of_request(body: Any) -> list[str]:
    """The review texts of a V1 (``instances``) or V2 (``inputs``, BYTES) request body."""
    if isinstance(body, dict) and isinstance(body.get("instances"), list):
        return [i.get("review_body", "") if isinstance(i, dict) else str(i)
                for i in body["instances"]]  # fmt: skip
    if isinstance(body, dict) and isinstance(body.get("inputs"), list) and body["inputs"]:
        data = body["inputs"][0].get("data") or []
        return [str(x) for x in _flatten(data)]
    raise InvalidInput("request body has neither V1 instances nor V2 inputs")


def predictions_of_response(body: Any) -> list[dict]:
    """Per-instance ``star``, ``label``, ``confidence``, ``probabilities`` and ``top_words``.

    ``top_words`` (the words that pushed most toward the predicted class, JSON; '' when the
    response has none) is what the predictor adds to the captured copy of a low-confidence
    prediction (``components/serve/model.py``) and what an ``:explain`` answer carries.
    """
    if isinstance(body, dict) and isinstance(body.get("predictions"), list):
        out = []
        for p in body["predictions"]:
            probs = {str(k): float(v) for k, v in (p.get("probabilities") or {}).items()}
            star = p.get("star_rating")  # None for the 3-class sentiment model
            words = p.get("top_words")
            out.append({"star": -1 if star is None else int(star), "label": str(p.get("label", "")),
                        "confidence": float(p.get("score", max(probs.values(), default=0.0))),
                        "probabilities": probs,
                        "top_words": json.dumps([str(w) for w in words])
                        if isinstance(words, list) else ""})  # fmt: skip
        return out
    if isinstance(body, dict) and isinstance(body.get("outputs"), list):
        outputs = {o.get("name"): o for o in body["outputs"]}
        if "star_rating" not in outputs or "probabilities" not in outputs:
            raise InvalidInput("V2 response lacks the star_rating or probabilities output")
        stars = [int(x) for x in _flatten(outputs["star_rating"]["data"])]
        flat = [float(x) for x in _flatten(outputs["probabilities"]["data"])]
        width = len(flat) // max(len(stars), 1)
        out = []
        for i, star in enumerate(stars):
            row = flat[i * width : (i + 1) * width]
            # V2 carries no label names: stars 1..k for the 5-class model, the index otherwise
            first = 1 if width == 5 else 0
            names = [str(j + first) for j in range(width)]
            out.append({"star": star, "label": str(star), "confidence": max(row, default=0.0),
                        "probabilities": dict(zip(names, row, strict=True)),
                        "top_words": ""})  # fmt: skip
        return out
    raise InvalidInput("response body has neither V1 predictions nor V2 outputs")


def _flatten(data: list) -> list:
    return [y for x in data for y in (_flatten(x) if isinstance(x, list) else [x])]


def model_version(request: Event, response: Event, response_body: Any) -> str:
    """The serving version: V2's model_version, the ISVC annotation, or our logger's attribute."""
    if isinstance(response_body, dict) and response_body.get("model_version"):
        return str(response_body["model_version"])
    for event in (response, request):
        try:
            annotations = json.loads(event.attributes.get("annotations") or "{}")
        except ValueError:
            annotations = {}
        if isinstance(annotations, dict) and annotations.get(VERSION_ANNOTATION):
            return str(annotations[VERSION_ANNOTATION])
        if event.attributes.get("modelversion"):
            return event.attributes["modelversion"]
    return UNKNOWN_VERSION


def records_of_pair(request: Event, response: Event, keep_text: bool = True) -> list[dict]:
    """One record per instance of an inference; InvalidInput when the pair cannot be read."""
    try:
        req_body, resp_body = json.loads(request.body), json.loads(response.body)
    except ValueError as e:
        raise InvalidInput(f"event {request.id}: body is not JSON: {e}") from e
    texts = texts_of_request(req_body)
    try:
        predictions = predictions_of_response(resp_body)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"event {request.id}: unreadable predictions: {e}") from e
    if len(texts) != len(predictions):
        raise InvalidInput(
            f"event {request.id}: {len(texts)} texts but {len(predictions)} predictions"
        )
    version = model_version(request, response, resp_body)
    name = request.attributes.get("inferenceservicename") or ""
    if not name and isinstance(resp_body, dict):
        name = str(resp_body.get("model_name") or "")
    # properties of the text as ingest cleans it, so they compare with the training split's
    props = text_only_properties(pd.Series([clean_text(t) for t in texts], dtype=object))
    props = props.to_dict("records")
    return [
        {
            "request_id": request.id, "instance": i, "time": request.time, "model_name": name,
            "model_version": version, "endpoint": request.attributes.get("endpoint", ""),
            "text": text if keep_text else None, **prop, "predicted_star": pred["star"],
            "predicted_label": pred["label"], "confidence": pred["confidence"],
            "probabilities": json.dumps(pred["probabilities"], sort_keys=True),
            "top_words": pred["top_words"],
        }
        for i, (text, pred, prop) in enumerate(zip(texts, predictions, props, strict=True))
    ]  # fmt: skip


@dataclass
class Pairing:
    """The outcome of pairing a batch of events: records, what waits, what was dropped."""

    records: list[dict] = field(default_factory=list)
    carry: list[Event] = field(default_factory=list)
    paired_ids: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


def pair_events(events: list[Event], done: set[str], now: float, pair_timeout: float,
                keep_text: bool = True) -> Pairing:  # fmt: skip
    """Pair requests with responses by id, deterministically for the same inputs.

    (The sink redoes an interrupted flush with the same ``now``: same objects.)

    Repeated events (a client that retried after a lost acknowledgement) and events of
    inferences already written (``done``) are dropped; an unpaired event waits (``carry``) until
    it is older than ``pair_timeout`` seconds, then it is dropped and counted.
    """
    out = Pairing()
    by_id: dict[str, dict[str, Event]] = {}
    for event in events:
        slot = by_id.setdefault(event.id, {})
        if event.id in done or event.type in slot:
            out.drop("duplicate")
            continue
        slot[event.type] = event
    by_id = {i: slot for i, slot in by_id.items() if slot}
    for event_id in sorted(by_id, key=lambda i: (min(e.received for e in by_id[i].values()), i)):
        slot = by_id[event_id]
        if len(slot) == 2:
            try:
                out.records.extend(records_of_pair(slot[REQUEST_TYPE], slot[RESPONSE_TYPE],
                                                   keep_text))  # fmt: skip
            except InvalidInput:
                out.drop("unreadable")
            out.paired_ids.append(event_id)
            continue
        (event,) = slot.values()
        if now - event.received > pair_timeout:
            out.drop("request_without_response" if event.type == REQUEST_TYPE
                     else "response_without_request")  # fmt: skip
        else:
            out.carry.append(event)
    return out


def partition_key(record: dict) -> tuple[str, str]:
    """(model version, UTC hour) of a record: the Parquet partition it belongs to."""
    when = pd.Timestamp(record["time"])
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return record["model_version"], when.strftime("%Y-%m-%dT%H")


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Records to a typed frame with ``RECORD_COLUMNS`` (time as UTC timestamps)."""
    df = pd.DataFrame.from_records(records, columns=list(RECORD_COLUMNS))
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    df["instance"] = df["instance"].astype("int32")
    df["predicted_star"] = df["predicted_star"].astype("int32")
    return df


def to_parquet_bytes(records: list[dict]) -> bytes:
    buffer = io.BytesIO()
    records_frame(records).to_parquet(buffer, index=False)
    return buffer.getvalue()


def batch_object_key(prefix: str, version: str, hour: str, batch: str) -> str:
    """``<prefix>model_version=<v>/hour=<YYYY-MM-DDTHH>/part-<batch>.parquet`` (Hive-style)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version) or UNKNOWN_VERSION
    return f"{prefix.rstrip('/')}/model_version={safe}/hour={hour}/part-{batch}.parquet"
