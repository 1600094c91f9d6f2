r"""The monitor stage: a window of captured traffic against the serving model's training data.

Usage::

    python -m components.monitor --output-dir DIR [--model-version N] [--window-hours 24] \
        [--max-property-drift 0.2] [--max-label-drift 0.2] [--confidence 0.70] ...

It reads the captured predictions of one registered version (default: the ``champion``), the
training split and ``stats.json`` of that version's data (its ``data_uri`` tag), compares text
properties, the predicted-label mix and confidence (deepchecks), exports low-confidence
predictions to the review queue, counts labelled feedback not yet trained on, and decides
whether to retrain. ``monitor.json``, ``report.html`` and ``drift.png`` land in the output
directory and under ``s3://<bucket>/monitoring/reports/``; the verdict and figures are logged
to MLflow in a run tagged with the model version, and on the version itself.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from components.common.cli import run_stage
from components.common.errors import ConfigurationError, PlatformError
from components.common.schema import label_map_for
from components.common.settings import Settings
from components.common.storage import S3Storage, parse_s3_uri
from components.monitor import drift, feedback, layout
from components.monitor.capture import UNKNOWN_VERSION, records_frame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorConfig:
    """What to compare, over which window, and when to retrain."""

    output_dir: str
    model_name: str = ""  # default: the REGISTERED_MODEL_NAME setting
    model_version: str = ""  # default: the version the champion alias points at
    captured: str = ""  # default: s3://<bucket>/monitoring/captured/
    reference: str = ""  # ingest output (train/, stats.json); default: the version's data_uri
    labelled: str = ""  # default: s3://<bucket>/monitoring/labelled/
    window_hours: float = 24.0
    since: str = ""  # an ISO time that starts the window instead of window_hours
    max_reference_rows: int = 5000
    thresholds: drift.Thresholds = field(default_factory=drift.Thresholds)
    log_to_mlflow: bool = True

    def __post_init__(self) -> None:
        if self.window_hours <= 0 or self.max_reference_rows < 100:
            raise ConfigurationError("window_hours must be > 0 and max_reference_rows >= 100")
        if not 0 < self.thresholds.confidence < 1:
            raise ConfigurationError(f"confidence {self.thresholds.confidence} is not in (0, 1)")


def resolve_version(name: str, version: str) -> tuple[str, dict]:
    """The registered version to monitor (the champion by default) and its tags."""
    from components.common.registry import CHAMPION, find_version

    found = find_version(name, "" if version else CHAMPION, version)
    return str(found.version), dict(found.tags or {})


def read_traffic(captured: str, version: str, since: pd.Timestamp,
                 storage: S3Storage) -> pd.DataFrame:  # fmt: skip
    """Captured records of ``version`` from ``since`` on (only the hours that can hold them)."""
    prefix = f"{captured.rstrip('/')}/model_version={version}/"
    bucket = parse_s3_uri(captured).bucket
    first_hour = since.strftime("%Y-%m-%dT%H")
    frames = []
    for obj in storage.list_objects(prefix):
        hour = re.search(r"/hour=([^/]+)/", obj.key)
        if obj.key.endswith(".parquet") and hour and hour.group(1) >= first_hour:
            frames.append(pd.read_parquet(_bytes(storage, f"s3://{bucket}/{obj.key}")))
    if not frames:
        return records_frame([])
    df = pd.concat(frames, ignore_index=True)
    return df[df["time"] >= since].reset_index(drop=True)


def _bytes(storage: S3Storage, uri: str) -> object:
    import io

    return io.BytesIO(storage.get_bytes(uri))


def read_reference(reference: str, storage: S3Storage) -> tuple[pd.DataFrame, dict]:
    """The training split and ``stats.json`` of an ingest output prefix."""
    base = reference.rstrip("/")
    try:
        stats = storage.get_json(f"{base}/stats.json")
    except PlatformError as e:
        raise PlatformError(f"no ingest stats.json under {base}: {e}") from e
    with tempfile.TemporaryDirectory(prefix="monitor-ref-") as tmp:
        if not storage.download_prefix(f"{base}/train/", tmp):
            raise PlatformError(f"no training split under {base}/train/")
        train = pd.read_parquet(tmp, columns=["review_body", "label"])
    return train, stats


def run_monitor(cfg: MonitorConfig, settings: Settings | None = None) -> dict:
    """Compare, export the review queue, decide, report; returns what monitor.json holds."""
    settings = settings or Settings.from_env()
    storage = S3Storage(settings)
    th = cfg.thresholds
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = cfg.model_name or settings.registered_model_name
    version, tags = resolve_version(name, cfg.model_version)
    reference_uri = cfg.reference or tags.get("data_uri", "")
    if not reference_uri:
        raise PlatformError(f"{name} version {version} has no data_uri tag: pass --reference")
    now = pd.Timestamp.now(tz="UTC")
    since = (pd.Timestamp(cfg.since) if cfg.since
             else now - pd.Timedelta(hours=cfg.window_hours))  # fmt: skip
    since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
    captured = cfg.captured or layout.capture_uri(settings)
    records = read_traffic(captured, version, since, storage)
    if records.empty:
        # a KServe whose logger forwards neither the version annotation nor V2 bodies
        records = read_traffic(captured, UNKNOWN_VERSION, since, storage)
        if not records.empty:
            logger.warning("%d records carry no model version: taken as v%s's", len(records),
                           version)  # fmt: skip
    train, stats = read_reference(reference_uri, storage)
    logger.info("monitoring %s v%s: %d captured predictions since %s vs %d training rows (%s)",
                name, version, len(records), since, len(train), reference_uri)  # fmt: skip
    used = {f.get("etag") for f in stats.get("inputs", [])}
    labelled = feedback.count_new_labels(cfg.labelled or layout.labelled_uri(settings), storage,
                                         used)  # fmt: skip
    scores, suite_result, confidence = {}, None, {}
    shares: dict[str, dict] = {}
    if len(records) >= th.min_records:
        id2label = label_map_for(tags.get("label_mode") or stats.get("config", {}).get(
            "label_mode", "star_rating")).id2label  # fmt: skip
        reference = drift.reference_sample(train, id2label, stats.get("classes_before", {}),
                                           cfg.max_reference_rows)  # fmt: skip
        traffic = drift.traffic_frame(records)
        scores, suite_result = drift.run_drift(reference, traffic, th)
        shares = {
            "reference": drift.label_shares(reference),
            "traffic": drift.label_shares(traffic),
        }
    if len(records):
        confidence = drift.confidence_figures(records, th)
    verdict = drift.decide(len(records), scores, confidence or {"low_confidence_share": 0.0},
                           labelled, th)  # fmt: skip
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    queue = feedback.review_queue(records, th.confidence)
    queue_uri = f"{layout.review_queue_uri(settings)}{version}/{stamp}/"
    queue_files = feedback.write_queue(queue, queue_uri, storage) if len(queue) else []
    result = {
        "model": name, "model_version": version, "verdict": verdict.to_dict(),
        "window": {"since": since.isoformat(), "until": now.isoformat()},
        "captured_predictions": len(records), "reference": reference_uri,
        "reference_rows": len(train), "drift": scores, "label_shares": shares,
        "confidence": confidence, "new_labelled_rows": labelled,
        "review_queue": {"rows": len(queue), "files": queue_files},
        "thresholds": asdict(th), "report_uri": f"{layout.reports_uri(settings)}{stamp}/",
    }  # fmt: skip
    _write_outputs(out, result, scores, suite_result)
    storage.upload_dir(out, result["report_uri"])
    if cfg.log_to_mlflow:
        result["mlflow_run_id"] = _log_to_mlflow(result, out, settings)
        (out / "monitor.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _write_outputs(out: Path, result: dict, scores: dict, suite_result: object) -> None:
    if scores:
        drift.plot_drift(scores, out / "drift.png")
    (out / "monitor.json").write_text(json.dumps(result, indent=2, default=str))
    page = "<html><body></body></html>"
    if suite_result is not None:
        from components.validate.report import drop_repeated_plotly

        path = out / "deepchecks.html"
        suite_result.save_as_html(str(path), as_widget=False)
        page = drop_repeated_plotly(path.read_text())
        path.unlink()
    head = _summary_html(result, out / "drift.png")
    page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + head, page, count=1)
    (out / "report.html").write_text(page)


def _summary_html(result: dict, png: Path) -> str:
    verdict = result["verdict"]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in verdict["reasons"])
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{s['method']}</td><td>{s['score']:.3f}</td>"
        f"<td>{s['threshold']}</td><td>{s['reference_mean']}</td><td>{s['traffic_mean']}</td>"
        f"<td style='color:{'red' if s['drifted'] else 'green'}'>"
        f"{'DRIFT' if s['drifted'] else 'ok'}</td></tr>"
        for c, s in result["drift"].items()
    )
    image = (f"<img src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'/>"
             if png.exists() else "")  # fmt: skip
    conf = result["confidence"]
    return (
        f"<section style='font-family:sans-serif'><h1>Monitor: {verdict['status']} "
        f"({html.escape(result['model'])} v{result['model_version']})</h1><ul>{reasons}</ul>"
        f"<p>{result['captured_predictions']} captured predictions from "
        f"{result['window']['since']} to {result['window']['until']} vs "
        f"{result['reference_rows']} training rows ({html.escape(result['reference'])}); "
        f"mean confidence {conf.get('mean_confidence')}, share below threshold "
        f"{conf.get('low_confidence_share')}; {result['review_queue']['rows']} predictions in "
        f"the review queue; {result['new_labelled_rows']} new labelled rows.</p>"
        "<table border=1 cellpadding=4><tr><th>column</th><th>method</th><th>score</th>"
        "<th>threshold</th><th>training mean</th><th>traffic mean</th><th>result</th></tr>"
        f"{rows}</table>{image}</section><hr/>"
    )


def _log_to_mlflow(result: dict, out: Path, settings: Settings) -> str:
    """A run tagged with the model version, and the verdict on the version itself."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_name = f"{settings.mlflow_experiment}-monitor"
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment(experiment_name))  # fmt: skip
    version = result["model_version"]
    run = client.create_run(experiment_id, run_name=f"monitor v{version}", tags={
        "registered_model_name": result["model"], "model_version": version,
        "verdict": result["verdict"]["status"]})  # fmt: skip
    figures = {"captured_predictions": result["captured_predictions"],
               "new_labelled_rows": result["new_labelled_rows"],
               "review_queue_rows": result["review_queue"]["rows"],
               "retrain": float(result["verdict"]["retrain"]), **result["confidence"]}  # fmt: skip
    figures.update({f"drift_{c}": s["score"] for c, s in result["drift"].items()})
    for key, value in figures.items():
        client.log_metric(run.info.run_id, key, float(value))
    client.log_text(run.info.run_id, "\n".join(result["verdict"]["reasons"]), "verdict.txt")
    for name in ("monitor.json", "report.html", "drift.png"):
        if (out / name).exists():
            client.log_artifact(run.info.run_id, str(out / name), "monitor")
    client.set_terminated(run.info.run_id)
    client.set_model_version_tag(result["model"], version, "monitor_verdict",
                                 result["verdict"]["status"])  # fmt: skip
    client.set_model_version_tag(result["model"], version, "monitor_run_id", run.info.run_id)
    return run.info.run_id


