#!/usr/bin/env bash
# The upstream CRDs the tests validate against (../shared/crds or $CRDS_DIR), at the same pinned
# commits, for machines with internet: bash tools/k8s/fetch-crds.sh build/crds
set -euo pipefail
OUT=${1:-build/crds}
KSERVE=https://raw.githubusercontent.com/kserve/kserve/aaac4e294dae2c7b1aa1886447793f3aa1c30912/charts/kserve-crd/templates
TRAINER=https://raw.githubusercontent.com/kubeflow/trainer/3a3a1da8d5287f9f96e1b2d3be6a4b6ad756566d/manifests/base/crds
mkdir -p "$OUT"
for f in serving.kserve.io_inferenceservices.yaml serving.kserve.io_servingruntimes.yaml \
         serving.kserve.io_clusterservingruntimes.yaml; do
  curl -fsSL -o "$OUT/$f" "$KSERVE/$f"
done
curl -fsSL -o "$OUT/kubeflow.org_pytorchjobs.yaml" "$TRAINER/kubeflow.org_pytorchjobs.yaml"
# Kubeflow Trainer v2 (TrainJob, ClusterTrainingRuntime), release v2.3.0; also kept in the
# repository under tests/crds/ (SOURCE.md), so this refreshes them.
TRAINER_V2=https://raw.githubusercontent.com/kubeflow/trainer/658725bdae5c7e3a0854d93ac6ff492e109a22ab/manifests/base/crds
for f in trainer.kubeflow.org_trainjobs.yaml trainer.kubeflow.org_clustertrainingruntimes.yaml; do
  curl -fsSL -o "$OUT/$f" "$TRAINER_V2/$f"
done
echo "CRDs in $OUT; run the tests with CRDS_DIR=$OUT"
