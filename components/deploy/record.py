"""What the rollout has tested: a ConfigMap ``<isvc>-rollout`` beside the InferenceService.

A model version is served at 100% and made ``champion`` only after its check passed. Rollback
(``canaryTrafficPercent: 0``) and a failed first create leave the rejected ``storageUri`` in the
spec, so the spec alone cannot say whether what it names was ever tested: this record can.

It is not an annotation of the InferenceService because KServe copies the InferenceService's
annotations into the Knative revision template (kserve
``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``
``createKnativeService``) and the Deployment's pod template in RawDeployment: writing one after
a check would start a new, untested revision (or rolling update) of the same model. The
ConfigMap is owned by the InferenceService (deleted with it).

Keys: ``promoted-storage-uri`` / ``promoted-version`` / ``promoted-revision`` /
``promoted-variant`` (written after a passing check and the promotion),
``rejected-storage-uri`` / ``rejected-version`` /
``rejected-reason`` (written on rollback or a failed create).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

PROMOTED_URI, PROMOTED_VERSION, PROMOTED_REVISION = (
    "promoted-storage-uri", "promoted-version", "promoted-revision")  # fmt: skip
PROMOTED_VARIANT = "promoted-variant"  # the serving variant that passed the check
REJECTED_URI, REJECTED_VERSION, REJECTED_REASON = (
    "rejected-storage-uri", "rejected-version", "rejected-reason")  # fmt: skip


def record_name(service: str) -> str:
    return f"{service}-rollout"


class RolloutRecord:
    """Read and write the record through a CoreV1Api; ``core=None`` records nothing.

    Without a record every unchanged spec counts as untested (tested again): safe, not fast.
    """

    def __init__(self, core: Any | None) -> None:
        self.core = core

    def read(self, ns: str, service: str) -> dict[str, str]:
        if self.core is None:
            return {}
        try:
            cm = self.core.read_namespaced_config_map(record_name(service), ns)
        except Exception as e:  # noqa: BLE001 - the kubernetes client raises ApiException
            if getattr(e, "status", None) == 404:
                return {}
            raise
        data = cm.get("data") if isinstance(cm, dict) else cm.data
        return dict(data or {})

    def promoted(self, ns: str, service: str, storage_uri: str, variant: str | None = None) -> bool:
        """Whether ``storage_uri`` in ``variant`` passed its check and nothing failed since."""
        data = self.read(ns, service)
        return (data.get(PROMOTED_URI) == storage_uri and data.get(REJECTED_URI) != storage_uri
                and (data.get(PROMOTED_VARIANT) or "") == (variant or ""))  # fmt: skip

    def write(self, ns: str, service: str, owner: dict | None, data: dict[str, str]) -> None:
        if self.core is None:
            return
        name = record_name(service)
        body: dict[str, Any] = {
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"app.kubernetes.io/name": "review-classifier",
                                    "app.kubernetes.io/component": "serving"}},
            "data": data,
        }  # fmt: skip
        uid = ((owner or {}).get("metadata") or {}).get("uid")
        if uid:  # garbage-collected with the InferenceService
            body["metadata"]["ownerReferences"] = [{
                "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": uid}]  # fmt: skip
        try:
            self.core.patch_namespaced_config_map(name, ns, body)
        except Exception as e:  # noqa: BLE001 - the kubernetes client raises ApiException
            if getattr(e, "status", None) != 404:
                raise
            self.core.create_namespaced_config_map(ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                        **body})  # fmt: skip
        logger.info("rollout record %s/%s: %s", ns, name, data)
