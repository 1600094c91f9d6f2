"""The baseline a BERT must beat: TF-IDF + logistic regression trained in the step."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

NAME = "tfidf-logreg"


def train_baseline(texts: list[str], labels: np.ndarray, seed: int = 42) -> Pipeline:
    """Word unigrams (as the book's BlazingText baseline), sublinear TF, L2 logistic regression."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 1), sublinear_tf=True, min_df=2, max_features=200_000),
        LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
    )
    return model.fit(texts, labels)


def baseline_probs(model: Pipeline, texts: list[str], num_labels: int) -> np.ndarray:
    """Class probabilities with a column for every label, seen in training or not."""
    probs = np.zeros((len(texts), num_labels))
    probs[:, model.classes_] = model.predict_proba(texts)
    return probs
