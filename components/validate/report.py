"""One HTML report: our named checks and bias figures on top, the deepchecks results below."""

from __future__ import annotations

import html
import re
from pathlib import Path

from components.validate.constraints import CheckOutcome

_SCRIPT = re.compile(r"<script[^>]*>.*?</script>", re.DOTALL)


def drop_repeated_plotly(page: str) -> str:
    """Deepchecks inlines plotly.js once per figure (~4.6 MB each); keep only the first."""
    seen = False

    def keep(match: re.Match) -> str:
        nonlocal seen
        block = match.group(0)
        if "plotly.js v" not in block[:2000]:
            return block
        if seen:
            return ""
        seen = True
        return block

    return _SCRIPT.sub(keep, page)


def summary_html(outcomes: list[CheckOutcome], bias: dict, verdict: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(o.name)}</td><td>{o.source}</td>"
        f"<td style='color:{'green' if o.passed else 'red'}'>{'pass' if o.passed else 'FAIL'}</td>"
        f"<td>{html.escape(o.detail)}</td><td>{o.seconds:.2f}s</td></tr>"
        for o in outcomes
    )
    bias_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['rows']}</td><td>{v['CI']:.3f}</td>"
        f"<td>{v['DPL']:.3f}</td><td>{v['KL']:.4f}</td><td>{v['JS']:.4f}</td></tr>"
        for k, v in bias.items()
    )
    return (
        f"<section style='font-family:sans-serif'><h1>Data validation: {html.escape(verdict)}</h1>"
        "<h2>Checks</h2><table border=1 cellpadding=4><tr><th>check</th><th>source</th>"
        f"<th>result</th><th>detail</th><th>time</th></tr>{rows}</table>"
        "<h2>Pre-training bias per product_category (train split)</h2>"
        "<table border=1 cellpadding=4><tr><th>facet</th><th>rows</th><th>CI</th><th>DPL</th>"
        f"<th>KL</th><th>JS</th></tr>{bias_rows}</table></section><hr/>"
    )


def write_report(
    path: Path, deepchecks_html: str, outcomes: list[CheckOutcome], bias: dict, verdict: str
) -> Path:
    page = drop_repeated_plotly(deepchecks_html)
    head = summary_html(outcomes, bias, verdict)
    page = (
        re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + head, page, count=1)
        if "<body" in page
        else head + page
    )
    path.write_text(page)
    return path
