"""Pre-training bias per facet (product_category), as SageMaker Clarify reported it.

For a facet d (one category) against the rest a: class imbalance CI = (n_a - n_d)/(n_a + n_d),
difference in positive proportions of labels DPL = q_a - q_d, and the KL and JS divergence of
the label distribution of d from that of a.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def class_imbalance(n_a: int, n_d: int) -> float:
    return (n_a - n_d) / (n_a + n_d) if n_a + n_d else 0.0


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> float:
    p, q = np.asarray(p, float) + eps, np.asarray(q, float) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.asarray(p, float), np.asarray(q, float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def facet_bias(
    df: pd.DataFrame, facet: str, label: str, positive: set[int], labels: list[int]
) -> dict:
    """CI, DPL, KL and JS for every value of ``facet`` against all other rows."""
    out = {}
    for value in sorted(df[facet].dropna().unique()):
        d, a = df[df[facet] == value], df[df[facet] != value]
        q_d = d[label].isin(positive).mean() if len(d) else 0.0
        q_a = a[label].isin(positive).mean() if len(a) else 0.0
        p_d = d[label].value_counts().reindex(labels, fill_value=0).to_numpy()
        p_a = a[label].value_counts().reindex(labels, fill_value=0).to_numpy()
        out[str(value)] = {
            "rows": int(len(d)),
            "CI": class_imbalance(len(a), len(d)),
            "DPL": float(q_a - q_d),
            "KL": kl_divergence(p_d, p_a) if len(d) and len(a) else 0.0,
            "JS": js_divergence(p_d, p_a) if len(d) and len(a) else 0.0,
        }
    return out
