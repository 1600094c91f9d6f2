#!/usr/bin/env bash
# `make deploy`: install the platform on the current kube context, in order.
#   0. prerequisites, installed by you beforehand (versions this project targets):
#      KServe 0.15+ (serverless mode; its CRDs are validated here at v0.20), Kubeflow Pipelines
#      2.x standalone (namespace `kubeflow`), Kubeflow Training Operator v1.9 (PyTorchJob),
#      and on EKS the NVIDIA device plugin on the GPU node group and an IRSA OIDC provider.
#   1. the kustomize overlay (namespace, service accounts, RBAC, ServingRuntime, NetworkPolicies,
#      the pipeline's ConfigMap), with the images of IMAGE_REGISTRY:IMAGE_TAG;
#   2. the MLflow chart into the same namespace;
#   3. prints how to run the pipeline against KFP and where the service will be.
set -euo pipefail
cd "$(dirname "$0")/../.."

OVERLAY=${OVERLAY:-eks}
NAMESPACE=${NAMESPACE:-review-classifier}
IMAGE_REGISTRY=${IMAGE_REGISTRY:?set IMAGE_REGISTRY}
IMAGE_TAG=${IMAGE_TAG:?set IMAGE_TAG}
MLFLOW_VALUES=${MLFLOW_VALUES:-}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
BUILD=${DEPLOY_BUILD_DIR:-build/deploy}

step() { printf '\n== %s\n' "$*"; }
fail() { echo "deploy: $*" >&2; exit 1; }

step "1/4 prerequisites on $($KUBECTL config current-context 2>/dev/null || echo '<no context>')"
for crd in inferenceservices.serving.kserve.io servingruntimes.serving.kserve.io; do
  $KUBECTL get crd "$crd" >/dev/null 2>&1 || fail "CRD $crd is missing: install KServe first"
done
if $KUBECTL get crd trainjobs.trainer.kubeflow.org >/dev/null 2>&1; then
  echo "Kubeflow Trainer v2 found: multi-node training runs as a TrainJob (train_launcher=trainjob)"
elif $KUBECTL get crd pytorchjobs.kubeflow.org >/dev/null 2>&1; then
  echo "Training Operator v1 found: run multi-node training with train_launcher=pytorchjob"
else
  echo "neither Kubeflow Trainer nor the Training Operator is installed: num_nodes > 1 will fail"
fi
$KUBECTL get namespace kubeflow >/dev/null 2>&1 \
  || fail "namespace kubeflow is missing: install Kubeflow Pipelines first"
echo "KServe, Training Operator and Kubeflow Pipelines CRDs/namespace found"

step "2/4 manifests/overlays/$OVERLAY with images $IMAGE_REGISTRY/*:$IMAGE_TAG"
[ -d "manifests/overlays/$OVERLAY" ] || fail "no overlay manifests/overlays/$OVERLAY"
rm -rf "$BUILD" && mkdir -p "$BUILD"
cat > "$BUILD/kustomization.yaml" <<YAML
# Written by tools/k8s/deploy.sh (make deploy); not tracked.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
bases:
  - $(realpath --relative-to="$BUILD" "manifests/overlays/$OVERLAY")
images:
  - name: ghcr.io/review-classifier/serve
    newName: $IMAGE_REGISTRY/serve
    newTag: "$IMAGE_TAG"
patchesStrategicMerge:
  - images-env.yaml
YAML
# One IMAGE_REGISTRY/IMAGE_TAG everywhere: the pipeline's pods and the training pods read them
# (the train image of a TrainJob, the code_version lineage tag).
for cm in kubeflow/review-classifier-env review-classifier/review-classifier-training-env; do
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  IMAGE_REGISTRY: "%s"\n  IMAGE_TAG: "%s"\n---\n' \
    "${cm#*/}" "${cm%/*}" "$IMAGE_REGISTRY" "$IMAGE_TAG"
done > "$BUILD/images-env.yaml"
$KUBECTL apply -k "$BUILD"

step "3/4 MLflow chart (release mlflow, namespace $NAMESPACE)"
values=()
[ -n "$MLFLOW_VALUES" ] && values=(-f "$MLFLOW_VALUES")
$HELM upgrade --install mlflow charts/mlflow --namespace "$NAMESPACE" "${values[@]}" \
  --set image.repository="$IMAGE_REGISTRY/mlflow" --set image.tag="$IMAGE_TAG"

step "4/4 next"
cat <<TEXT
Run the pipeline on Kubeflow Pipelines with the same images:
  KFP_HOST=https://<your KFP endpoint> make pipeline-run IMAGE_REGISTRY=$IMAGE_REGISTRY IMAGE_TAG=$IMAGE_TAG
Its deploy step creates the InferenceService review-classifier in $NAMESPACE; then:
  kubectl -n $NAMESPACE get inferenceservice review-classifier -o jsonpath='{.status.url}'
TEXT
