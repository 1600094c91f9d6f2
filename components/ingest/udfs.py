"""The ingest job's JVM UDF: text cleaning in one pass (``jvm/CleanText.java``).

Cleaning is most of the ingest job's per-row work. Spark's own regex functions do it three scans
at a time, each decoding the UTF-8 string again (``benchmarks/ingest.py`` measured it); the UDF
does one. Where its jar cannot be had (no JDK to compile it), the job uses
``transforms.clean_text_column`` instead, which gives the same text, more slowly.

The jar is compiled once per source and Spark version, on first use, into the user's cache; an
image that ships it prebuilt names it with ``REVIEW_CLASSIFIER_UDF_JAR``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CLASS = "reviewclassifier.ingest.CleanText"
FUNCTION = "review_classifier_clean_text"
JAR_ENV = "REVIEW_CLASSIFIER_UDF_JAR"
SOURCE = "jvm/CleanText.java"


def source() -> Path:
    return Path(str(resources.files("components.ingest").joinpath(SOURCE)))


def _spark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _javac() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "javac").exists():
        return str(Path(java_home) / "bin" / "javac")
    return shutil.which("javac")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "review-classifier" / "jars"


def build_jar(target_dir: Path | None = None) -> Path:
    """Compile the UDF against this Spark's jars (once; the name carries both versions)."""
    import pyspark

    code = source().read_bytes()
    digest = hashlib.sha256(code + pyspark.__version__.encode()).hexdigest()[:12]
    jar = (target_dir or cache_dir()) / f"review-classifier-udfs-{digest}.jar"
    if jar.exists():
        return jar
    javac = _javac()
    if javac is None:
        raise FileNotFoundError("no javac (a JDK) to compile the ingest UDF")
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="udf-") as tmp:
        classes = Path(tmp) / "classes"
        classpath = str(_spark_jars() / "*")
        subprocess.run(
            [javac, "--release", "17", "-nowarn", "-cp", classpath, "-d", str(classes),
             str(source())],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        staged = Path(tmp) / jar.name
        jar_tool = Path(javac).with_name("jar")
        subprocess.run(
            [str(jar_tool), "cf", str(staged), "-C", str(classes), "."],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        shutil.move(str(staged), jar)  # whole or not at all, for concurrent first runs
    logger.info("compiled the ingest UDF into %s", jar)
    return jar


def find_jar() -> Path | None:
    """The UDF jar: the image's prebuilt one, or one compiled here; None without a JDK."""
    prebuilt = os.environ.get(JAR_ENV)
    if prebuilt:
        if Path(prebuilt).exists():
            return Path(prebuilt)
        logger.warning("%s=%s does not exist; compiling the UDF instead", JAR_ENV, prebuilt)
    try:
        return build_jar()
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or e
        logger.warning("ingest UDF unavailable (%s); cleaning with Spark's regexes", detail)
        return None


def register(spark: Any) -> bool:
    """Register the UDF with ``spark`` if its class is on the classpath; True when it is."""
    from pyspark.sql.types import StringType

    try:
        spark.udf.registerJavaFunction(FUNCTION, CLASS, StringType())
    except Exception as e:  # noqa: BLE001 - py4j/pyspark raise several types for a missing class
        logger.warning("ingest UDF not registered (%s); cleaning with Spark's regexes", e)
        return False
    return True


def clean_text_udf(col: Any) -> Any:
    """``transforms.clean_text_column``'s result, computed by the registered UDF."""
    from pyspark.sql import functions as F

    return F.call_udf(FUNCTION, col)


if __name__ == "__main__":  # images: python -m components.ingest.udfs /opt/udfs.jar
    import sys

    shutil.copy(build_jar(), sys.argv[1])
