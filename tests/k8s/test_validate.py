"""Schema validation of every rendered object: built-in kinds with kubernetes-validate (strict),
custom resources with jsonschema against the upstream CRDs."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest

from tests.conftest import crd_schema

K8S_VERSION = "1.30.0"  # EKS standard support at the time of writing
CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("kubeflow.org/v1", "PyTorchJob"): "kubeflow.org_pytorchjobs.yaml",
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainer.kubeflow.org_trainjobs.yaml",
}


def validate(obj: dict, crds_dir) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRDS:
        schema = crd_schema(crds_dir, CRDS[key], obj["apiVersion"].split("/")[1])
        jsonschema.validate(obj, schema)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_rendered_object_is_valid(rendered, crds_dir):
    kinds = set()
    for source, objs in rendered.items():
        assert objs, f"{source} rendered nothing"
        for obj in objs:
            try:
                validate(obj, crds_dir)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
                pytest.fail(f"{source}: {obj['kind']}/{obj['metadata']['name']}: {e}")
            kinds.add(obj["kind"])
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "NetworkPolicy",
            "Deployment", "Service", "Pod", "ServingRuntime", "InferenceService",
            "PyTorchJob", "TrainJob"} <= kinds  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", ("spec", "replicas"), "two"),
        ("NetworkPolicy", ("spec", "podSelector", "matchLabelz"), {}),
        ("InferenceService", ("spec", "predictor", "minReplicas"), "one"),
        ("PyTorchJob", ("spec", "pytorchReplicaSpecs", "Master", "replicas"), "one"),
        ("TrainJob", ("spec", "trainer", "numProcPerNode"), "auto"),
    ],
)
def test_validation_catches_broken_objects(rendered, crds_dir, kind, path, value):
    obj = copy.deepcopy(next(o for objs in rendered.values() for o in objs if o["kind"] == kind))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(obj, crds_dir)
