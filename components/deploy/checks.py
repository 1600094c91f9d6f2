"""Checks of a served model over HTTP (V1): ready, answers, and answers as the gate approved.

Used by the deploy step on both targets: KServe's ``latest`` tag (cluster-local address by
default, components/deploy/addresses.py) on a cluster, the local predictor process locally.
``host`` sends another Host header than the URL's: an ingress gateway routes on it.
"""

from __future__ import annotations

import json
import urllib.request

from components.common.errors import PlatformError


def predict_url(base: str, name: str) -> str:
    return f"{base}/v1/models/{name}:predict"


def model_ready(url: str) -> bool:
    """KServe's V1 model endpoint says ``"ready": true`` once load() and warm-up finished."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
            return bool(json.loads(r.read()).get("ready"))
    except (OSError, ValueError):
        return False


def v1_predict(url: str, texts: list[str], what: str = "smoke request",
               host: str | None = None) -> list[dict]:  # fmt: skip
    """One V1 request for ``texts``; raises with the reason unless each got a prediction."""
    body = json.dumps({"instances": texts}).encode()
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
    # urllib sends the given Host instead of the URL's (AbstractHTTPHandler.do_request_)
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:  # noqa: S310 (our URL)
            answer = json.loads(r.read())
    except OSError as e:
        raise PlatformError(f"{what} to {url} failed: {e}") from e
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    answered = isinstance(predictions, list) and len(predictions) == len(texts)
    if not answered or not all(isinstance(p, dict) and "star_rating" in p for p in predictions):
        raise PlatformError(f"{what} to {url} got no prediction: {str(answer)[:300]}")
    return predictions


def smoke_test(url: str, text: str = "Absolutely love it, simply perfect.",
               host: str | None = None) -> dict:  # fmt: skip
    """One V1 request; raises with the reason when the answer is not a prediction."""
    return v1_predict(url, [text], host=host)[0]


def held_set_check(url: str, held: list[dict], min_agreement: float = 0.9,
                   host: str | None = None) -> dict:  # fmt: skip
    """Send the held-out reviews in one V1 request and compare the answers with the evaluation.

    Their labels must agree with the evaluated model's on at least ``min_agreement`` of them (a
    model that loads but answers wrongly fails here). Without a held set (an evaluation from
    before it existed), one smoke request.
    """
    if not held:
        return {"agreement": None, "prediction": smoke_test(url, host=host)}
    predictions = v1_predict(url, [row["text"] for row in held], "held-set request", host)
    same = sum(p.get("label") == row["label"] for p, row in zip(predictions, held, strict=True))
    agreement = same / len(held)
    if agreement < min_agreement:
        raise PlatformError(
            f"{url} agrees with the evaluated model on {same} of {len(held)} held-out reviews "
            f"({agreement:.0%} < {min_agreement:.0%}): it does not serve the approved model"
        )
    return {"agreement": agreement, "answered": len(held)}
