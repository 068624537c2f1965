"""The README is a manual of at most ~200 lines, and every file that it, the docs or a code comment
names exists (the docs were a lab notebook once; comments then cited sections that had gone)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("docs/", "src/", "benchmarks/", "tools/", "training/", "tests/", "models/", "samples/", "docker/")
# `path` in text, repository-relative; globs and placeholders are not files
NAMED = re.compile(r"`((?:%s)[^`\s*<>{}]+?)`" % "|".join(re.escape(t) for t in TOP))
LINK = re.compile(r"\]\(([^)#\s]+)\)")
DOC_IN_CODE = re.compile(r"\b(docs/[\w./-]+\.(?:md|png|json|jsonl))")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_readme_is_a_manual_not_a_notebook():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert text.splitlines()[0] == "# QMedSAM"
    first = [line for line in text.splitlines() if line.startswith("make ")][:2]
    assert [line.split()[1] for line in first] == ["demo", "test"]


def test_every_file_the_docs_name_exists():
    missing = []
    for doc in _docs():
        text = doc.read_text(encoding="utf-8")
        for path in NAMED.findall(text):
            path = path.rstrip(".,:;)")
            if not (ROOT / path).exists() and not path.startswith(("models/fp32", "src/qmedsam/models")):
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
        for link in LINK.findall(text):
            if "://" not in link and not (doc.parent / link).exists():
                missing.append(f"{doc.relative_to(ROOT)}: link {link}")
    assert not missing


def test_every_doc_a_code_comment_cites_exists_and_none_cites_a_readme_section():
    missing, sections = [], []
    for folder in ("src", "benchmarks", "tools", "training", "docker"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            missing += [f"{path.relative_to(ROOT)}: {d}" for d in DOC_IN_CODE.findall(text) if not (ROOT / d).exists()]
            sections += [str(path.relative_to(ROOT))] if re.search(r"README, \"", text) else []
    assert not missing and not sections
