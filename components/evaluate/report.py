"""The evaluation's HTML report: gate, confusion matrix, post-training bias, global explanation.

Images are inlined (base64), so the one file is the whole report wherever it is kept (KFP's HTML
artifact, MLflow, the output directory).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path


def _image(path: Path) -> str:
    if not path.exists():
        return ""
    return f"<img src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'/>"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def bias_table(facets: dict[str, dict], title: str, worst: dict | None) -> str:
    """One row per facet value: rows, accuracy, AD, DPPL, DI and recall per class."""
    if not facets:
        return ""
    labels = list(next(iter(facets.values()))["recall"])
    head = "".join(f"<th>recall {html.escape(n)}</th>" for n in labels)
    rows = []
    for value, m in facets.items():
        mark = " style='background:#fde0dd'" if worst and worst["value"] == value else ""
        recall = "".join(f"<td>{_fmt(m['recall'][n])}</td>" for n in labels)
        rows.append(f"<tr{mark}><td>{html.escape(value)}</td><td>{m['rows']}</td>"
                    f"<td>{_fmt(m['accuracy'])}</td><td>{_fmt(m['AD'])}</td>"
                    f"<td>{_fmt(m['DPPL'])}</td><td>{_fmt(m['DI'])}</td>{recall}</tr>")  # fmt: skip
    return (f"<h2>{html.escape(title)}</h2><table border=1 cellpadding=4><tr><th>value</th>"
            "<th>rows</th><th>accuracy</th><th>AD</th><th>DPPL</th><th>DI</th>"
            f"{head}</tr>{''.join(rows)}</table>")  # fmt: skip


def variants_table(variants: dict | None, serving: dict | None) -> str:
    """The serving variants side by side: figures against fp32, eligibility, file hash."""
    if not variants:
        return ""
    rows = []
    for name, v in variants["variants"].items():
        if "accuracy" not in v:
            rows.append(f"<tr><td>{html.escape(name)}</td><td colspan=5>"
                        f"{html.escape(v.get('verdict', ''))}</td></tr>")  # fmt: skip
            continue
        diff = v[f"{variants['metric']}_vs_fp32"]
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(v['accuracy'])}</td>"
                    f"<td>{_fmt(v['macro_f1'])}</td><td>{diff['difference']:+.4f} "
                    f"[{diff['low']:+.4f}, {diff['high']:+.4f}]</td>"
                    f"<td>{_fmt(v['agreement_with_fp32'])}</td>"
                    f"<td>{'eligible' if v['eligible'] else 'REFUSED'}</td>"
                    f"<td><code>{html.escape(v.get('sha256', '')[:16])}</code></td>"
                    "</tr>")  # fmt: skip
    chosen = "".join(
        f"<li>{html.escape(t)}: <b>{html.escape(c['variant'])}</b> ({html.escape(c['reason'])})"
        "</li>" for t, c in (serving or {}).items()
    )  # fmt: skip
    return (f"<h2>Serving variants</h2><p>Scored on the same {variants['rows']} test rows as "
            f"fp32; eligible when the lower end of the paired interval of (variant - fp32) on "
            f"{html.escape(variants['metric'])} lies above -{variants['tolerance']:.4f}.</p>"
            "<table border=1 cellpadding=4><tr><th>variant</th><th>accuracy</th>"
            f"<th>macro-F1</th><th>{html.escape(variants['metric'])} vs fp32 [CI]</th>"
            "<th>agreement</th><th>gate</th><th>sha256</th></tr>"
            f"{''.join(rows)}</table><ul>{chosen}</ul>")  # fmt: skip


def report_html(result: dict, out: Path) -> str:
    """The whole page for ``result`` (evaluation.json's content) and the PNGs under ``out``."""
    gate = result["gate"]
    checks = "".join(f"<li>{html.escape(c['detail'])}: {'pass' if c['passed'] else 'FAIL'}</li>"
                     for c in gate["checks"])  # fmt: skip
    parts = [f"<h1>{html.escape(gate['message'])}</h1><ul>{checks}</ul>",
             _image(out / "confusion_matrix.png"),
             variants_table(result.get("variants"), result.get("serving"))]  # fmt: skip
    bias = result.get("bias")
    if bias:
        worst = bias["worst_category"]
        summary = (f"worst product category: {html.escape(worst['value'])} ({worst['rows']} rows),"
                   f" accuracy {worst['accuracy']:.3f}, {worst['accuracy_gap']:+.3f} below the "
                   "other rows" if worst else
                   f"no product category has {bias['min_rows']} test rows")  # fmt: skip
        parts += [
            "<h2>Post-training bias</h2><p>Against all other test rows: AD = accuracy difference "
            "(others - this), DPPL = difference in positive proportions of predicted labels "
            f"(positive: {', '.join(bias['positive_labels'])}), DI = disparate impact; "
            f"{summary}.</p>",
            bias_table(bias["product_category"], "By product category", worst),
            bias_table(bias["review_length"], "By review length", bias["worst_length_bucket"]),
        ]
    explanation = result.get("global_explanation")
    if explanation:
        parts += [f"<h2>Global explanation</h2><p>Words with the largest mean attribution "
                  f"toward each predicted class, over {explanation['rows']} test reviews "
                  f"(integrated gradients, {explanation['steps']} steps).</p>",
                  _image(out / "global_explanation.png")]  # fmt: skip
    return f"<html><body style='font-family:sans-serif'>{''.join(parts)}</body></html>"
