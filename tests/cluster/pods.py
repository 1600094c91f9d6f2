"""Run a Pod object's container as a local process, as a kubelet would (test-only code).

What the object says is what runs, and nothing else:
- ``command`` + ``args`` (with ``$(VAR)`` expansion), ``workingDir`` or the image's WORKDIR;
- env from ``envFrom`` ConfigMaps, then ``env`` (``value``, ``configMapKeyRef``, ``fieldRef``),
  read from the real kube-apiserver the tests start;
- the securityContext's uid/gid (``runAsNonRoot`` refused for uid 0) and
  ``readOnlyRootFilesystem``, enforced with bubblewrap: the root is read-only, the pod's
  ``emptyDir`` volumes (``/tmp``, ``/dev/shm``, ...) are private directories of that pod only;
  the host's /tmp, $HOME and the repository's ``.local`` state are hidden, so no disk is shared
  between pods or with the tests;
- its own loopback address (127.0.x.y), hostname, and an /etc/hosts with the pod and Service
  names it may resolve (cluster DNS);
- IRSA: for a service account annotated ``eks.amazonaws.com/role-arn`` the env and projected
  token the EKS pod identity webhook injects (aws/amazon-eks-pod-identity-webhook,
  ``pkg/handler/handler.go``): AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE; STS is the local S3
  server's (moto answers AssumeRoleWithWebIdentity).

"Images" are this machine's environment: the project's images run this checkout's code with
this virtual environment, as ``IMAGES`` says (their WORKDIR and PATH from images/*.Dockerfile).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
TOOLS = Path(os.environ.get("K8S_TOOLS_DIR", Path.home() / ".cache/review-classifier/k8s-tools"))
_PATH = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"}
# image name -> (WORKDIR, ENV, ENTRYPOINT) of images/<name>.Dockerfile, with this virtual
# environment standing for the image's /opt/venv; KServe's storage-initializer image is the
# kserve-storage package in its own environment (`make k8s-tools`), as that image is its own.
IMAGES = {
    "train": ("/tmp", _PATH, ["python", "-m", "torch.distributed.run", "-m", "components.train"]),
    "spark": ("/tmp", _PATH, []),
    "serve": ("/tmp", _PATH, ["python", "-m", "components.serve"]),
    "storage-initializer": (
        "/",
        {"PATH": "/usr/bin:/bin"},
        [str(TOOLS / "bin/storage-initializer")],
    ),
}
IRSA_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class PodConfigError(Exception):
    """What a kubelet reports as CreateContainerConfigError: the pod cannot start."""


def bwrap() -> str:
    tools = Path(
        os.environ.get("K8S_TOOLS_DIR", Path.home() / ".cache/review-classifier/k8s-tools")
    )
    path = tools / "bin" / "bwrap"
    if not os.access(path, os.X_OK):
        raise PodConfigError(f"bwrap is not installed in {path.parent}: run `make k8s-tools`")
    return str(path)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, others stay as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


@dataclass
class PodRun:
    """One pod's container, started with :meth:`start`; ``proc`` is the bwrap process."""

    pod: dict
    ip: str
    hosts: dict[str, str]
    configmaps: dict[str, dict[str, str]]
    workdir: Path
    service_account: dict = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    image_check: str = ""
    proc: subprocess.Popen | None = None
    restarts: int = 0
    last_state: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def container(self) -> dict:
        return self.pod["spec"]["containers"][0]

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.container['name']}.log"

    @staticmethod
    def image_name(container: dict) -> str:
        return container["image"].rsplit("/", 1)[-1].split(":")[0]

    # ---- what the object says ---------------------------------------------------------------
    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        if path == "status.podIP":
            return self.ip
        if path in ("metadata.name", "metadata.namespace"):
            return meta[path.split(".")[1]]
        m = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        raise PodConfigError(f"fieldRef {path} is not supported by the harness")

    def environment(self, c: dict | None = None) -> dict[str, str]:
        c = c or self.container
        image = self.image_name(c)
        if image not in IMAGES:
            raise PodConfigError(f"image {c['image']} is not one of the project's images")
        if (self.image_check and image != "storage-initializer"
                and c["image"] != self.image_check.format(name=image)):  # fmt: skip
            raise PodConfigError(f"image {c['image']} is not {self.image_check.format(name=image)}")
        env = dict(IMAGES[image][1])
        env["HOSTNAME"] = self.pod["spec"].get("hostname") or self.name
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref is None:
                raise PodConfigError(f"envFrom {source} is not supported by the harness")
            if ref["name"] not in self.configmaps and not ref.get("optional"):
                raise PodConfigError(f"configmap {ref['name']} not found")
            env.update(self.configmaps.get(ref["name"], {}))
        for var in c.get("env", []):
            if "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            src = var["valueFrom"]
            if "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                data = self.configmaps.get(ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodConfigError(f"configmap {ref['name']} has no key {ref['key']}")
                env[var["name"]] = data[ref["key"]]
            elif "fieldRef" in src:
                env[var["name"]] = self._field(src["fieldRef"]["fieldPath"])
            else:
                raise PodConfigError(f"env {var['name']}: {src} is not supported by the harness")
        role = (self.service_account.get("metadata", {}).get("annotations") or {}).get(
            "eks.amazonaws.com/role-arn"
        )
        if role:  # what the EKS pod identity webhook adds
            env.update({"AWS_ROLE_ARN": role, "AWS_STS_REGIONAL_ENDPOINTS": "regional",
                        "AWS_WEB_IDENTITY_TOKEN_FILE": f"{IRSA_TOKEN_DIR}/token"})  # fmt: skip
        env.update(self.extra_env)
        # the container runtime's default (containerd: the user's home in the image's
        # /etc/passwd, "/" for a uid it does not list, as 10001)
        env.setdefault("HOME", "/")
        return env

    def identity(self, c: dict | None = None) -> tuple[int, int]:
        pod_ctx = self.pod["spec"].get("securityContext") or {}
        ctx = {**pod_ctx, **((c or self.container).get("securityContext") or {})}
        uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup", ctx.get("runAsUser"))
        if ctx.get("runAsNonRoot") and not uid:
            raise PodConfigError("container has runAsNonRoot and image will run as root")
        if not ctx.get("readOnlyRootFilesystem"):
            raise PodConfigError("the harness runs read-only-root containers only")
        return int(uid or 0), int(gid or 0)

    def argv(self, env: dict[str, str], c: dict | None = None) -> list[str]:
        c = c or self.container
        uid, gid = self.identity(c)
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        (self.workdir / "volumes").mkdir(parents=True, exist_ok=True)
        hosts = self.workdir / "hosts"
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in self.hosts.items()]
        hosts.write_text("\n".join(lines) + "\n")
        argv = [
            bwrap(), "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid", "--proc", "/proc",
            "--unshare-uts", "--hostname", env["HOSTNAME"], "--unshare-ipc",
            "--tmpfs", "/tmp", "--tmpfs", str(Path.home()), "--ro-bind", str(hosts), "/etc/hosts",
        ]  # fmt: skip
        if Path(sys.base_prefix).is_relative_to(Path.home()):  # the image's Python (pyenv)
            argv += ["--ro-bind", sys.base_prefix, sys.base_prefix]
        if (ROOT / ".local").exists():
            argv += ["--tmpfs", str(ROOT / ".local")]
        mounted = set()
        # a mount point the image lacks (/mnt/models): the runtime creates it; here a tmpfs
        # over its first existing parent holds it, made read-only again below
        fresh = sorted({str(Path(m["mountPath"]).parent) for m in c.get("volumeMounts", [])
                        if not Path(m["mountPath"]).exists()} - {"/", "/tmp", "/dev", "/run"})  # fmt: skip
        for parent in fresh:
            argv += ["--tmpfs", parent]
        for mount in c.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise PodConfigError(f"volumeMount {mount['name']} has no volume")
            if "emptyDir" not in volume:
                raise PodConfigError(f"volume {mount['name']}: only emptyDir is supported")
            # a private directory per pod: an emptyDir lives and dies with its pod
            src = self.workdir / "volumes" / mount["name"]
            # (owned by this user outside, which the user namespace maps to the pod's uid)
            src.mkdir(exist_ok=True)
            argv += ["--ro-bind" if mount.get("readOnly") else "--bind", str(src),
                     mount["mountPath"]]  # fmt: skip
            mounted.add(mount["mountPath"])
        argv += ["--tmpfs", "/run"]  # the container's own /run (/var/run), read-only below
        if "AWS_WEB_IDENTITY_TOKEN_FILE" in env:
            token = self.workdir / "irsa-token"
            token.write_text("harness-web-identity-token")
            path = env["AWS_WEB_IDENTITY_TOKEN_FILE"].replace("/var/run/", "/run/", 1)
            argv += ["--ro-bind", str(token), path]
        argv += ["--remount-ro", "/run"]
        for parent in fresh:
            argv += ["--remount-ro", parent]
        if "/tmp" not in mounted:
            argv += ["--remount-ro", "/tmp"]
        image = self.image_name(c)
        if image == "storage-initializer" and TOOLS.is_relative_to(Path.home()):
            argv += ["--ro-bind", str(TOOLS), str(TOOLS)]  # the "image"'s files
        cwd = c.get("workingDir") or IMAGES[image][0]
        command = [expand(a, env) for a in c.get("command") or IMAGES[image][2]]
        args = [expand(a, env) for a in c.get("args", [])]
        if not command:
            raise PodConfigError(f"image {c['image']} has no ENTRYPOINT: the pod needs a command")
        argv += ["--unshare-user", "--uid", str(uid), "--gid", str(gid), "--die-with-parent",
                 "--chdir", cwd, "--", *command, *args]  # fmt: skip
        return argv

    def run_init_containers(self, timeout: float = 300) -> tuple[str, int] | None:
        """Each init container to its end, in order (the kubelet's way); the failed one."""
        for c in self.pod["spec"].get("initContainers") or []:
            env = self.environment(c)
            with open(self.workdir / f"{c['name']}.log", "ab") as log:
                code = subprocess.run(self.argv(env, c), env=env, stdout=log,  # noqa: S603
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=timeout, check=False).returncode  # fmt: skip
            if code:
                return c["name"], code
        return None

    def start(self) -> subprocess.Popen:
        env = self.environment()
        argv = self.argv(env)
        with open(self.log_path, "ab") as log:
            # the pod's environment only: nothing of the test process leaks in
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        return self.proc

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir / "volumes", ignore_errors=True)
