"""The documentation's examples run as tests.

Convention: every fenced block opened with ```` ```python ```` in ``docs/**/*.md`` is executed; other languages
(``console``, ``text``, ``json``) are not, and neither are blocks indented inside an admonition. The blocks of one page run in order in one namespace, so a later block
can use what an earlier one defined. After a page's blocks have run, every ``test_*`` function they defined that
takes no arguments is called too (so a pytest example in the docs is exercised, not just defined). Examples run
in virtual time and assert their own results.

A block may instead hold only snippet includes (``--8<-- "examples/line_count.py"``, pymdownx.snippets, paths
relative to the repository's root): the site shows the file there, and the test checks that the file exists but
does not run it (``tests/test_examples.py`` tests the examples). A block mixing includes and code is an error.

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

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
IDS = [p.relative_to(DOCS).as_posix() for p in PAGES]

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$", re.M)
# A bucket named in an s3:// URL, a Bucket= argument or a "bucket" field of an event.
BUCKET = re.compile(
    r"s3://(?P<url>[^/\s`'\"]+)/" r'|Bucket="(?P<arg>[^"]*)"' r'|"bucket": "(?P<field>[^"]*)"'
)
BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
# A pymdownx.snippets include line: the file's content replaces it when the site is built.
SNIPPET = re.compile(r'^[ \t]*--8<--[ \t]+"(?P<path>[^"]+)"[ \t]*$', re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ``python`` blocks of a page to run, each with the line number of its first line of code.

    Blocks that only include files (snippets) are left out; a block that mixes includes and code raises.
    """
    blocks = []
    for m in FENCE.finditer(text):
        if m.group("lang") != "python":
            continue
        line, body = text.count("\n", 0, m.start("body")) + 1, m.group("body")
        if SNIPPET.search(body):
            code = SNIPPET.sub("", body)
            if code.strip():
                raise ValueError(f"line {line}: a block that includes a file must hold nothing else")
            continue
        blocks.append((line, body))
    return blocks


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
    assert {"getting-started.md", "comparison.md"} <= names
    assert (DOCS / "reference" / "index.md").exists()


def test_snippet_lines_are_recognised():
    text = '```python\n--8<-- "examples/line_count.py"\n```\n\n```python\nx = 1\n```\n'
    assert python_blocks(text) == [(6, "x = 1\n")]
    with pytest.raises(ValueError, match="nothing else"):
        python_blocks('```python\n--8<-- "examples/line_count.py"\nx = 1\n```\n')


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_included_files_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    # `ruff format` formats python blocks in Markdown, nested ones included, and turns an include into
    # `--8 < --"path"`: wrap nested includes in <!-- fmt:off --> ... <!-- fmt:on -->.
    assert "--8 < --" not in text, f"{page.name}: a snippet include was reformatted; wrap it in fmt:off/on"
    for m in SNIPPET.finditer(text):
        assert (ROOT / m.group("path")).is_file(), f"{page.name}: includes missing file {m.group('path')!r}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_examples_run(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(DOCS).with_suffix("").as_posix().replace("/", "_").replace("-", "_")
    namespace: dict[str, Any] = {"__name__": f"docs_{name}"}
    for line, code in python_blocks(text):
        # Pad with blank lines so that a traceback points at the line in the Markdown file.
        exec(compile("\n" * (line - 1) + code, str(page), "exec", dont_inherit=True), namespace)
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


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_relative_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for m in LINK.finditer(text):
        target = m.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path) if path else page
        assert dest.exists(), f"{page.name}: link to missing page {target!r}"
        assert DOCS in dest.resolve().parents, (
            f"{page.name}: link {target!r} leaves docs/, which the site does not publish: include the file "
            '(--8<-- "path") or name it in text'
        )
        dest_text = dest.read_text(encoding="utf-8") if dest.suffix == ".md" else ""
        # An API reference page's headings come from mkdocstrings (`::: module`): `mkdocs build --strict` checks
        # anchors into those (tests/test_docs_site.py).
        if anchor and dest.suffix == ".md" and not re.search(r"^::: ", dest_text, re.M):
            assert anchor in anchors(dest_text), (
                f"{page.name}: link {target!r} names no heading of {dest.name}"
            )


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_bucket_names_are_valid(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for m in BUCKET.finditer(text):
        name = m.group("url") or m.group("arg") or m.group("field") or ""
        if name in ("BUCKET", "…"):  # a placeholder in a synopsis
            continue
        assert BUCKET_NAME.match(name), (
            f"{page.name}: {name!r} is not a valid S3 bucket name (3-63 characters)"
        )
