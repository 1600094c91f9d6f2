"""Charts and kustomizations render with the real helm and kustomize; the policy holds for all."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from tests.k8s.conftest import CHARTS, ROOT, helm_template, run, tool

BUILTIN_POD_KINDS = {"Pod": ("spec",), "Deployment": ("spec", "template", "spec"),
                     "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_helm_lint_passes(name):
    chart, values = CHARTS[name]
    cmd = [tool("helm"), "lint", "--strict", chart] + (["--values", values] if values else [])
    out = run(*cmd).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("chart", "override", "message"),
    [
        ("charts/mlflow", "image.tag=latest", "image.tag"),
        ("charts/mlflow", "artifacts.destination=/var/mlruns", "artifacts.destination"),
        ("charts/review-classifier", "gpus=-1", "gpus"),
        ("charts/review-classifier", "storageUri=models:/review-classifier/1", "storageUri"),
        ("charts/review-classifier", "autoscaling.metric=latency", "autoscaling.metric"),
        ("charts/review-classifier", "canaryPercent=150", "canaryPercent"),
    ],
)
def test_values_schema_rejects_bad_values(chart, override, message):
    proc = run(tool("helm"), "template", "rc", chart, "--set", override, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def _value_paths(obj: dict, documented: set[str], prefix: str = ""):
    """Leaf paths of values.yaml; a documented mapping counts as one leaf."""
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in documented:
            yield from _value_paths(value, documented, f"{path}.")
        else:
            yield path


def test_every_value_has_a_param_comment():
    for chart in ("charts/mlflow", "charts/review-classifier"):
        text = (ROOT / chart / "values.yaml").read_text()
        documented = set(re.findall(r"^## @param (\S+)", text, flags=re.M))
        missing = set(_value_paths(yaml.safe_load(text), documented)) - documented
        assert not missing, f"{chart}/values.yaml: no ## @param for {sorted(missing)}"


def test_review_classifier_chart_without_a_model_renders_only_the_runtime():
    kinds = [d["kind"] for d in helm_template("charts/review-classifier", None)]
    assert "InferenceService" not in kinds and "ServingRuntime" in kinds


def test_review_classifier_chart_eks_values():
    objs = {d["kind"]: d for d in helm_template(*CHARTS["review-classifier-eks"])}
    isvc, runtime = objs["InferenceService"], objs["ServingRuntime"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert runtime["spec"]["containers"][0]["image"].endswith(
        "/review-classifier/serve:0a1b2c3d4e5f"
    )
    assert "{{.Name}}" in " ".join(runtime["spec"]["containers"][0]["args"])
    sa = objs["ServiceAccount"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("serving")
    assert predictor["serviceAccountName"] == sa["metadata"]["name"]
    test_pod = objs["Pod"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert (
        "/v1/models/rc-review-classifier:predict" in test_pod["spec"]["containers"][0]["command"][2]
    )


def test_mlflow_chart_eks_values_use_the_secrets_and_basic_auth():
    objs = {d["kind"]: d for d in helm_template(*CHARTS["mlflow-eks"])}
    container = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == (
        "mlflow-backend-store"
    )
    assert "--app-name=basic-auth" in container["args"]
    assert "--artifacts-destination=s3://review-classifier-mlflow-artifacts" in container["args"]
    assert {p for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container} == {
        "startupProbe", "readinessProbe", "livenessProbe"
    }  # fmt: skip
    assert objs["Deployment"]["spec"]["replicas"] == 2


def test_helm_notes_say_how_to_call_the_service(apiserver):
    proc = run(tool("helm"), "install", "notes", "charts/review-classifier", "--dry-run",
               "--namespace", "review-classifier", "--values",
               "charts/review-classifier/ci/eks-values.yaml",
               env={"KUBECONFIG": str(apiserver.kubeconfig)})  # fmt: skip
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "/v1/models/notes-review-classifier:predict" in notes
    assert "/v2/models/notes-review-classifier/infer" in notes


def test_base_has_one_resource_per_file_and_lists_them_all():
    base = ROOT / "manifests" / "base"
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in base.glob("*.yaml") if p.name != "kustomization.yaml"
                   and not p.is_symlink())  # fmt: skip
    assert sorted(listed) == files
    for name in files:
        assert len([d for d in yaml.safe_load_all((base / name).read_text()) if d]) == 1, name


@pytest.mark.parametrize("kind", ["pytorchjob", "trainjob"])
def test_training_job_templates_in_manifests_are_the_ones_the_launchers_use(kind):
    link = ROOT / "manifests" / "base" / f"{kind}-template.yaml"
    assert link.resolve() == (ROOT / "components" / "train" / f"{kind}_template.yaml")


def test_manifests_agree_with_the_code(rendered):
    from components.common.settings import TRAINING_CONFIG_MAP
    from components.deploy.inferenceservice import ServiceSpec, build_inference_service
    from components.train.cluster import ClusterSpec
    from pipelines.review_classifier import CONFIG_KEYS, CONFIG_MAP

    objs = {(d["kind"], d["metadata"]["name"]): d for d in rendered["manifests/overlays/eks"]}
    accounts = {name for kind, name in objs if kind == "ServiceAccount"}
    assert ServiceSpec.service_account in accounts and ClusterSpec.service_account in accounts
    for name in (CONFIG_MAP, TRAINING_CONFIG_MAP):
        assert set(objs[("ConfigMap", name)]["data"]) <= set(CONFIG_KEYS)
    assert ClusterSpec.config_map == TRAINING_CONFIG_MAP
    # the standalone InferenceService is the one the deploy step builds
    (isvc,) = rendered["manifests/serving"]
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    built = build_inference_service(ServiceSpec(name="review-classifier", storage_uri=uri))
    assert isvc["spec"] == built["spec"]


def _pod_specs(obj: dict) -> list[tuple[str, dict]]:
    kind = obj["kind"]
    if kind in BUILTIN_POD_KINDS:
        spec = obj
        for key in BUILTIN_POD_KINDS[kind]:
            spec = spec[key]
        return [(kind, spec)]
    if kind == "PyTorchJob":
        return [(f"PyTorchJob/{r}", s["template"]["spec"])
                for r, s in obj["spec"]["pytorchReplicaSpecs"].items()]  # fmt: skip
    if kind == "ServingRuntime":
        return [("ServingRuntime", obj["spec"])]
    return []


def _images(rendered) -> list[tuple[str, str]]:
    return [
        (where, c["image"])
        for where, obj in _objects(rendered)
        for _, spec in _pod_specs(obj)
        for c in spec.get("containers", []) + spec.get("initContainers", [])
    ]


def test_no_image_is_latest_or_untagged(rendered):
    images = _images(rendered)
    assert len(images) >= 8
    for where, image in images:
        name = image.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        assert "@sha256:" in image or (tag and tag != "latest"), f"{where}: {image}"


def _objects(rendered):
    for source, objs in rendered.items():
        for obj in objs:
            yield f"{source}:{obj['kind']}/{obj['metadata']['name']}", obj


def test_every_container_has_requests_and_limits(rendered):
    checked = 0
    for where, obj in _objects(rendered):
        if obj["kind"] == "InferenceService":
            containers = [obj["spec"]["predictor"]["model"]]
        else:
            containers = [c for _, s in _pod_specs(obj) for c in s.get("containers", [])]
        for c in containers:
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}: {part}"
            checked += 1
    assert checked >= 10


def test_every_pod_runs_as_non_root(rendered):
    checked = 0
    for where, obj in _objects(rendered):
        if obj["kind"] == "InferenceService":
            ctx = obj["spec"]["predictor"].get("securityContext", {})
            assert ctx.get("runAsNonRoot") is True, where
            checked += 1
            continue
        for kind, spec in _pod_specs(obj):
            pod_ctx = spec.get("securityContext", {})
            for c in spec.get("containers", []):
                what = f"{where} ({kind}) {c['name']}"
                ctx = {**pod_ctx, **c.get("securityContext", {})}
                assert ctx.get("runAsNonRoot") is True, what
                assert ctx.get("runAsUser", 1) != 0, f"{what} runs as root"
                assert ctx.get("allowPrivilegeEscalation") is False, what
                drop = c.get("securityContext", {}).get("capabilities", {}).get("drop")
                assert drop == ["ALL"], what
                checked += 1
    assert checked >= 10


def test_dockerfiles_follow_the_image_rules():
    for path in sorted((ROOT / "images").glob("*.Dockerfile")):
        text = path.read_text()
        assert re.search(r"^ARG PYTHON_IMAGE=\S+@sha256:[0-9a-f]{64}$", text, re.M), path.name
        assert re.findall(r"^USER (\S+)", text, re.M)[-1] == "10001:10001", path.name
        last_stage = text.rsplit("\nFROM ", 1)[1]
        assert re.search(r'^(ENTRYPOINT) \[".+"\]$', last_stage, re.M), path.name
        assert text.count("FROM ") >= 2, f"{path.name}: multi-stage"
        copies = [m.group(1) for m in re.finditer(r"^COPY (?!--from)(\S+)", text, re.M)]
        if "components" in copies:
            assert copies.index("pyproject.toml") < copies.index("components"), path.name
    serve = (ROOT / "images" / "serve.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "components.serve"]' in serve


def test_dockerignore_keeps_the_build_context_small():
    lines = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and x[0] != "#"]
    assert lines[0] == "**", "everything is excluded first"
    kept = {line[1:] for line in lines if line.startswith("!")}
    assert kept == {"pyproject.toml", "constraints.txt", "components/**", "pipelines/**",
                    "images/**"}  # fmt: skip


def test_images_push_deploy_and_pipeline_share_one_tag_scheme(tmp_path):
    registry, tag = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rc", "0a1b2c3d4e5f"
    env = {"IMAGE_REGISTRY": registry, "IMAGE_TAG": tag}
    plan = run("make", "-n", "images", "push", "deploy", env=env).stdout
    remote = run("make", "-n", "pipeline-run", env={**env, "KFP_HOST": "http://kfp"}).stdout
    assert f"IMAGE_REGISTRY={registry} IMAGE_TAG={tag}" in remote
    # locally the names would only change kfp.local's cache keys at every commit
    assert "IMAGE_TAG" not in run("make", "-n", "pipeline-run", env={**env, "KFP_HOST": ""}).stdout
    for name in ("spark", "train", "serve", "mlflow"):
        image = f"{registry}/{name}:{tag}"
        assert f"docker build -f images/{name}.Dockerfile -t {image} ." in plan
        assert f"docker push {image}" in plan
    deploy = plan.replace("\\\n", " ")
    assert f"IMAGE_REGISTRY={registry}" in deploy and f"IMAGE_TAG={tag}" in deploy  # deploy.sh
    compiled = tmp_path / "pipeline.yaml"
    run(sys.executable, "-m", "pipelines.compile", "--output", str(compiled), env=env)
    images = set(re.findall(r"^ +image: (\S+/\S+)$", compiled.read_text(), re.M))
    assert images == {f"{registry}/{name}:{tag}" for name in ("spark", "train")}, images


def test_monitoring_manifests_wire_the_sink_and_the_schedule(rendered):
    from components.monitor.layout import CAPTURE_PREFIX

    objs = {(d["kind"], d["metadata"]["name"]): d for d in rendered["manifests/monitoring"]}
    sink = objs[("Deployment", "capture-sink")]["spec"]["template"]["spec"]
    (container,) = sink["containers"]
    assert container["command"] == ["python", "-m", "components.monitor.sink"]
    assert f"--output=s3://review-classifier/{CAPTURE_PREFIX}" in container["args"]
    assert any(v["mountPath"] == "/var/spool/capture" for v in container["volumeMounts"])
    service = objs[("Service", "capture-sink")]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "capture-sink"}
    cron = objs[("CronJob", "review-classifier-monitor")]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["python", "-m", "pipelines.monitor"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KFP_HOST"].startswith("http://ml-pipeline.kubeflow")
    (token,) = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
        "pipelines.kubeflow.org"
    )
    # the predictor may reach the sink and the sink takes only the predictor's events
    ingress = objs[("NetworkPolicy", "allow-capture-ingress")]["spec"]["ingress"][0]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"component": "predictor"}}}]


def test_review_classifier_chart_monitoring_points_the_logger_at_its_sink():
    objs = {(d["kind"], d["metadata"]["name"]): d
            for d in helm_template(*CHARTS["review-classifier-eks"])}  # fmt: skip
    service = objs[("Service", "rc-review-classifier-capture-sink")]
    logger = objs[("InferenceService", "rc-review-classifier")]["spec"]["predictor"]["logger"]
    assert logger["url"].startswith(f"http://{service['metadata']['name']}.")
    sink = objs[("Deployment", "rc-review-classifier-capture-sink")]["spec"]["template"]["spec"]
    assert sink["containers"][0]["image"].endswith("/review-classifier/spark:0a1b2c3d4e5f")
    assert (
        "--output=s3://review-classifier-data/monitoring/captured/" in sink["containers"][0]["args"]
    )
    cron = objs[("CronJob", "rc-review-classifier-monitor")]["spec"]
    assert cron["schedule"] == "17 * * * *"
    monitor = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert monitor["serviceAccountName"] == "rc-review-classifier-monitoring"
    # without monitoring (the default) nothing of it renders and the logger stays off
    kinds = {d["kind"] for d in helm_template("charts/review-classifier", None)}
    assert not kinds & {"CronJob", "Deployment", "Service"}


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists) matches ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
        if not ok:
            return False
    return True


def _admits(peers: list[dict], ns_labels: dict[str, str], pod_labels: dict[str, str]) -> bool:
    """NetworkPolicy peer semantics for a pod in another namespace than the policy's."""
    for peer in peers:
        ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
        if ns_sel is None:  # a bare podSelector only selects pods of the policy's namespace
            continue
        if _selects(ns_sel, ns_labels) and (pod_sel is None or _selects(pod_sel, pod_labels)):
            return True
    return False


