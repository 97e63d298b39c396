"""validate.html: self-contained (inline styles, no links or scripts), escaped, and the
same bytes for the same results."""

from __future__ import annotations

from mlpipe.validate.summary import render_html

REPORT = {
    "success": False,
    "evaluated": 3,
    "passed": 1,
    "failed": 1,
    "warnings": 1,
    "results": [
        {"check": "schema", "severity": "error", "expectation": "ExpectTableColumnsToMatchSet",
         "description": "columns are exactly {id, label}", "success": True,
         "observed": ["id", "label"]},
        {"check": "pixel_range", "severity": "error", "expectation": "ExpectColumnMaxToBeBetween",
         "description": "pixel_max <= 100 <script>", "success": False,
         "unexpected_count": 7, "element_count": 50, "example_ids": ["train/0", "train/1"]},
        {"check": "class_balance", "severity": "warn", "expectation": "X",
         "description": "balanced", "success": False, "observed": 0.2},
    ],
}  # fmt: skip


def test_page_is_self_contained_escaped_and_stable():
    html = render_html(REPORT)
    assert html == render_html(REPORT)
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    for external in ("<link", "<script", "href=", "src=", "http"):
        assert external not in html
    assert "&lt;script&gt;" in html  # descriptions are escaped
    assert "<h1>Data validation FAILED</h1>" in html
    assert html.count('class="pass"') == 1 and html.count('class="fail"') == 1
    assert html.count('class="warn"') == 1
    assert "7 of 50 rows" in html and "train/0, train/1" in html
