"""The README stays a short entry point: every page under docs/ is linked from it, and every
relative link in the README and docs/ points to a file that exists."""

import re

import pytest

from conftest import REPO

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PAGES = sorted((REPO / "docs").glob("*.md"))


def test_readme_is_short_and_links_every_docs_page():
  readme = (REPO / "README.md").read_text()
  assert len(readme.splitlines()) <= 350
  linked = {(REPO / target).resolve() for target in LINK.findall(readme)}
  assert {p.resolve() for p in PAGES} <= linked


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(page):
  for target in LINK.findall(page.read_text()):
    if "://" not in target:
      assert (page.parent / target).exists(), f"{page.name}: {target}"