@pytest.mark.parametrize(
    "ns_labels",
    [
        {"kubernetes.io/metadata.name": "kubeflow"},  # single-user Kubeflow
        # a multi-user profile namespace, labelled by Kubeflow's profile controller
        {"kubernetes.io/metadata.name": "alice", "app.kubernetes.io/part-of": "kubeflow-profile"},
        # any namespace a platform engineer opts in
        {"kubernetes.io/metadata.name": "ml-team", "review-classifier/spark-driver": "true"},
    ],
)
def test_spark_executors_reach_a_driver_in_kubeflow_or_a_profile_namespace(rendered, ns_labels):
    (policy,) = [d for d in rendered["manifests/spark-on-k8s"] if d["kind"] == "NetworkPolicy"]
    driver = {"pipelines.kubeflow.org/v2_component": "true"}
    ingress = [
        r for r in policy["spec"]["ingress"] if {"protocol": "TCP", "port": 7079} in r["ports"]
    ]
    egress = [
        r for r in policy["spec"]["egress"] if {"protocol": "TCP", "port": 7078} in r["ports"]
    ]
    assert any(_admits(r["from"], ns_labels, driver) for r in ingress)
    assert any(_admits(r["to"], ns_labels, driver) for r in egress)
    # and nothing else: an unlabelled namespace stays out
    other = {"kubernetes.io/metadata.name": "default"}
    assert not any(_admits(r["from"], other, driver) for r in policy["spec"]["ingress"])
    assert not any(_admits(r["to"], other, driver) for r in policy["spec"]["egress"])


