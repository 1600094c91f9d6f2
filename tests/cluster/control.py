"""The upstream controllers of the test cluster: kube-controller-manager and kube-scheduler.

Both v1.20.2, built from Debian's ``kubernetes`` source package with the API server
(``make k8s-tools``). The controller manager runs every default controller but the Job
controller (``--controllers=*,-job``): 1.20 has no Indexed Jobs (alpha in 1.21), which JobSet
and so Kubeflow Trainer rely on, so the harness plays the Job of a TrainJob instead of fighting
the upstream controller over its pods. It signs service-account tokens with the API server's
key (the token controller) and hands out the API server's certificate as their ``ca.crt``.
"""

from __future__ import annotations

from pathlib import Path

from components.common.processes import spawn, stop_process

CONTROLLERS = "*,-job"


def start_controllers(tool, workdir: Path, kubeconfig: Path, service_cidr: str) -> list[int]:  # noqa: ANN001
    """Start both; returns their pids (stop with :func:`stop_controllers`)."""
    cm = spawn("kube-controller-manager", [
        tool("kube-controller-manager"), f"--kubeconfig={kubeconfig}",
        f"--controllers={CONTROLLERS}", "--leader-elect=false", "--port=0", "--secure-port=0",
        f"--service-account-private-key-file={workdir / 'sa.key'}",
        f"--root-ca-file={workdir / 'pki' / 'apiserver.crt'}",
        "--use-service-account-credentials=false", f"--service-cluster-ip-range={service_cidr}",
        "--concurrent-gc-syncs=5", "--node-monitor-period=5s",
    ], workdir / "kube-controller-manager.log", {})  # fmt: skip
    scheduler = spawn("kube-scheduler", [
        tool("kube-scheduler"), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
        "--port=0", "--secure-port=0",
    ], workdir / "kube-scheduler.log", {})  # fmt: skip
    return [cm, scheduler]


def stop_controllers(pids: list[int]) -> None:
    for pid in pids:
        stop_process(pid)
