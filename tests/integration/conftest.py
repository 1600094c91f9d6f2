"""A real local stack (moto S3 server + MLflow server) shared by the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from components.common.settings import Settings
from components.common.storage import S3Storage
from pipelines.stack import LocalStack, StackInfo


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[StackInfo]:
    """Start the stack once per session in a private state dir; point clients at it."""
    local = LocalStack(tmp_path_factory.mktemp("stack"), Settings.from_env({}, dotenv=None))
    info = local.up()
    env = info.client_env(local.settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield info
    finally:
        local.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def settings(stack: StackInfo) -> Settings:
    return Settings.from_env(dotenv=None)


@pytest.fixture(scope="session")
def storage(settings: Settings) -> S3Storage:
    return S3Storage(settings)
