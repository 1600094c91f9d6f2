import pytest

from components.common.errors import StorageError
from components.common.storage import S3Uri, is_s3_uri, parse_s3_uri


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://bucket/a/b.tsv.gz", "bucket", "a/b.tsv.gz"),
        ("s3://my.bucket-1/prefix/", "my.bucket-1", "prefix/"),
        ("s3://bucket", "bucket", ""),
        ("s3a://bucket/x", "bucket", "x"),
    ],
)
def test_parse_valid_uris(uri, bucket, key):
    assert parse_s3_uri(uri) == S3Uri(bucket, key)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("bucket/key", "not an S3 URI"),
        ("gs://bucket/key", "not an S3 URI"),
        ("s3:///key", "no bucket"),
        ("s3://Upper/key", "not a valid S3 bucket name"),
        ("s3://ab/key", "not a valid S3 bucket name"),
        ("s3://a..b/key", "not a valid S3 bucket name"),
        ("s3://bucket/a//b", "empty path segment"),
        ("s3://bucket/a\nb", "control character"),
    ],
)
def test_malformed_uris_are_rejected_with_a_reason(uri, reason):
    with pytest.raises(StorageError, match=reason):
        parse_s3_uri(uri)


def test_join_and_prefix():
    base = parse_s3_uri("s3://bucket/runs/r1")
    assert str(base.join("train", "part-0.parquet")) == "s3://bucket/runs/r1/train/part-0.parquet"
    assert base.prefix == "runs/r1/"
    assert S3Uri("bucket", "").prefix == ""
    assert is_s3_uri("s3://b/k") and not is_s3_uri("/tmp/k")
