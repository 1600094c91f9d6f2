"""hadolint on every Dockerfile and checkov on every rendered object and Dockerfile: no finding
is left unless it is justified in .hadolint.yaml or .checkov.yaml."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from tests.k8s.conftest import ROOT, run, tool


def test_hadolint_has_no_findings():
    hadolint = Path(sys.executable).with_name("hadolint")
    dockerfiles = sorted(str(p) for p in (ROOT / "images").glob("*.Dockerfile"))
    assert len(dockerfiles) == 4
    proc = run(str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), *dockerfiles, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install mlflow\nUSER root\n")
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = run(str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(bad), check=False)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3002" in proc.stdout


def test_checkov_has_no_unjustified_findings(rendered, tmp_path):
    objects = tmp_path / "rendered"
    objects.mkdir()
    for source, objs in rendered.items():
        name = source.replace("/", "_")
        (objects / f"{name}.yaml").write_text(yaml.safe_dump_all(objs))
    shutil.copytree(ROOT / "images", tmp_path / "images")
    config = yaml.safe_load((ROOT / ".checkov.yaml").read_text())
    proc = run(tool("checkov"), "--config-file", str(ROOT / ".checkov.yaml"),
               "--directory", str(objects), "--directory", str(tmp_path / "images"),
               "--output", "json", check=False)  # fmt: skip
    reports, text, decoder = [], proc.stdout.strip(), json.JSONDecoder()
    while text:  # one JSON document per scanned directory
        doc, end = decoder.raw_decode(text)
        reports += doc if isinstance(doc, list) else [doc]
        text = text[end:].strip()
    failed = [
        f"{r['check_type']}: {c['check_id']} {c['check_name']} ({c['resource']})"
        for r in reports for c in r["results"]["failed_checks"]
    ]  # fmt: skip
    passed = sum(r["summary"]["passed"] for r in reports)
    assert not failed, "\n".join(failed)
    assert passed > 100
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    assert config["skip-check"], "the justified skips live in .checkov.yaml"
