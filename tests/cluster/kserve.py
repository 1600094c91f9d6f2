"""InferenceService status as KServe writes it, step by step (test-only code).

A small model of KServe v0.20.0's Serverless reconcile loop, enough to drive the deploy step's
rollout through the states a real cluster shows, in this order:

1. right after a spec change the status is the *old* one, Ready=True included, while
   ``metadata.generation`` moved: KServe copies back the Knative service status it read before
   its update (``ksvc_reconciler.go`` returns ``&existing.Status``);
2. Knative creates the revision: ``latestCreatedRevision`` is new, ``latestReadyRevision`` the
   old one, PredictorConfigurationReady/PredictorReady/Ready Unknown (knative/serving
   ``configuration_lifecycle.go`` ``SetLatestCreatedRevisionName``);
3. the revision is ready: traffic ``latest`` (tag routing) at ``canaryTrafficPercent``, ``prev``
   on ``latestRolledoutRevision`` for the rest (``ksvc_reconciler.go``), ``latestRolledout``
   and ``previousRolledout`` moved as ``PropagateStatus`` does
   (``pkg/apis/serving/v1beta1/inference_service_status.go``); or it failed: Ready False,
   reason ``RevisionFailed``.

Status shapes follow the examples of kserve's docs (``rollout-strategies/canary-example.md``).
URLs are the ones KServe writes, on Knative's default external domain (``example.com``): the
harness never rewrites them; inside its cluster only the cluster-local names resolve.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

CONDITIONS = ("IngressReady", "LatestDeploymentReady", "PredictorConfigurationReady",
              "PredictorReady", "PredictorRouteReady", "Ready", "RoutesReady", "Stopped")  # fmt: skip
INFO = {"LatestDeploymentReady", "PredictorConfigurationReady", "PredictorRouteReady",
        "RoutesReady", "Stopped"}  # fmt: skip


def _conditions(ready: str, reason: str = "", message: str = "") -> list[dict]:
    out = []
    for ctype in CONDITIONS:
        status = "False" if ctype == "Stopped" else "True"
        if ctype in ("LatestDeploymentReady", "PredictorConfigurationReady", "PredictorReady",
                     "Ready") and ready != "True":  # fmt: skip
            status = ready
        cond = {"type": ctype, "status": status, "lastTransitionTime": "2026-12-01T00:00:00Z"}
        if ctype in INFO:
            cond["severity"] = "Info"
        if status != "True" and ctype != "Stopped" and reason:
            cond.update(reason=reason, message=message)
        out.append(cond)
    return out


@dataclass
class KServeModel:
    """The controller's memory of one InferenceService (Serverless)."""

    name: str
    namespace: str
    domain: str = "example.com"
    healthy: dict[str, bool] = field(default_factory=dict)  # storageUri -> revision starts
    scaled_down: set[str] = field(default_factory=set)  # revisions Knative scaled to zero
    revisions: list[tuple[str, str]] = field(default_factory=list)  # (name, storageUri)
    ready_rev: str = ""
    rolled: str = ""
    prev_rolled: str = ""
    generation: int = 0
    phase: str = "idle"  # stale -> creating -> done
    status: dict = field(default_factory=dict)
    template: str = ""  # the predictor spec of the latest revision (see observe)

    def revision_name(self, n: int) -> str:
        return f"{self.name}-predictor-{n:05d}"

    def tag_url(self, tag: str) -> str:
        return f"http://{tag}-{self.name}-predictor.{self.namespace}.{self.domain}"

    def observe(self, obj: dict) -> None:
        """A spec the controller sees (after create or patch)."""
        generation = obj["metadata"].get("generation", self.generation + 1)
        if generation == self.generation:
            return
        self.generation = generation
        uri = obj["spec"]["predictor"]["model"]["storageUri"]
        self.spec = copy.deepcopy(obj["spec"])
        # Knative stamps a new Revision for every change of the Service's revision template
        # (knative/serving pkg/reconciler/configuration: one Revision per template generation):
        # KServe's predictor spec less the traffic split (a storageUri, an env var, a resource).
        template = json.dumps({k: v for k, v in obj["spec"]["predictor"].items()
                               if k != "canaryTrafficPercent"}, sort_keys=True)  # fmt: skip
        changed, self.template = template != self.template, template
        if not self.revisions or changed:
            self.revisions.append((self.revision_name(len(self.revisions) + 1), uri))
            self.phase = "stale" if self.status else "creating"
        else:
            self.phase = "route"

    def tick(self) -> dict:
        """The status after one more reconcile."""
        if self.phase == "stale":
            self.phase = "creating"
            return self.status  # the old status, Ready=True and all
        created, uri = self.revisions[-1]
        if self.phase == "creating":
            self.phase = "starting"
            self.status = self._status(created, "Unknown")
            return self.status
        if self.phase == "starting":
            if not self.healthy.get(uri, True):
                self.phase = "failed"
                self.status = self._status(created, "False", "RevisionFailed",
                                           f'Revision "{created}" failed with message: '
                                           "Container failed with: CrashLoopBackOff.")  # fmt: skip
                return self.status
            self.ready_rev = created
        if self.phase in ("starting", "route", "done"):
            self.phase = "done"
            self.status = self._status(created, "True")
        return self.status

    def _traffic(self) -> list[dict]:
        percent = self.spec["predictor"].get("canaryTrafficPercent")
        latest = {"tag": "latest", "revisionName": self.ready_rev, "latestRevision": True,
                  "url": self.tag_url("latest")}  # fmt: skip
        if percent is not None and self.rolled and percent < 100:
            prev = {"tag": "prev", "revisionName": self.rolled, "latestRevision": False,
                    "percent": 100 - percent, "url": self.tag_url("prev")}  # fmt: skip
            return [{**latest, "percent": percent}, prev]
        return [{**latest, "percent": 100}]

    def _status(self, created: str, ready: str, reason: str = "", message: str = "") -> dict:
        traffic = self._traffic() if self.ready_rev else []
        # PropagateStatus: the latest ready revision with 100% becomes the rolled-out one; a
        # rolled-out latest (== latest created) pinned below 100% with all the traffic still
        # on it ("rolled out, then rolled back") hands the role back to the previous one.
        full = next((t for t in traffic if t["revisionName"] == self.ready_rev
                     and t["latestRevision"] and t["percent"] == 100), None)  # fmt: skip
        if full and self.rolled != self.ready_rev:
            self.prev_rolled, self.rolled = self.rolled, self.ready_rev
        elif (self.rolled == self.ready_rev == created and self.prev_rolled and traffic
              and traffic[0]["percent"] < 100
              and sum(t["percent"] for t in traffic if t["revisionName"] == created) == 100):  # fmt: skip
            self.rolled = self.prev_rolled
            traffic = self._traffic()
        predictor = {
            "latestCreatedRevision": created, "latestReadyRevision": self.ready_rev,
            "latestRolledoutRevision": self.rolled, "traffic": traffic,
            "url": f"http://{self.name}-predictor.{self.namespace}.{self.domain}",
            "address": {"url": f"http://{self.name}-predictor.{self.namespace}.svc.cluster.local"},
        }  # fmt: skip
        if self.prev_rolled:
            predictor["previousRolledoutRevision"] = self.prev_rolled
        predictor = {k: v for k, v in predictor.items() if v}  # Go's omitempty
        return {
            "observedGeneration": self.generation,  # the Knative service's, in truth
            "url": f"http://{self.name}.{self.namespace}.{self.domain}",
            "address": {"url": f"http://{self.name}.{self.namespace}.svc.cluster.local"},
            "deploymentMode": "Knative",
            "conditions": _conditions(ready, reason, message),
            "components": {"predictor": predictor},
        }  # fmt: skip
