"""validate.html: the data gate's results as one self-contained page (styles inline, no
links, no timestamps), rendered from validate.json's dict.

GX's Data Docs are a site of many files with relative links and external styles: logged to
an MLflow run they render unstyled with dead links, and they change on every run (run
names, times). This page is what the MLflow run shows; the same inputs give the same bytes.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4}.pass{color:#137333}.fail{color:#b3261e;font-weight:600}"
    ".warn{color:#a05a00;font-weight:600}code{font-size:90%}"
)
OBSERVED_CHARS = 160


def _status(result: dict[str, Any]) -> tuple[str, str]:
    if result.get("success"):
        return "pass", "passed"
    return ("warn", "warned") if result.get("severity") == "warn" else ("fail", "FAILED")


def _observed(result: dict[str, Any]) -> str:
    parts = []
    if "unexpected_count" in result:
        parts.append(f"{result['unexpected_count']} of {result.get('element_count', '?')} rows")
    if "observed" in result:
        parts.append(json.dumps(result["observed"], sort_keys=True, default=str))
    if result.get("example_ids"):
        parts.append("e.g. " + ", ".join(map(str, result["example_ids"][:5])))
    if result.get("error"):
        parts.append(f"error: {result['error']}")
    text = "; ".join(parts)
    return text if len(text) <= OBSERVED_CHARS else text[: OBSERVED_CHARS - 3] + "..."


def render_html(report: dict[str, Any]) -> str:
    """The page for a validate.json dict."""
    verdict = "passed" if report.get("success") else "FAILED"
    head = (
        f"<h1>Data validation {verdict}</h1><p>{report.get('passed', 0)} of "
        f"{report.get('evaluated', 0)} expectations passed; {report.get('failed', 0)} failed, "
        f"{report.get('warnings', 0)} warning(s).</p>"
    )
    rows = []
    for r in report.get("results", []):
        css, word = _status(r)
        rows.append(
            f'<tr><td class="{css}">{word}</td><td>{escape(str(r.get("check", "")))}</td>'
            f"<td>{escape(str(r.get('severity', '')))}</td>"
            f"<td>{escape(str(r.get('description', '')))}"
            f"<br><code>{escape(str(r.get('expectation', '')))}</code></td>"
            f"<td><code>{escape(_observed(r))}</code></td></tr>"
        )
    table = (
        "<table><tr><th>result</th><th>check</th><th>severity</th><th>expectation</th>"
        "<th>observed</th></tr>" + "".join(rows) + "</table>"
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Data validation</title>'
        f"<style>{STYLE}</style></head><body>{head}{table}</body></html>\n"
    )
