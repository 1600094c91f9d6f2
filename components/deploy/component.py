"""KFP interface of the deploy stage: KServe rollout on a cluster, a local predictor otherwise."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components.common.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def deploy(
    model: Input[Model],
    evaluation: Input[Artifact],
    model_storage_uri: str,
    registered_version: str,
    target: str,
    service_name: str = "review-classifier",
    namespace: str = "",
    canary_percent: int = 10,
    deployment_mode: str = "Serverless",
    gpus: int = 1,
    min_replicas: int = 1,
    max_replicas: int = 4,
    min_agreement: float = 0.9,
    logger_url: str = "",
    address: str = "cluster-local",
    gateway_url: str = "",
    variant: str = "auto",
) -> str:
    """Serve the registered version, test it, promote it to ``champion``; returns the URL.

    ``target`` is ``local`` (a predictor process) or ``cluster`` (KServe, in ``namespace``,
    default: the KSERVE_NAMESPACE setting).

    The test: the evaluation's held-out reviews must be answered as the evaluation did, sent to
    ``address`` (cluster: ``cluster-local``, the default, for a step inside the cluster;
    ``external``, the status URLs; ``gateway``, ``gateway_url`` with the external Host header).

    ``variant``: ``auto`` serves the fastest variant the gate found eligible for the target
    (CPU, or GPU with ``gpus`` > 0 on a cluster); a name pins one. The held-out reviews are then
    held to what that variant answered in evaluation.
    """
    import json

    from components.common.logs import configure_logging
    from components.common.registry import promote
    from components.common.settings import Settings
    from components.deploy.checks import held_set_check, predict_url
    from components.serve.variants import choose_variant, held_labels

    configure_logging()
    name = Settings.from_env().registered_model_name
    evaluated = json.loads(open(evaluation.path).read())
    on_gpu = target == "cluster" and gpus > 0
    choice = choose_variant(evaluated.get("variants"), "gpu" if on_gpu else "cpu", variant)
    print(f"serving variant {choice.variant}: {choice.reason}")
    held = held_labels(evaluated.get("smoke_set") or [], choice.variant)

    def check(base: str, host: str | None = None) -> dict:
        return held_set_check(predict_url(base, service_name), held, min_agreement, host=host)

    if target == "local":
        # the embedded default only: the local stack and its processes are development tools
        from components.deploy.local import (
            fetch_registered,
            start_local_predictor,
            start_local_sink,
        )  # fmt: skip

        # the registered version's own bytes when there is one (as KServe serves on a cluster)
        source = (fetch_registered(model_storage_uri, name, registered_version,
                                   variant=choice.to_dict())
                  if model_storage_uri else model.path)  # fmt: skip
        # every inference is captured: a given sink URL, else the local sink (started or reused)
        sink = logger_url or start_local_sink().url
        service = start_local_predictor(str(source), service_name, logger_url=sink,
                                        variant=choice.variant)  # fmt: skip
        held_set_check(service.url, held, min_agreement)  # service.url: its predict URL
        if registered_version:
            promote(name, registered_version)
        return service.url
    if target != "cluster":
        raise ValueError(f"target {target!r} is not one of: local, cluster")
    from kubernetes import client, config

    from components.deploy.inferenceservice import Rollout, ServiceSpec

    config.load_incluster_config()
    spec = ServiceSpec(
        name=service_name, storage_uri=model_storage_uri, gpus=gpus,
        namespace=namespace or Settings.from_env().kserve_namespace,
        min_replicas=min_replicas, max_replicas=max_replicas, canary_percent=canary_percent,
        model_version=registered_version, variant=choice.variant, mode=deployment_mode,
        logger_url=logger_url,
        address=address, gateway_url=gateway_url,
    )  # fmt: skip
    rollout = Rollout(client.CustomObjectsApi(), apps=client.AppsV1Api(), core=client.CoreV1Api())
    result = rollout.run(spec, check=check, on_promote=lambda: promote(name, registered_version))
    return predict_url(result.url, service_name)
