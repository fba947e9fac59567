from __future__ import annotations

from pathlib import Path

from core.catalog import JobCatalog
from core.management.commands.jobs import catalog_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_docs_jobs_md_matches_the_catalog() -> None:
    expected = catalog_markdown(JobCatalog.all())
    actual = (ROOT / "docs" / "jobs.md").read_text()
    assert actual == expected, "docs/jobs.md is stale: run `make docs` and commit it"
