"""Fixtures for tests/k8s: the toolchain of `make k8s-tools`, rendered objects, a real API server.

Everything here renders and validates what a platform engineer applies (kustomize overlays,
Helm charts, the TrainJob and PyTorchJob templates) with real tools, and runs a real kube-apiserver + etcd
(here no kubelet, no controllers: a test writes the ``status`` a controller would; the cluster
tests add the upstream controllers and the harness of tests/cluster). The session's pod network
(:mod:`tests.cluster.network`) is made first, so that the API server's Service range is its own.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.common.errors import StackError
from components.common.processes import Service, free_port, spawn, stop_process, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(
    os.environ.get("K8S_TOOLS_DIR", Path.home() / ".cache" / "review-classifier" / "k8s-tools")
)
NAMESPACE = "review-classifier"

# What `make deploy` and the README tell people to render: (name, command).
KUSTOMIZATIONS = ("manifests/overlays/local", "manifests/overlays/eks", "manifests/serving",
                  "manifests/spark-on-k8s", "manifests/monitoring")  # fmt: skip
CHARTS = {
    "mlflow": ("charts/mlflow", None),
    "mlflow-eks": ("charts/mlflow", "charts/mlflow/ci/eks-values.yaml"),
    "review-classifier": ("charts/review-classifier", None),
    "review-classifier-eks": (
        "charts/review-classifier",
        "charts/review-classifier/ci/eks-values.yaml",
    ),
}


def tool(name: str) -> str:
    """Path of a toolchain binary; fails (does not skip) when `make k8s-tools` has not run."""
    path = TOOLS_DIR / "bin" / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not installed in {path.parent}: run `make k8s-tools`")
    return str(path)


def run(
    *cmd: str, env: dict | None = None, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run a command; on failure with ``check``, fail the test with its output."""
    full_env = {**os.environ, "PATH": f"{TOOLS_DIR / 'bin'}:{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(path: str) -> list[dict]:
    return load_all(run(tool("kubectl"), "kustomize", path).stdout)


# The Kubernetes version `helm template` renders for (without it helm 3.6 assumes 1.20); the
# same as test_validate's K8S_VERSION, EKS standard support. `helm install` asks the cluster.
KUBE_VERSION = "1.30.0"


def helm_template(chart: str, values: str | None, release: str = "rc", *extra: str) -> list[dict]:
    cmd = [tool("helm"), "template", release, chart, "--namespace", NAMESPACE,
           "--kube-version", KUBE_VERSION, *extra]  # fmt: skip
    if values:
        cmd += ["--values", values]
    return load_all(run(*cmd).stdout)


def cluster_spec_2x4():
    from components.train.cluster import ClusterSpec

    return ClusterSpec(name="rc-train-2x4", image="ghcr.io/review-classifier/train:0.1.0",
                       train_args=["--output-dir", "s3://b/run"], num_nodes=2,
                       procs_per_node=4, gpus_per_node=4)  # fmt: skip


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every object a user applies, by source: overlays, charts (default and EKS values), jobs."""
    out = {path: kustomize(path) for path in KUSTOMIZATIONS}
    out.update({name: helm_template(chart, values) for name, (chart, values) in CHARTS.items()})
    from components.train.pytorchjob import render_pytorchjob
    from components.train.trainjob import render_trainjob

    out["pytorchjob-2x4"] = [render_pytorchjob(cluster_spec_2x4())]
    out["trainjob-2x4"] = [render_trainjob(cluster_spec_2x4())]
    out["spark-executor-pod-template"] = load_all(
        (ROOT / "components" / "ingest" / "executor_pod_template.yaml").read_text()
    )
    out["manifests/examples"] = [
        d for f in sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
        for d in load_all(f.read_text())
    ]  # fmt: skip
    return out


# ---- a real API server ------------------------------------------------------------------------
@dataclass
class ControlPlane:
    """etcd + kube-apiserver on loopback, with an admin token and a kubeconfig."""

    url: str
    token: str
    kubeconfig: Path
    workdir: Path
    network: object = None  # tests.cluster.network.PodNetwork, None where none could be made

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None):
        return run(tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args,
                   check=check, stdin=stdin)  # fmt: skip

    def api_client(self, token: str | None = None):
        import urllib3
        from kubernetes import client

        # the local server's certificate is self-signed, on loopback only
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.verify_ssl = False
        cfg.api_key = {"authorization": f"Bearer {token or self.token}"}
        return client.ApiClient(cfg)


def for_apiserver_1_20(node):
    """An upstream CRD as a v1.20 server accepts it, with the same validation of our objects.

    Two features newer than 1.20 are removed: ``x-kubernetes-validations`` (CEL rules, 1.25+;
    none of them concern fields our manifests set) and ``default: ""`` on string fields, which
    1.20's defaulting check misreads as null (a list-map key that loses it becomes required).
    """
    if isinstance(node, dict):
        out = {
            k: for_apiserver_1_20(v) for k, v in node.items()
            if k != "x-kubernetes-validations" and not (k == "default" and v == "")
        }  # fmt: skip
        keys, items = node.get("x-kubernetes-list-map-keys"), out.get("items")
        if keys and isinstance(items, dict):  # a list-map key needs a default or `required`
            props = node["items"].get("properties", {})
            lost = [k for k in keys if props.get(k, {}).get("default") == ""]
            items["required"] = sorted({*items.get("required", []), *lost})
        return out
    if isinstance(node, list):
        return [for_apiserver_1_20(v) for v in node]
    return node


def _ready(readyz: str, token: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(readyz, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory, crds_dir) -> ControlPlane:
    """A kube-apiserver v1.20 with etcd, the upstream CRDs applied and the namespaces created."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    etcd, apiserver_bin = tool("etcd"), tool("kube-apiserver")
    work = tmp_path_factory.mktemp("controlplane")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (work / "sa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))  # fmt: skip
    (work / "sa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    from tests.cluster.network import NetworkError, PodNetwork

    try:
        network = PodNetwork().up()
        service_cidr = network.service_cidr
    except NetworkError as e:  # tests/k8s need none; the cluster tests fail with this reason
        network, service_cidr = None, "10.0.0.0/24"
        print(f"no pod network: {e}")
    # the `kubernetes` Service's endpoint: the node's address on the pod network, which the
    # cluster tests relay to this loopback server
    advertise = network.gateway if network else "127.0.0.1"
    token = "review-classifier-test-admin"
    (work / "tokens.csv").write_text(f"{token},admin,uid-admin,system:masters\n")
    client_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client_port}"
    url = f"https://127.0.0.1:{api_port}"
    env = dict(os.environ)
    etcd_pid = spawn("etcd", [
        etcd, "--name", "local", "--data-dir", str(work / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"local=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync",
    ], work / "etcd.log", env)  # fmt: skip
    pids = [etcd_pid]
    api = Service("kube-apiserver", 0, url, f"{url}/readyz", str(work / "apiserver.log"))
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
    }))  # fmt: skip
    try:
        api.pid = spawn("kube-apiserver", [
            apiserver_bin, f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            f"--secure-port={api_port}", f"--cert-dir={work / 'pki'}",
            f"--token-auth-file={work / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={work / 'sa.pub'}",
            f"--service-account-signing-key-file={work / 'sa.key'}",
            f"--service-cluster-ip-range={service_cidr}", f"--advertise-address={advertise}",
            "--disable-admission-plugins=ServiceAccount",
        ], Path(api.log), env)  # fmt: skip
        pids.append(api.pid)
        try:
            wait_healthy(api, 90, lambda health_url: _ready(health_url, token))
        except StackError as e:
            pytest.fail(f"{e}:\n{Path(api.log).read_text()[-3000:]}")
        deadline = time.monotonic() + 60
        cp = ControlPlane(url=url, token=token, kubeconfig=kubeconfig, workdir=work,
                          network=network)  # fmt: skip
        for crd in sorted(crds_dir.glob("*.yaml")):
            # `create`, not `apply`: the last-applied annotation would exceed 256 KiB.
            doc = for_apiserver_1_20(yaml.safe_load(crd.read_text()))
            cp.kubectl("create", "-f", "-", stdin=yaml.safe_dump(doc))
            name = doc["metadata"]["name"]
            query = '{.status.conditions[?(@.type=="Established")].status}'
            while cp.kubectl("get", f"crd/{name}", "-o", f"jsonpath={query}",
                             check=False).stdout != "True":  # fmt: skip
                if time.monotonic() > deadline:
                    pytest.fail(f"CRD {name} was never Established")
                time.sleep(0.2)
        for ns in ("kubeflow", NAMESPACE):
            cp.kubectl("create", "namespace", ns)
        yield cp
    finally:
        for pid in reversed(pids):
            stop_process(pid)
        if network is not None:
            network.down()
        shutil.rmtree(work / "etcd", ignore_errors=True)
