"""The documentation site builds with ``mkdocs build --strict``, and every page is in its navigation.

The build runs once per session into a temporary directory (never into the repository). A broken link, a missing
anchor, a missing snippet file or an unresolvable API reference is a warning, and ``--strict`` turns warnings into
a failed build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages(nav: Any) -> list[str]:
    """The page paths a ``nav`` names, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return loaded


def test_every_page_is_in_the_nav():
    named = nav_pages(config()["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert sorted(pages - set(named)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(named) - pages) == [], "nav entries without a page"
    assert len(named) == len(set(named)), "a page is in the nav twice"


def test_the_site_is_strict_and_fetches_nothing():
    cfg = config()
    assert cfg.get("strict") is True
    assert cfg["theme"]["font"] is False  # no Google Fonts: CI reaches package registries only
    plugins = [next(iter(p)) if isinstance(p, dict) else p for p in cfg["plugins"]]
    assert "social" not in plugins and "mkdocstrings" in plugins


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_the_api_reference_documents_the_public_names(site: Path):
    top = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("recursive", "ChainConfig", "Run", "InMemoryLedger", "predictive", "RecurseLambdaError"):
        assert f'id="recurse_lambda.{name}"' in top, name
    local = (site / "reference" / "local" / "index.html").read_text(encoding="utf-8")
    assert 'id="recurse_lambda.local.Simulator"' in local
    s3 = (site / "reference" / "s3" / "index.html").read_text(encoding="utf-8")
    assert 'id="recurse_lambda.s3.LineReader.batches"' in s3  # inherited members are shown
    aws = (site / "reference" / "aws" / "index.html").read_text(encoding="utf-8")
    assert 'id="recurse_lambda.aws.DynamoDBLedger"' in aws
    for page in (top, local, s3, aws):
        assert ":class:<code>" not in page  # the docstrings' RST roles render as code (docs/_hooks.py)


def test_included_files_are_rendered(site: Path):
    large = (site / "large-objects" / "index.html").read_text(encoding="utf-8")
    assert "examples/line_count.py" in large and "ledger_from_env" in large
    deployment = (site / "deployment" / "index.html").read_text(encoding="utf-8")
    assert "RecursiveLoop" in deployment and "LedgerTable" in deployment
    assert not (site / "_hooks.py").exists()  # the build hook is not published
