import zipfile
from pathlib import Path

import pytest
import yaml

from components.common.errors import ConfigurationError, InvalidInput
from components.common.settings import Settings
from components.common.text import clean_text
from components.ingest.config import IngestConfig
from components.ingest.inputs import check_raw_file, list_inputs
from components.ingest.spark import (
    IRSA_PROVIDER,
    K8sOptions,
    ReadPath,
    build_spark_conf,
    choose_read_path,
)
from components.ingest.transforms import split_bounds

BAD = Path(__file__).resolve().parents[1] / "data" / "raw_bad"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Great &#34;gift&#34; card", 'Great "gift" card'),
        ("line one<br />line two<br/>three<BR>four", "line one line two three four"),
        ("a &amp; b &lt;br /&gt; c", "a & b c"),
        ("  tabs\tand\u0007bells\n\nand   spaces ", "tabs and bells and spaces"),
        ("zero\u200bwidth", "zero width"),
        ("", ""),
        (None, None),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("count", "expected"),
    [(100, (90, 95)), (14, (12, 13)), (3, (1, 2)), (2, (2, 2)), (0, (0, 0)), (1000, (900, 950))],
)
def test_split_bounds_keep_every_split_within_one_row(count, expected):
    assert split_bounds(count, (0.9, 0.05, 0.05)) == expected
    train_end, val_end = expected
    assert abs(train_end - 0.9 * count) <= 1 or count < 20


def test_local_spark_conf_has_ui_off_and_lenient_parsing():
    conf = build_spark_conf("local[2]", Settings.from_env({}, dotenv=None))
    assert conf["spark.master"] == "local[2]"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.sql.ansi.enabled"] == "false"
    assert conf["spark.sql.inMemoryColumnarStorage.compressed"] == "false"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == IRSA_PROVIDER
    assert "spark.kubernetes.container.image" not in conf


def test_endpoint_override_uses_path_style_and_no_irsa():
    settings = Settings.from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9000"}, dotenv=None)
    conf = build_spark_conf("local[*]", settings)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert "spark.hadoop.fs.s3a.aws.credentials.provider" not in conf


def test_k8s_master_sets_executor_image_namespace_and_resources():
    k8s = K8sOptions("registry/spark:abc", "ml", "spark-sa", executors=6, executor_cores=4,
                     executor_memory="16g", driver_host="10.1.2.3")  # fmt: skip
    conf = build_spark_conf("k8s://https://kubernetes.default.svc", Settings(), k8s)
    assert conf["spark.kubernetes.container.image"] == "registry/spark:abc"
    assert conf["spark.kubernetes.namespace"] == "ml"
    assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == "spark-sa"
    assert conf["spark.kubernetes.authenticate.executor.serviceAccountName"] == "spark-sa"
    # client mode: executors reach the driver (the step's pod) at its IP on fixed ports
    assert conf["spark.driver.host"] == "10.1.2.3"
    assert (conf["spark.driver.port"], conf["spark.blockManager.port"]) == ("7078", "7079")
    template = yaml.safe_load(Path(conf["spark.kubernetes.executor.podTemplateFile"]).read_text())
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert template["spec"]["containers"][0]["command"] == ["/opt/spark-executor.sh"]
    assert conf["spark.executor.instances"] == "6"
    assert conf["spark.executor.cores"] == "4"
    assert conf["spark.executor.memory"] == "16g"
    assert conf["spark.sql.shuffle.partitions"] == "200"
    with pytest.raises(ValueError, match="K8sOptions"):
        build_spark_conf("k8s://https://x", Settings())


