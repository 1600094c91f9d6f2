"""KFP interface of the deploy stage: KServe rollout on a cluster, a local predictor otherwise."""

from kfp import dsl
from kfp.dsl import Input, Model

from components.common.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def deploy(
    model: Input[Model],
    model_storage_uri: str,
    registered_version: str,
    service_name: str = "review-classifier",
    target: str = "local",
    namespace: str = "review-classifier",
    canary_percent: int = 10,
    gpus: int = 1,
    min_replicas: int = 1,
    max_replicas: int = 4,
) -> str:
    """Serve the registered version; promote it to ``champion`` once it answers. Returns the URL."""
    from components.common.logs import configure_logging
    from components.common.settings import Settings
    from components.deploy.local import smoke_test, start_local_predictor
    from components.evaluate.registry import promote

    configure_logging()
    name = Settings.from_env().registered_model_name
    if target == "local":
        service = start_local_predictor(model.path, service_name)
        smoke_test(service.url)
        if registered_version:
            promote(name, registered_version)
        return service.url
    if target != "cluster":
        raise ValueError(f"target {target!r} is not one of: local, cluster")
    from kubernetes import client, config

    from components.deploy.inferenceservice import Rollout, ServiceSpec

    config.load_incluster_config()
    spec = ServiceSpec(
        name=service_name, storage_uri=model_storage_uri, namespace=namespace, gpus=gpus,
        min_replicas=min_replicas, max_replicas=max_replicas, canary_percent=canary_percent,
        model_version=registered_version,
    )  # fmt: skip
    result = Rollout(client.CustomObjectsApi()).run(
        spec,
        smoke=lambda url: smoke_test(f"{url}/v1/models/{service_name}:predict"),
        on_promote=lambda: promote(name, registered_version),
    )
    return f"{result.url}/v1/models/{service_name}:predict"
