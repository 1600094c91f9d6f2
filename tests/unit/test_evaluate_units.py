import numpy as np
import pytest

from components.common.registry import storage_uri
from components.common.settings import Settings
from components.evaluate.baseline import baseline_probs, train_baseline
from components.evaluate.behaviour import directional, invariance
from components.evaluate.scoring import expected_calibration_error, score

LABELS = ["1", "2", "3", "4", "5"]


def test_score_against_hand_computed_values():
    y = np.array([0, 1, 2, 3, 4, 4])
    probs = np.eye(5)[[0, 2, 2, 3, 3, 4]] * 0.6 + 0.08  # predictions 0,2,2,3,3,4
    m = score(y, probs, LABELS, slices=np.array(["a", "a", "b", "b", "b", "b"]))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["within_one_star_accuracy"] == pytest.approx(1.0)  # misses are one star off
    assert m["confusion_matrix"][1] == [0, 0, 1, 0, 0]
    assert m["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["3"]["precision"] == pytest.approx(0.5)
    assert m["slices"] == {"a": {"accuracy": 0.5, "rows": 2}, "b": {"accuracy": 0.75, "rows": 4}}
    # confidence 0.68 everywhere, accuracy 4/6: one bin, |0.6667 - 0.68|
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.68))


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.0)


def test_baseline_is_trained_and_scores():
    rng = np.random.default_rng(0)
    words = {0: "awful terrible broken", 1: "fine okay average", 2: "great superb love"}
    labels = rng.integers(0, 3, size=300)
    texts = [f"{words[int(y)]} item number {i}" for i, y in enumerate(labels)]
    model = train_baseline(texts, labels)
    probs = baseline_probs(model, ["great love", "terrible broken"], num_labels=5)
    assert probs.shape == (2, 5) and probs[:, 3:].sum() == 0
    assert probs[0].argmax() == 2 and probs[1].argmax() == 0


def test_behaviour_checks_report_changes():
    def stable(texts):
        return np.tile(np.array([0.0, 0.0, 0.0, 0.1, 0.9]), (len(texts), 1))

    def swayed(texts):
        return np.array(
            [[0.9, 0, 0, 0, 0.1] if "broke" in t else [0, 0, 0, 0.1, 0.9] for t in texts]
        )

    assert invariance(stable, ["a", "b"])["passed"] is True
    assert directional(stable, ["a", "b"], LABELS)["passed"] is False
    result = directional(swayed, ["a", "b"], LABELS)
    assert result["passed"] is True and result["lowered_share"] == 1.0
    assert "skipped" in directional(stable, ["a"], ["negative", "neutral", "positive"])


def test_proxied_artifact_location_maps_to_the_s3_bucket():
    s = Settings.from_env({"MLFLOW_ARTIFACT_BUCKET": "ml-art"}, dotenv=None)
    assert storage_uri("mlflow-artifacts:/1/models/m-1/artifacts", s) == (
        "s3://ml-art/1/models/m-1/artifacts"
    )
    assert storage_uri("s3://x/y", s) == "s3://x/y"
