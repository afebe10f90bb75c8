"""The documents the repository names are in it: code, configs and docs point only at files a clone holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("handmesh", "tests", "configs", "demo", "data", "docs")  # folders whose text files may name documents
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt"}
DOC_REFERENCE = re.compile(r"\bdocs/[\w.-]+\.md\b")  # `docs/data.md`, named anywhere in a file
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target) and ![alt](target)
OUTSIDE = ("../" + "shared", "shared/" + "docs", "setup-" + "notes")  # the team's notes live outside the repository


def _text_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile"]
    for folder in SOURCES:
        files += [path for path in sorted((ROOT / folder).rglob("*")) if path.is_file() and path.suffix in SUFFIXES
                  and not any(part.startswith(".") or part in {"__pycache__", "mano", "mano_standin"}
                              for part in path.relative_to(ROOT).parts)]
    return [path for path in files if path.is_file()]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def test_every_named_document_is_in_the_repository():
    missing = sorted({(str(path.relative_to(ROOT)), name)
                      for path in _text_files() for name in DOC_REFERENCE.findall(_read(path))
                      if not (ROOT / name).is_file()})
    assert not missing, f"documents named but not in docs/: {missing}"


def test_nothing_points_outside_the_repository():
    found = sorted({str(path.relative_to(ROOT)) for path in _text_files()
                    if any(marker in _read(path) for marker in OUTSIDE) and path != Path(__file__).resolve()})
    assert not found, f"files that refer to documents outside the repository: {found}"


@pytest.mark.parametrize("page", ["README.md", "data/README.md", "demo/README.md",
                                  *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md")))])
def test_relative_links_in_markdown_resolve(page):
    source = ROOT / page
    broken = [target for target in MARKDOWN_LINK.findall(source.read_text(encoding="utf-8"))
              if "://" not in target and not target.startswith("mailto:") and not (source.parent / target).exists()]
    assert not broken, f"{page} links to missing files: {broken}"
