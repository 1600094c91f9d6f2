"""The Spark session: one function builds its configuration, one decides how S3 is read."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from components.common.settings import DEFAULT_NAMESPACE, Settings
from components.common.storage import is_s3_uri

logger = logging.getLogger(__name__)

S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# AWS SDK v2 provider (hadoop-aws 3.4): reads the IRSA web-identity token on EKS.
IRSA_PROVIDER = "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider"


class ReadPath(str, Enum):
    """How the raw files reach Spark."""

    LOCAL = "local"  # a local directory or file
    S3A = "s3a"  # Spark reads s3a:// itself (images with the hadoop-aws connector)
    STAGED = "staged"  # boto3 stages the objects to local disk first (no connector)


# The executors' pod template (Pod Security "restricted": non-root, no capabilities, seccomp).
EXECUTOR_POD_TEMPLATE = "executor_pod_template.yaml"
# Batch work on a few cores: the throughput collector costs less CPU than G1 here, and the free
# ratios hand unused heap back instead of holding the peak (benchmarks/ingest.py).
JAVA_OPTIONS = "-XX:+UseParallelGC -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30"
# Fixed driver ports, so that NetworkPolicies (manifests/spark-on-k8s) can allow them.
DRIVER_PORT, BLOCK_MANAGER_PORT = 7078, 7079


@dataclass(frozen=True)
class K8sOptions:
    """Spark-on-Kubernetes settings for a ``k8s://`` master.

    Client mode: the driver is the ingest step's own pod, the executors are pods in
    ``namespace`` running as ``service_account``.
    """

    image: str
    namespace: str = DEFAULT_NAMESPACE
    service_account: str = "review-classifier-spark"
    executors: int = 4
    executor_cores: int = 2
    executor_memory: str = "8g"
    # Where executors reach the driver: the pod IP (KFP sets POD_IP from the downward API).
    driver_host: str | None = field(default_factory=lambda: os.environ.get("POD_IP"))


def executor_pod_template() -> str:
    """Path of the executors' pod template shipped with the package."""
    from importlib import resources

    return str(resources.files("components.ingest").joinpath(EXECUTOR_POD_TEMPLATE))


def build_spark_conf(
    master: str = "local[*]",
    settings: Settings | None = None,
    k8s: K8sOptions | None = None,
    shuffle_partitions: int | None = None,
    driver_memory: str = "2g",
    ui: bool = False,
    jars: list[str] | None = None,
) -> dict[str, str]:
    """Every Spark setting the ingest job runs with, for a local or a Kubernetes master.

    ``jars`` go on the driver's and the executors' classpath (the job's UDF jar).
    """
    settings = settings or Settings.from_env()
    local = master.startswith("local")
    conf = {
        "spark.master": master,
        "spark.app.name": "review-classifier-ingest",
        "spark.ui.enabled": str(ui).lower(),
        # Invalid dates and numbers must become nulls we quarantine, not task failures.
        "spark.sql.ansi.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.shuffle.partitions": str(shuffle_partitions or (8 if local else 200)),
        "spark.driver.memory": driver_memory,
        "spark.driver.extraJavaOptions": JAVA_OPTIONS,
        "spark.executor.extraJavaOptions": JAVA_OPTIONS,
        "spark.sql.parquet.compression.codec": "snappy",
        # The parsed rows are cached once and read by several actions; compressing the cache
        # cost ~4 s per million rows on 2 cores for no gain (benchmarks/ingest.py).
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        # One input file per task: gzip cannot be split, and Spark then starts the largest
        # files first (it sorts them by size), which balances the cores far better than its
        # packing of several files into one task did (benchmarks/ingest.py).
        "spark.sql.files.openCostInBytes": str(128 * 2**20),
        # S3A (used only where the connector is on the classpath).
        "spark.hadoop.fs.s3a.impl": S3A_CLASS,
        "spark.hadoop.fs.s3a.fast.upload": "true",
        "spark.hadoop.fs.s3a.retry.limit": str(settings.s3_max_attempts),
        "spark.hadoop.fs.s3a.endpoint.region": settings.aws_region,
    }
    if jars:
        conf["spark.jars"] = ",".join(jars)
    if settings.s3_endpoint_url:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint_url
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            settings.s3_endpoint_url.startswith("https")
        ).lower()
    else:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = IRSA_PROVIDER
    if master.startswith("k8s://"):
        if k8s is None:
            raise ValueError("a k8s:// master needs K8sOptions (image, namespace, executors)")
        conf.update(
            {
                "spark.submit.deployMode": "client",
                "spark.kubernetes.container.image": k8s.image,
                "spark.kubernetes.namespace": k8s.namespace,
                "spark.kubernetes.authenticate.driver.serviceAccountName": k8s.service_account,
                "spark.kubernetes.authenticate.executor.serviceAccountName": k8s.service_account,
                "spark.kubernetes.executor.podTemplateFile": executor_pod_template(),
                "spark.driver.bindAddress": "0.0.0.0",
                "spark.driver.port": str(DRIVER_PORT),
                "spark.blockManager.port": str(BLOCK_MANAGER_PORT),
                "spark.kubernetes.executor.podNamePrefix": "ingest",
                "spark.executor.instances": str(k8s.executors),
                "spark.executor.cores": str(k8s.executor_cores),
                "spark.executor.memory": k8s.executor_memory,
                "spark.kubernetes.executor.request.cores": str(k8s.executor_cores),
                "spark.kubernetes.executor.limit.cores": str(k8s.executor_cores),
            }
        )
        if k8s.driver_host:
            conf["spark.driver.host"] = k8s.driver_host
    return conf


def create_session(conf: dict[str, str]) -> Any:
    """Start (or reuse) the Spark session with ``conf``; quiet Spark's own log."""
    import os
    import sys

    from pyspark.sql import SparkSession

    # Python workers must be this interpreter (the venv or image Python with our packages).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # Failures reach the caller as exceptions with a one-line summary; Spark's own ERROR lines
    # would repeat them as Java stack traces.
    spark.sparkContext.setLogLevel("FATAL")
    return spark


def has_s3a(spark: Any) -> bool:
    """True when the S3A filesystem class is on the Spark runtime's classpath."""
    try:
        spark.sparkContext._jvm.java.lang.Class.forName(S3A_CLASS)
    except Exception:  # noqa: BLE001 - py4j raises a generic Py4JJavaError for ClassNotFound
        return False
    return True


def choose_read_path(input_uri: str, s3a_available: bool) -> ReadPath:
    """Decide how the raw files reach Spark: locally, through s3a://, or staged by boto3."""
    if not is_s3_uri(input_uri):
        return ReadPath.LOCAL
    return ReadPath.S3A if s3a_available else ReadPath.STAGED


def to_s3a(uri: str) -> str:
    return "s3a://" + uri.split("://", 1)[1]
