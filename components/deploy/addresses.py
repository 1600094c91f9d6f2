"""Which address the rollout sends its checks to: cluster-local (default), external or a gateway.

The deploy step runs in a pod. Knative's external domain (``example.com`` by default, or the
cluster's own) is meant for callers outside the cluster and often does not resolve inside it, so
by default the checks go to the cluster-local addresses:

- a Serverless traffic tag (the canary's ``latest``): Knative's route reconciler makes a
  placeholder Kubernetes Service per tag, named by config-network's ``tag-template``
  (knative/serving ``pkg/reconciler/route/resources/service.go`` ``MakeK8sPlaceholderService``;
  default ``{{.Tag}}-{{.Name}}``, knative/networking ``pkg/config/config.go``
  ``DefaultTagTemplate``), so the tag answers at
  ``http://<tag>-<isvc>-predictor.<ns>.svc.cluster.local`` (the Route is KServe's
  ``<isvc>-predictor`` Knative Service);
- the whole service: KServe's ``status.components.predictor.address.url``, else
  ``status.address.url`` (kserve ``pkg/apis/serving/v1beta1/inference_service_status.go``,
  ``Address`` is the cluster-local URL of the component / service).

``external`` uses the status URLs as written (``status.url``, the tag's ``url``), for a caller
outside the cluster or one where the external domain resolves. ``gateway`` sends every check to
an ingress gateway's base URL with the external host in the ``Host`` header, which is how the
Knative/Istio ingress picks the route (Knative docs, "Configuring a custom domain" / curl with
``-H "Host: ..."``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from components.common.errors import ConfigurationError, PlatformError

ADDRESSES = ("cluster-local", "external", "gateway")
DEFAULT_TAG_TEMPLATE = "{{.Tag}}-{{.Name}}"  # knative/networking pkg/config DefaultTagTemplate


@dataclass(frozen=True)
class Endpoint:
    """Where a check goes: ``url`` (scheme://host[:port]) and the Host header, if another."""

    url: str
    host: str | None = None


def validate_address(address: str, gateway_url: str, tag_template: str) -> None:
    """One-line errors for a bad address choice."""
    if address not in ADDRESSES:
        raise ConfigurationError(f"address {address!r} is not one of: {', '.join(ADDRESSES)}")
    if address == "gateway" and not urlsplit(gateway_url).netloc:
        raise ConfigurationError(
            f"address 'gateway' needs gateway_url, an http(s) base URL (got {gateway_url!r})"
        )
    if address != "gateway" and gateway_url:
        raise ConfigurationError(f"gateway_url {gateway_url!r} is only used with address 'gateway'")
    if "{{.Tag}}" not in tag_template:
        raise ConfigurationError(f"tag_template {tag_template!r} has no {{{{.Tag}}}}")


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _external(obj: dict, tag: str | None, revision: str | None) -> str:
    status = _status(obj)
    if tag is None:
        url = status.get("url") or ""
        if not url:
            raise PlatformError("the InferenceService has no status.url yet")
        return url
    predictor = (status.get("components") or {}).get("predictor") or {}
    for target in predictor.get("traffic") or []:
        if target.get("tag") == tag and revision in (None, target.get("revisionName")):
            if target.get("url"):
                return target["url"]
    raise PlatformError(
        f"revision {revision} has no `{tag}` tag URL in status.components.predictor.traffic "
        "(is tag routing, serving.kserve.io/enable-tag-routing, removed?)"
    )


def _cluster_local(obj: dict, namespace: str, name: str, tag: str | None,
                   tag_template: str) -> str:  # fmt: skip
    if tag is not None:
        route = f"{name}-predictor"  # KServe's Knative Service (and Route) of the predictor
        host = tag_template.replace("{{.Tag}}", tag).replace("{{.Name}}", route)
        return f"http://{host}.{namespace}.svc.cluster.local"
    status = _status(obj)
    predictor = (status.get("components") or {}).get("predictor") or {}
    for address in (predictor.get("address"), status.get("address")):
        if address and address.get("url"):
            return address["url"]
    raise PlatformError(
        f"InferenceService {namespace}/{name} has no cluster-local address in status "
        "(status.components.predictor.address.url, status.address.url)"
    )


def endpoint(obj: dict, namespace: str, name: str, address: str, tag: str | None = None,
             revision: str | None = None, gateway_url: str = "",
             tag_template: str = DEFAULT_TAG_TEMPLATE) -> Endpoint:  # fmt: skip
    """The address of traffic tag ``tag`` (routing to ``revision``), or of the whole service.

    A tag is checked to be in the status first whatever the address: it proves that Knative
    routes the tag to the revision under test.
    """
    external = _external(obj, tag, revision) if tag is not None else None
    if address == "cluster-local":
        return Endpoint(_cluster_local(obj, namespace, name, tag, tag_template))
    external = external or _external(obj, None, None)
    if address == "gateway":
        return Endpoint(gateway_url.rstrip("/"), host=urlsplit(external).netloc)
    return Endpoint(external)
