from pathlib import Path

import pytest

from components.common.errors import ConfigurationError
from components.common.settings import ENV_VARS, Settings, read_dotenv


def test_defaults_without_environment():
    s = Settings.from_env({}, dotenv=None)
    assert s.aws_region == "us-east-1"
    assert s.s3_endpoint_url is None
    assert s.raw_uri == "s3://review-classifier/raw/amazon-reviews/"
    assert s.run_uri("abc") == "s3://review-classifier/runs/abc/"
    assert s.image("serve") == "ghcr.io/review-classifier/serve:0.1.0"


def test_environment_overrides_every_variable_it_names():
    env = {
        "AWS_REGION": "eu-west-1",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "S3_RETRY_MODE": "adaptive",
        "S3_MAX_ATTEMPTS": "3",
        "DATA_BUCKET": "my-data",
        "KFP_HOST": "https://kfp.example.com",
        "IMAGE_REGISTRY": "123.dkr.ecr.eu-west-1.amazonaws.com/rc",
        "IMAGE_TAG": "abc123",
    }
    s = Settings.from_env(env, dotenv=None)
    assert (s.aws_region, s.s3_endpoint_url, s.s3_retry_mode) == (
        "eu-west-1",
        "http://127.0.0.1:9000",
        "adaptive",
    )
    assert s.s3_max_attempts == 3
    assert s.raw_uri.startswith("s3://my-data/")
    assert s.image("train") == "123.dkr.ecr.eu-west-1.amazonaws.com/rc/train:abc123"


def test_every_env_var_maps_to_a_field():
    fields = set(Settings.__dataclass_fields__)
    assert {name for name, _, _ in ENV_VARS.values()} == fields


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("S3_RETRY_MODE", "legacy", "standard, adaptive"),
        ("S3_MAX_ATTEMPTS", "many", "not an integer"),
        ("S3_MAX_ATTEMPTS", "0", "not in 1..50"),
        ("DATA_BUCKET", "Bad_Bucket", "not a valid S3 bucket name"),
        ("S3_ENDPOINT_URL", "localhost:9000", "http(s)://"),
        ("RAW_PREFIX", "/raw", "relative and end with '/'"),
    ],
)
def test_invalid_values_fail_with_a_message_naming_the_variable(var, value, message):
    with pytest.raises(ConfigurationError, match=var) as info:
        Settings.from_env({var: value}, dotenv=None)
    assert message in str(info.value)


def test_dotenv_is_read_and_environment_wins(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nexport AWS_REGION='ap-south-1'\nDATA_BUCKET=from-file\n\n")
    s = Settings.from_env({"DATA_BUCKET": "from-env"}, dotenv=dotenv)
    assert s.aws_region == "ap-south-1"
    assert s.data_bucket == "from-env"


def test_dotenv_rejects_a_line_without_equals(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("AWS_REGION\n")
    with pytest.raises(ConfigurationError, match=r"\.env:1"):
        read_dotenv(dotenv)


def test_namespace_settings_reach_the_steps_from_the_platform_config_map():
    from components.common.settings import ENV_VARS, PLATFORM_ENV_KEYS

    # the deploy step reads KSERVE_NAMESPACE, the train launcher TRAINING_NAMESPACE: on a
    # cluster both come from the platform ConfigMap, whose keys are PLATFORM_ENV_KEYS
    for key in ("KSERVE_NAMESPACE", "TRAINING_NAMESPACE"):
        assert key in PLATFORM_ENV_KEYS
        assert key in ENV_VARS