def parse_args(argv: list[str] | None) -> MonitorConfig:
    p = argparse.ArgumentParser(prog="python -m components.monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d, t = MonitorConfig(output_dir="."), drift.Thresholds()
    p.add_argument("--output-dir", required=True, help="where monitor.json and report.html go")
    p.add_argument("--model-name", default="", help="registered model (default: the setting)")
    p.add_argument("--model-version", default="", help="version to monitor (default: champion)")
    p.add_argument("--captured", default="", help="capture prefix (default: monitoring/captured/)")
    p.add_argument("--reference", default="", help="ingest output (default: the data_uri tag)")
    p.add_argument("--labelled", default="", help="labelled feedback prefix (default: layout)")
    p.add_argument("--window-hours", type=float, default=d.window_hours,
                   help="hours of traffic to compare")  # fmt: skip
    p.add_argument("--since", default="", help="ISO time the window starts (overrides hours)")
    p.add_argument("--max-reference-rows", type=int, default=d.max_reference_rows,
                   help="training rows sampled as the reference")  # fmt: skip
    p.add_argument("--max-property-drift", type=float, default=t.max_property_drift,
                   help="Kolmogorov-Smirnov statistic above which a property drifted")  # fmt: skip
    p.add_argument("--max-label-drift", type=float, default=t.max_label_drift,
                   help="Cramer's V above which the predicted labels drifted")  # fmt: skip
    p.add_argument("--confidence", type=float, default=t.confidence,
                   help="predictions below it go to the review queue")  # fmt: skip
    p.add_argument("--max-low-confidence-share", type=float, default=t.max_low_confidence_share,
                   help="share below --confidence that asks for a retrain")  # fmt: skip
    p.add_argument("--min-records", type=int, default=t.min_records,
                   help="fewer captured predictions give no drift verdict")  # fmt: skip
    p.add_argument("--min-labelled", type=int, default=t.min_labelled,
                   help="new labelled rows that ask for a retrain on their own")  # fmt: skip
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                   help="log the verdict and figures to MLflow")  # fmt: skip
    a = p.parse_args(argv)
    th = drift.Thresholds(a.max_property_drift, a.max_label_drift, a.confidence,
                          a.max_low_confidence_share, a.min_records, a.min_labelled)  # fmt: skip
    return MonitorConfig(a.output_dir, a.model_name, a.model_version, a.captured,
                         a.reference, a.labelled, a.window_hours, a.since,
                         a.max_reference_rows, th, a.mlflow)  # fmt: skip


def print_decision(result: dict) -> None:
    verdict = result["verdict"]
    print(f"Monitor verdict for {result['model']} v{result['model_version']}: "
          f"{verdict['status']} ({result['captured_predictions']} predictions)")  # fmt: skip
    for reason in verdict["reasons"]:
        print(f"  - {reason}")
    print(f"Report: {result['report_uri']}report.html")
    if result["review_queue"]["files"]:
        print(f"Review queue: {result['review_queue']['rows']} predictions in "
              f"{result['review_queue']['files'][0]}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    result = run_stage("monitor", lambda: run_monitor(parse_args(argv)))
    if result is None:
        return 1
    print_decision(result)
    logger.info("monitor finished in %.1fs", time.perf_counter() - start)
    return 0