def test_read_path_decision():
    assert choose_read_path("/data/raw", s3a_available=True) is ReadPath.LOCAL
    assert choose_read_path("s3://b/raw/", s3a_available=True) is ReadPath.S3A
    assert choose_read_path("s3://b/raw/", s3a_available=False) is ReadPath.STAGED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_mode": "stars"}, "star_rating, sentiment"),
        ({"split": (0.8, 0.1, 0.05)}, "sum to 1"),
        ({"split": (1.0, 0.0, 0.0)}, "positive"),
        ({"text_fields": ("product_title",)}, "review_body, review_headline"),
        ({"spark_master": "yarn"}, "local"),
    ],
)
def test_invalid_config_names_the_problem(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        IngestConfig(input="x", output="y", **kwargs)


def test_input_listing_skips_non_raw_files_and_versions_each_file():
    files = list_inputs(str(BAD / "rows"), None)
    names = sorted(Path(f.uri).name for f in files)
    assert "notes.txt" not in names and "expected.json" not in names
    assert len(names) == 4
    assert all(len(f.version) == 64 for f in files)


def test_file_checks_name_the_broken_file(tmp_path):
    assert check_raw_file(BAD / "rows" / "amazon_reviews_us_Empty_v1_00.tsv", "e") == "empty"
    assert check_raw_file(BAD / "rows" / "amazon_reviews_us_HeaderOnly_v1_00.tsv", "h") == (
        "header_only"
    )
    # only the header is read here: a gzip cut short further on is left to Spark's read
    assert check_raw_file(BAD / "truncated_gzip" / "amazon_reviews_us_Cut_v1_00.tsv.gz", "c") == (
        "ok"
    )
    not_gzip = tmp_path / "amazon_reviews_us_Fake_v1_00.tsv.gz"
    not_gzip.write_bytes(b"marketplace\tcustomer_id\n")
    with pytest.raises(InvalidInput, match=r"s3://b/Fake_v1_00.tsv.gz: unreadable gzip"):
        check_raw_file(not_gzip, "s3://b/Fake_v1_00.tsv.gz")
    with pytest.raises(InvalidInput, match="wrong header"):
        check_raw_file(BAD / "wrong_header" / "amazon_reviews_us_Swapped_v1_00.tsv", "w")
    with pytest.raises(InvalidInput, match="does not exist"):
        list_inputs("/nonexistent/raw", None)


def test_k8s_driver_host_defaults_to_the_pod_ip(monkeypatch):
    monkeypatch.setenv("POD_IP", "10.9.8.7")  # what the pipeline sets from status.podIP
    assert K8sOptions("registry/spark:abc").driver_host == "10.9.8.7"
    monkeypatch.delenv("POD_IP")
    assert K8sOptions("registry/spark:abc").driver_host is None


def test_udf_jar_is_compiled_once_per_source_and_spark_version(tmp_path):
    from components.ingest import udfs

    jar = udfs.build_jar(tmp_path)
    assert jar.exists() and jar.parent == tmp_path
    with zipfile.ZipFile(jar) as z:
        assert "reviewclassifier/ingest/CleanText.class" in z.namelist()
    built = jar.stat().st_mtime_ns
    assert udfs.build_jar(tmp_path) == jar and jar.stat().st_mtime_ns == built


def test_udf_jar_from_the_image_or_none_without_a_jdk(tmp_path, monkeypatch, caplog):
    from components.ingest import udfs

    prebuilt = tmp_path / "prebuilt.jar"
    prebuilt.write_bytes(b"PK")
    monkeypatch.setenv(udfs.JAR_ENV, str(prebuilt))
    assert udfs.find_jar() == prebuilt
    monkeypatch.delenv(udfs.JAR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert udfs.find_jar() is None
    assert "cleaning with Spark's regexes" in caplog.text


def test_spark_conf_puts_the_udf_jar_on_the_classpath():
    conf = build_spark_conf("local[2]", Settings.from_env({}, dotenv=None), jars=["/x/udf.jar"])
    assert conf["spark.jars"] == "/x/udf.jar"
    assert "spark.jars" not in build_spark_conf("local[2]", Settings.from_env({}, dotenv=None))


def test_driver_memory_reaches_the_jvm_and_bad_values_are_refused():
    conf = build_spark_conf("local[2]", Settings.from_env({}, dotenv=None), driver_memory="1536m")
    assert conf["spark.driver.memory"] == "1536m"
    assert "-XX:+UseParallelGC" in conf["spark.driver.extraJavaOptions"]
    with pytest.raises(ConfigurationError, match="driver_memory"):
        IngestConfig(input="in", output="out", driver_memory="lots")


def test_spark_read_failures_name_the_input_as_given():
    from components.ingest.failures import read_failure

    trace = (
        "An error occurred while calling o63.count.\n: org.apache.spark.SparkException: "
        "[FAILED_READ_FILE.NO_HINT] Encountered error while reading file "
        "file:///tmp/ingest-x/raw/00001-reviews.tsv.gz.  SQLSTATE: KD001\n"
        "\tat org.apache.spark.sql.errors.QueryExecutionErrors$.cannotReadFilesError(x.scala)\n"
        "Caused by: java.io.EOFException: Unexpected end of input stream\n\tat x.y(z.java)\n"
    )
    staged = {"/tmp/ingest-x/raw/00001-reviews.tsv.gz": "s3://bucket/raw/reviews.tsv.gz"}
    assert str(read_failure(Exception(trace), staged)) == (
        "s3://bucket/raw/reviews.tsv.gz: unreadable gzip "
        "(java.io.EOFException: Unexpected end of input stream)"
    )
    other = "boom\nCaused by: java.lang.OutOfMemoryError: Java heap space"
    assert str(read_failure(Exception(other), staged)) == (
        "Spark failed: java.lang.OutOfMemoryError: Java heap space"
    )


def test_a_disk_that_fills_while_staging_is_one_storage_error(tmp_path):
    import errno

    from components.common.errors import StorageError
    from components.ingest.inputs import InputFile, stage_inputs

    class FillingStorage:
        def download_file(self, uri, path):
            raise OSError(errno.ENOSPC, "No space left on device")

    files = [InputFile("s3://b/raw/a.tsv", 10, "etag")]
    with pytest.raises(StorageError, match=r"no space left in .*stage.*set TMPDIR"):
        stage_inputs(files, FillingStorage(), tmp_path / "stage")
