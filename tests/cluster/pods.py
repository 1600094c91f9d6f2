"""Run a Pod object's containers as local processes, as a kubelet would (test-only code).

What the object says is what runs, and nothing else:
- the image's config from its Dockerfile (:mod:`tests.cluster.images`: ENV, USER, WORKDIR,
  ENTRYPOINT), then ``command`` + ``args`` (with ``$(VAR)`` expansion) and ``workingDir``;
- env from ``envFrom`` ConfigMaps, then ``env`` (``value``, ``configMapKeyRef``,
  ``secretKeyRef``, ``fieldRef``), read from the real kube-apiserver the tests start, and the
  ``KUBERNETES_SERVICE_HOST``/``PORT`` every container gets;
- the securityContext's uid/gid over the image's USER (``runAsNonRoot`` refused for uid 0) and
  ``readOnlyRootFilesystem``, enforced with bubblewrap: the root is read-only, the pod's volumes
  (``emptyDir``, ``secret``, ``configMap``) are private directories of that pod only; the host's
  /tmp, $HOME and the repository's ``.local`` state are hidden, so no disk is shared between pods
  or with the tests;
- the service account's token, CA and namespace at ``/var/run/secrets/kubernetes.io/
  serviceaccount`` (what the ServiceAccount admission plugin and the kubelet do together,
  kubernetes v1.20 ``plugin/pkg/admission/serviceaccount/admission.go``), from the token Secret
  the real token controller made, unless ``automountServiceAccountToken`` is false;
- its own network namespace and address (:mod:`tests.cluster.network`), hostname, an
  /etc/hosts as the kubelet writes it and an /etc/resolv.conf naming the cluster DNS with the
  kubelet's search path (``<ns>.svc.cluster.local svc.cluster.local cluster.local``, ndots 5);
- IRSA: for a service account annotated ``eks.amazonaws.com/role-arn`` the env and projected
  token the EKS pod identity webhook injects (aws/amazon-eks-pod-identity-webhook,
  ``pkg/handler/handler.go``): AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE; STS is the local S3
  server's (moto answers AssumeRoleWithWebIdentity).

"Images" are this machine's environment: the image's ``/opt/venv`` is this virtual environment,
mounted there, and the checkout it is installed from is visible read-only at its own path (the
image's ``COPY`` of the source); KServe's storage-initializer image is the kserve-storage package
in its own environment (`make k8s-tools`), as that image is its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.images import Image, project_image

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("K8S_TOOLS_DIR", Path.home() / ".cache/review-classifier/k8s-tools"))
STORAGE_INITIALIZER = Image(
    "storage-initializer", {"PATH": "/usr/bin:/bin"}, None, "/",
    [str(TOOLS / "bin/storage-initializer")],
)  # fmt: skip
IRSA_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
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


def _root_binds() -> list[str]:
    """The host's root, read-only, as a tmpfs holding each top-level entry (so that a mount
    point the image lacks, such as KFP's ``/s3``, can be made; ``/`` is made read-only last)."""
    argv = ["--tmpfs", "/"]
    for entry in sorted(os.listdir("/")):
        path = f"/{entry}"
        if entry in ("dev", "proc", "tmp"):
            continue
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return argv


def image_of(container: dict) -> Image:
    name = container["image"].rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    if name == "storage-initializer":
        return STORAGE_INITIALIZER
    try:
        return project_image(name)
    except KeyError:
        raise PodConfigError(
            f"image {container['image']} is not one of the project's images"
        ) from None


@dataclass
class PodEnv:
    """What the kubelet reads from the API to start a pod's containers."""

    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    service_account: dict = field(default_factory=dict)
    sa_token: dict[str, bytes] | None = None
    api_service: tuple[str, int] | None = None  # the `kubernetes` Service: cluster IP, port
    dns_ip: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    image_check: str = ""