def _chart_isvc(*sets: str) -> dict:
    extra = [a for s in ("storageUri=s3://b/models/m", *sets) for a in ("--set", s)]
    objs = helm_template("charts/review-classifier", None, "rc", *extra)
    (isvc,) = [d for d in objs if d["kind"] == "InferenceService"]
    return isvc


def test_chart_raw_deployment_scales_with_an_hpa_metric_and_drains_on_shutdown():
    raw = _chart_isvc("deploymentMode=RawDeployment", "shutdown.preStopSeconds=12")
    p = raw["spec"]["predictor"]
    assert (p["scaleMetric"], p["scaleTarget"]) == ("cpu", 80)  # not Knative's concurrency
    command = p["model"]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "python" and "time.sleep(12)" in command[-1]
    drain = {e["name"]: e["value"] for e in p["model"]["env"]}["REVIEW_CLASSIFIER_DRAIN_SECONDS"]
    assert p["terminationGracePeriodSeconds"] > 12 + int(drain)
    knative = _chart_isvc()["spec"]["predictor"]
    assert (knative["scaleMetric"], knative["scaleTarget"]) == ("concurrency", 32)
    assert "lifecycle" not in knative["model"] and "terminationGracePeriodSeconds" not in knative
    # the chart and the deploy step build the same Raw predictor
    from components.deploy.inferenceservice import ServiceSpec, build_inference_service

    built = build_inference_service(ServiceSpec(name="rc", storage_uri="s3://b/models/m",
                                                mode="RawDeployment", prestop_seconds=12))  # fmt: skip
    bp = built["spec"]["predictor"]
    assert bp["terminationGracePeriodSeconds"] == p["terminationGracePeriodSeconds"]
    assert (
        bp["model"]["lifecycle"] == p["model"]["lifecycle"]
        and bp["model"]["env"] == p["model"]["env"]
    )


def test_chart_refuses_a_knative_metric_in_raw_deployment():
    proc = run(tool("helm"), "template", "rc", "charts/review-classifier", "--set",
               "storageUri=s3://b/m", "--set", "deploymentMode=RawDeployment", "--set",
               "autoscaling.metric=concurrency", check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "autoscaling.metric concurrency is a Knative metric" in proc.stderr
