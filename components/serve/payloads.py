"""Turning V1 and V2 (Open Inference Protocol) payloads into texts, or a 4xx with a reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kserve import InferRequest
from kserve.errors import InvalidInput

V2_INPUT = "review_body"


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_instances: int = 256
    max_chars: int = 20_000


def _check_text(text: Any, where: str, limits: Limits) -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"{where}: review text is empty")
    if len(text) > limits.max_chars:
        raise InvalidInput(
            f"{where}: review text has {len(text)} characters; limit is {limits.max_chars}"
        )
    return text


def v1_body(payload: Any) -> Any:
    """A V1 body as KServe hands it over (bytes, text or already a dict), decoded."""
    if isinstance(payload, bytes | str):
        try:
            return json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"request body is not valid JSON: {e}") from e
    return payload


def texts_from_v1(payload: Any, limits: Limits) -> list[str]:
    """``{"instances": ["text", {"review_body": "text"}, ...]}`` to a list of texts."""
    payload = v1_body(payload)
    if not isinstance(payload, dict):
        raise InvalidInput('request body must be a JSON object with "instances"')
    if "instances" not in payload:
        raise InvalidInput('missing "instances": send {"instances": ["review text", ...]}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {type(instances).__name__}')
    if not instances:
        raise InvalidInput('"instances" is empty')
    if len(instances) > limits.max_instances:
        raise InvalidInput(
            f'"instances" has {len(instances)} items; limit is {limits.max_instances}'
        )
    texts = []
    for i, item in enumerate(instances):
        if isinstance(item, dict):
            if "review_body" not in item:
                raise InvalidInput(f'instances[{i}]: object has no "review_body"')
            item = item["review_body"]
        texts.append(_check_text(item, f"instances[{i}]", limits))
    return texts


def texts_from_v2(request: InferRequest, limits: Limits) -> list[str]:
    """One BYTES input tensor of shape [N] (or [N, 1]) to a list of texts."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"expected exactly 1 input tensor, got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {tensor.name!r} has datatype {tensor.datatype}; expected BYTES")
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidInput(f"input {tensor.name!r} has shape {shape}; expected [N] or [N, 1]")
    n = shape[0]
    if n < 1:
        raise InvalidInput(f"input {tensor.name!r} is empty")
    if n > limits.max_instances:
        raise InvalidInput(f"input {tensor.name!r} has {n} items; limit is {limits.max_instances}")
    try:
        values = tensor.as_numpy().reshape(-1).tolist()
    except (ValueError, TypeError) as e:
        raise InvalidInput(
            f"input {tensor.name!r}: data does not match its shape {shape}: {e}"
        ) from e
    if len(values) != n:
        raise InvalidInput(f"input {tensor.name!r}: shape says {n} items, data has {len(values)}")
    texts = []
    for i, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidInput(f"{tensor.name}[{i}]: not UTF-8 text") from e
        texts.append(_check_text(value, f"{tensor.name}[{i}]", limits))
    return texts
