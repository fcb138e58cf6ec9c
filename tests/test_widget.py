"""The widget build: committed, fresh, and small."""

from __future__ import annotations

from popin.cli import main
from popin.web.widget import (
    BUILT,
    CONSENT_BUILT,
    CONSENT_SOURCE,
    SIZE_LIMIT_GZIPPED,
    build,
    size_of,
)

# The consent glue is loaded only on pages with a consent tool: small, but apart.
CONSENT_LIMIT_GZIPPED = 1024


def test_built_widget_matches_its_source() -> None:
    assert BUILT.read_text() == build(), "static/popin.min.js is stale: run 'popin widget build'"
    assert CONSENT_BUILT.read_text() == build(CONSENT_SOURCE), (
        "static/popin-consent.min.js is stale: run 'popin widget build'")
    assert main(["widget", "build", "--check"]) == 0


def test_consent_glue_size_is_printed_and_bounded() -> None:
    size = size_of(CONSENT_BUILT.read_text())
    print(f"\nconsent glue: {size.minified} bytes minified, {size.gzipped} bytes gzipped")
    assert size.gzipped <= CONSENT_LIMIT_GZIPPED


def test_widget_size_is_printed_and_bounded() -> None:
    size = size_of(BUILT.read_text())
    # Shown with `pytest -s`, and recorded in the CI log by scripts/test.
    print(f"\nwidget: {size.minified} bytes minified, {size.gzipped} bytes gzipped")
    assert size.gzipped <= SIZE_LIMIT_GZIPPED
