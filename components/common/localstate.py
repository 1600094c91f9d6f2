"""The local stack's record of its processes (``stack.json``): read and registered by all.

The embedded default's servers (``pipelines/stack.py``) and the processes the deploy step starts
locally (``components/deploy/local.py``) write here, so ``make stack-down`` stops them all.
Development only: nothing on a cluster uses it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.errors import StackError
from components.common.processes import Service, process_alive, stop_process
from components.common.settings import Settings

LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
STATE_FILE = "stack.json"


@dataclass
class StackInfo:
    """What the stack exposes to clients; persisted as ``stack.json``."""

    state_dir: str
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def s3_endpoint(self) -> str:
        return self.services["s3"].url

    @property
    def mlflow_uri(self) -> str:
        return self.services["mlflow"].url

    def client_env(self, settings: Settings) -> dict[str, str]:
        """Environment variables that point clients (ours, boto3, MLflow) at this stack."""
        return {
            **LOCAL_CREDENTIALS,
            "AWS_REGION": settings.aws_region,
            "AWS_DEFAULT_REGION": settings.aws_region,
            "S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "state_dir": self.state_dir,
                "services": {k: asdict(v) for k, v in self.services.items()},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StackInfo:
        data = json.loads(text)
        services = {k: Service(**v) for k, v in data["services"].items()}
        return cls(state_dir=data["state_dir"], services=services)


class ProcessRegistry:
    """``stack.json`` under the state directory: what runs, where, and its pid."""

    def __init__(self, state_dir: str | Path | None = None, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.state_dir = Path(state_dir or self.settings.local_state_dir).resolve()
        self.state_file = self.state_dir / STATE_FILE

    def read(self) -> StackInfo | None:
        if not self.state_file.is_file():
            return None
        try:
            return StackInfo.from_json(self.state_file.read_text())
        except (ValueError, KeyError, TypeError) as e:
            raise StackError(f"{self.state_file} is corrupt ({e}); run `make stack-down`") from e

    def register(self, service: Service) -> None:
        """Record another long-lived process (e.g. the predictor) so ``down`` stops it."""
        info = self.read() or StackInfo(state_dir=str(self.state_dir))
        old = info.services.get(service.name)
        if old and old.pid != service.pid and process_alive(old.pid):
            stop_process(old.pid)
        info.services[service.name] = service
        self._write(info)

    def _write(self, info: StackInfo) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(info.to_json())
        tmp.replace(self.state_file)