@dataclass
class PodRun:
    """One pod's containers; ``proc`` is the main container's process (bwrap)."""

    pod: dict
    ip: str
    netns: str
    workdir: Path
    env: PodEnv
    proc: subprocess.Popen | None = None
    restarts: int = 0
    last_state: dict = field(default_factory=dict)
    container_pid: int | None = None  # its PID 1, seen from the host

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.pod["metadata"]["namespace"]

    @property
    def container(self) -> dict:
        return self.pod["spec"]["containers"][0]

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.container['name']}.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- what the object says ---------------------------------------------------------------
    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        if path == "status.podIP":
            return self.ip
        if path == "spec.nodeName":
            return self.pod["spec"].get("nodeName", "")
        if path == "spec.serviceAccountName":
            return self.pod["spec"].get("serviceAccountName", "default")
        if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
            return meta[path.split(".")[1]]
        m = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        raise PodConfigError(f"fieldRef {path} is not supported by the harness")

    def environment(self, c: dict | None = None) -> dict[str, str]:
        c = c or self.container
        image = image_of(c)
        if (self.env.image_check and image is not STORAGE_INITIALIZER
                and c["image"] != self.env.image_check.format(name=image.name)):  # fmt: skip
            raise PodConfigError(f"image {c['image']} is not "
                                 f"{self.env.image_check.format(name=image.name)}")  # fmt: skip
        env = dict(image.env)
        env["HOSTNAME"] = self.pod["spec"].get("hostname") or self.name
        if self.env.api_service:  # every container: the `kubernetes` Service's address
            host, port = self.env.api_service
            env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=str(port))
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref is None:
                raise PodConfigError(f"envFrom {source} is not supported by the harness")
            if ref["name"] not in self.env.configmaps and not ref.get("optional"):
                raise PodConfigError(f"configmap {ref['name']} not found")
            env.update(self.env.configmaps.get(ref["name"], {}))
        for var in c.get("env", []):
            if "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            src = var["valueFrom"]
            if "configMapKeyRef" in src or "secretKeyRef" in src:
                secret = "secretKeyRef" in src
                ref = src["secretKeyRef" if secret else "configMapKeyRef"]
                data = (self.env.secrets if secret else self.env.configmaps).get(ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    kind = "secret" if secret else "configmap"
                    raise PodConfigError(f"{kind} {ref['name']} has no key {ref['key']}")
                value = data[ref["key"]]
                env[var["name"]] = value.decode() if isinstance(value, bytes) else value
            elif "fieldRef" in src:
                env[var["name"]] = self._field(src["fieldRef"]["fieldPath"])
            else:
                raise PodConfigError(f"env {var['name']}: {src} is not supported by the harness")
        role = (self.env.service_account.get("metadata", {}).get("annotations") or {}).get(
            "eks.amazonaws.com/role-arn"
        )
        if role:  # what the EKS pod identity webhook adds
            env.update({"AWS_ROLE_ARN": role, "AWS_STS_REGIONAL_ENDPOINTS": "regional",
                        "AWS_WEB_IDENTITY_TOKEN_FILE": f"{IRSA_TOKEN_DIR}/token"})  # fmt: skip
        env.update(self.env.extra_env)
        # the container runtime's default (containerd: the user's home in the image's
        # /etc/passwd, "/" for a uid it does not list, as 10001)
        env.setdefault("HOME", "/")
        return env

    def identity(self, c: dict | None = None) -> tuple[int, int]:
        c = c or self.container
        pod_ctx = self.pod["spec"].get("securityContext") or {}
        ctx = {**pod_ctx, **(c.get("securityContext") or {})}
        image_uid, image_gid = image_of(c).user or (0, 0)
        uid = ctx.get("runAsUser", image_uid)
        gid = ctx.get("runAsGroup", image_gid if "runAsUser" not in ctx else uid)
        if ctx.get("runAsNonRoot") and not uid:
            raise PodConfigError("container has runAsNonRoot and image will run as root")
        if not ctx.get("readOnlyRootFilesystem"):
            raise PodConfigError("the harness runs read-only-root containers only")
        return int(uid), int(gid)

    def _write_files(self, name: str, files: dict[str, bytes | str]) -> Path:
        path = self.workdir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        for key, value in files.items():
            (path / key).write_bytes(value if isinstance(value, bytes) else value.encode())
        return path

    def _etc_files(self, env: dict[str, str]) -> tuple[Path, Path]:
        spec, ns = self.pod["spec"], self.namespace
        hostname = spec.get("hostname") or self.name
        fqdn = f"{hostname}.{spec['subdomain']}.{ns}.svc.cluster.local " if spec.get("subdomain") else ""  # fmt: skip
        hosts = self.workdir / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{self.ip} {fqdn}{hostname}\n")
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {self.env.dns_ip}\n"
                          f"search {ns}.svc.cluster.local svc.cluster.local cluster.local\n"
                          "options ndots:5\n")  # fmt: skip
        return hosts, resolv

    def argv(
        self,
        env: dict[str, str],
        c: dict | None = None,
        command: list[str] | None = None,
        info_fd: int | None = None,
    ) -> list[str]:
        c = c or self.container
        uid, gid = self.identity(c)
        image = image_of(c)
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        (self.workdir / "volumes").mkdir(parents=True, exist_ok=True)
        hosts, resolv = self._etc_files(env)
        argv = [
            bwrap(), *_root_binds(), "--dev", "/dev", "--unshare-pid", "--proc", "/proc",
            "--unshare-uts", "--hostname", env["HOSTNAME"], "--unshare-ipc",
            "--tmpfs", "/tmp", "--tmpfs", str(Path.home()), "--ro-bind", str(hosts), "/etc/hosts",
            "--ro-bind", str(resolv), "/etc/resolv.conf",
        ]  # fmt: skip
        if Path(sys.base_prefix).is_relative_to(Path.home()):  # the image's Python (pyenv)
            argv += ["--ro-bind", sys.base_prefix, sys.base_prefix]
        if image is not STORAGE_INITIALIZER:
            # the image's files: its /opt/venv, and the source its package was installed from,
            # at its own path also when the checkout lives under /tmp or $HOME
            if not Path("/opt/venv").exists():  # the image's /opt holds its venv
                argv += ["--tmpfs", "/opt"]
            argv += ["--ro-bind", sys.prefix, "/opt/venv"]
        elif TOOLS.is_relative_to(Path.home()) or TOOLS.is_relative_to("/tmp"):
            argv += ["--ro-bind", str(TOOLS), str(TOOLS)]  # the "image"'s files
        mounted = set()
        mounts = list(c.get("volumeMounts", []))
        sa_files = self._service_account_files()
        if sa_files and not any(m["mountPath"] == SA_DIR for m in mounts):
            src = self._write_files("kube-api-access", sa_files)
            mounts.append({"name": "kube-api-access", "mountPath": SA_DIR, "readOnly": True,
                           "_src": src})  # fmt: skip
        # a mount point the image lacks (/mnt/models): the runtime creates it; here a tmpfs
        # over its first existing parent holds it, made read-only again below
        fresh = sorted({str(Path(m["mountPath"]).parent) for m in mounts
                        if not Path(m["mountPath"].replace("/var/run/", "/run/", 1)).exists()}
                       - {"/", "/tmp", "/dev", "/run", "/var/run"})  # fmt: skip
        # a mount point right under / needs no tmpfs: the root is one
        fresh = [p.replace("/var/run/", "/run/", 1) for p in fresh]
        argv += ["--tmpfs", "/run"]  # the container's own /run (/var/run), read-only below
        for parent in fresh:
            if not parent.startswith("/run/"):
                argv += ["--tmpfs", parent]
        for mount in mounts:
            src = mount.get("_src") or self._volume_source(volumes, mount)
            target = mount["mountPath"].replace("/var/run/", "/run/", 1)
            argv += ["--ro-bind" if mount.get("readOnly") else "--bind", str(src), target]
            mounted.add(mount["mountPath"])
        if image is not STORAGE_INITIALIZER:
            # the checkout last, over the pod's volumes: an emptyDir at /tmp (the serving
            # runtime's) must not hide a checkout that lives under /tmp
            argv += ["--ro-bind", str(ROOT), str(ROOT)]
            if (ROOT / ".local").exists():
                argv += ["--tmpfs", str(ROOT / ".local")]
        if "AWS_WEB_IDENTITY_TOKEN_FILE" in env:
            token = self.workdir / "irsa-token"
            token.write_text("harness-web-identity-token")
            path = env["AWS_WEB_IDENTITY_TOKEN_FILE"].replace("/var/run/", "/run/", 1)
            argv += ["--ro-bind", str(token), path]
        argv += ["--remount-ro", "/run", "--remount-ro", "/"]
        if image is not STORAGE_INITIALIZER and not Path("/opt/venv").exists():
            argv += ["--remount-ro", "/opt"]
        for parent in fresh:
            if not parent.startswith("/run/"):
                argv += ["--remount-ro", parent]
        if "/tmp" not in mounted:
            argv += ["--remount-ro", "/tmp"]
        cwd = c.get("workingDir") or image.workdir
        if command is None:
            # Kubernetes: command replaces ENTRYPOINT (and CMD), args replace CMD
            entry = c.get("command") or image.entrypoint
            args = c.get("args") or ([] if c.get("command") else image.cmd)
            command = [expand(a, env) for a in [*entry, *args]]
        if not command:
            raise PodConfigError(f"image {c['image']} has no ENTRYPOINT: the pod needs a command")
        if info_fd is not None:
            # the container's command is its PID 1, as under a container runtime: SIGTERM
            # reaches it alone, and only a handler it installs acts on it (the kernel's rule for
            # a namespace's init); bwrap says its host pid on the info fd
            argv += ["--as-pid-1", "--info-fd", str(info_fd)]
        argv += ["--unshare-user", "--uid", str(uid), "--gid", str(gid), "--die-with-parent",
                 "--chdir", cwd, "--", *command]  # fmt: skip
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def _volume_source(self, volumes: dict, mount: dict) -> Path:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise PodConfigError(f"volumeMount {mount['name']} has no volume")
        # a private directory per pod: a volume lives and dies with its pod
        # (owned by this user outside, which the user namespace maps to the pod's uid)
        if "emptyDir" in volume:
            src = self.workdir / "volumes" / mount["name"]
            src.mkdir(exist_ok=True)
            return src
        for kind, store in (("secret", self.env.secrets), ("configMap", self.env.configmaps)):
            if kind in volume:
                ref = volume[kind].get("secretName") or volume[kind].get("name")
                if ref not in store and not volume[kind].get("optional"):
                    raise PodConfigError(f"{kind} {ref} not found for volume {mount['name']}")
                return self._write_files(mount["name"], store.get(ref, {}))
        raise PodConfigError(f"volume {mount['name']}: only emptyDir, secret and configMap are "
                             "supported by the harness")  # fmt: skip

    def _service_account_files(self) -> dict[str, bytes]:
        spec = self.pod["spec"]
        sa_auto = self.env.service_account.get("automountServiceAccountToken")
        if spec.get("automountServiceAccountToken", sa_auto) is False or not self.env.sa_token:
            return {}
        return dict(self.env.sa_token)

    # ---- running -----------------------------------------------------------------------------
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
        read_end, write_end = os.pipe()
        try:
            argv = self.argv(env, info_fd=write_end)
            with open(self.log_path, "ab") as log:
                # the pod's environment only: nothing of the test process leaks in
                self.proc = subprocess.Popen(argv, env=env, stdout=log,  # noqa: S603
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, pass_fds=(write_end,))  # fmt: skip
            os.close(write_end)
            write_end = -1
            info = b""
            while chunk := os.read(read_end, 4096):  # closed by bwrap once written, or at exit
                info += chunk
                if b"}" in info:
                    break
            self.container_pid = json.loads(info).get("child-pid") if info else None
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        return self.proc

    def exec_hook(self, command: list[str], timeout: float) -> int | None:
        """A lifecycle ``exec`` handler: the command in the container's filesystem and network."""
        env = self.environment()
        try:
            return subprocess.run(self.argv(env, command=command), env=env,  # noqa: S603
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=timeout, check=False).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        """``sig`` to the container's PID 1 (what the runtime's StopContainer does); SIGKILL to
        the whole sandbox."""
        if self.running():
            try:
                if sig == signal.SIGKILL or not self.container_pid:
                    os.killpg(self.proc.pid, sig)
                else:
                    os.kill(self.container_pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        if self.running():
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir / "volumes", ignore_errors=True)
