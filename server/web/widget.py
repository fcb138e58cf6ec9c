"""Builds the widget: `widget/popin.js` minified into `static/popin.min.js`, and the glue
it loads on pages that run a consent tool, `widget/consent.js` into
`static/popin-consent.min.js`.

The built file is committed, so serving needs no build step; the test suite checks
that it matches its source and stays small.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from ..config import PROJECT_ROOT, STATIC_DIR

SOURCE = PROJECT_ROOT / "widget" / "popin.js"
BUILT = STATIC_DIR / "popin.min.js"
CONSENT_SOURCE = PROJECT_ROOT / "widget" / "consent.js"
CONSENT_BUILT = STATIC_DIR / "popin-consent.min.js"
# (source, built file): what `popin widget build` makes.
SCRIPTS = ((SOURCE, BUILT), (CONSENT_SOURCE, CONSENT_BUILT))
# Above this the test suite fails.
SIZE_LIMIT_GZIPPED = 5 * 1024


@dataclass(frozen=True, slots=True)
class Size:
    minified: int
    gzipped: int


def minify(source: str) -> str:
    """Comments and spaces out, local names shortened (calmjs.parse, an ES5 parser in pure
    Python: no Node.js to install); the page's globals are left as they are."""
    try:
        from calmjs.parse import es5
        from calmjs.parse.unparsers.es5 import minify_print
    except ImportError:
        raise SystemExit("building the widget needs calmjs.parse: "
                         "pip install -e '.[test]'") from None
    minified: str = minify_print(es5(source), obfuscate=True, obfuscate_globals=False)
    return minified.strip() + "\n"


def build(source: Path = SOURCE) -> str:
    return minify(source.read_text(encoding="utf-8"))


def size_of(script: str) -> Size:
    data = script.encode()
    return Size(len(data), len(gzip.compress(data, compresslevel=9, mtime=0)))
