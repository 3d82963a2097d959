"""The documentation's examples run as tests.

Convention: every fenced block opened with ```` ```python ```` in ``docs/*.md`` is executed; other languages
(``console``, ``text``, ``json``) are not. The blocks of one page run in order in one namespace, so a later block
can use what an earlier one defined. After a page's blocks have run, every ``test_*`` function they defined that
takes no arguments is called too (so a pytest example in the docs is exercised, not just defined). Examples run
in virtual time and assert their own results.

Relative links between pages are checked as well: the target page must exist, and so must the heading an anchor
points to. Bucket names in the docs must be names S3 accepts (3 to 63 characters), so that an example a reader
copies does not fail with a usage error.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$", re.M)
# A bucket named in an s3:// URL, a Bucket= argument or a "bucket" field of an event.
BUCKET = re.compile(
    r"s3://(?P<url>[^/\s`'\"]+)/" r'|Bucket="(?P<arg>[^"]*)"' r'|"bucket": "(?P<field>[^"]*)"'
)
BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ``python`` blocks of a page, each with the line number of its first line of code."""
    return [
        (text.count("\n", 0, m.start("body")) + 1, m.group("body"))
        for m in FENCE.finditer(text)
        if m.group("lang") == "python"
    ]


def slugify(title: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc extension) gives a heading."""
    title = re.sub(r"`([^`]*)`", r"\1", title)
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    title = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", title)


def anchors(text: str) -> set[str]:
    without_code = FENCE.sub("", text)
    return {slugify(m.group("title")) for m in HEADING.finditer(without_code)}


def test_the_docs_exist() -> None:
    names = {p.name for p in PAGES}
    assert {"index.md", "concepts.md", "time-budget.md", "simulator.md", "errors.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, code in python_blocks(text):
        # Pad with blank lines so that a traceback points at the line in the Markdown file.
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    for name, obj in list(namespace.items()):
        if name.startswith("test_") and callable(obj) and not _required_args(obj):
            obj()


def _required_args(fn: Any) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for m in LINK.finditer(text):
        target = m.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path) if path else page
        assert dest.exists(), f"{page.name}: link to missing page {target!r}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest.read_text(encoding="utf-8")), (
                f"{page.name}: link {target!r} names no heading of {dest.name}"
            )


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_bucket_names_are_valid(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for m in BUCKET.finditer(text):
        name = m.group("url") or m.group("arg") or m.group("field") or ""
        if name in ("BUCKET", "…"):  # a placeholder in a synopsis
            continue
        assert BUCKET_NAME.match(name), (
            f"{page.name}: {name!r} is not a valid S3 bucket name (3-63 characters)"
        )
