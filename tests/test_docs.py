"""The documentation holds together: every relative Markdown link in README.md and docs/ resolves (the
file, and the heading when the link names an #anchor); the generated reference (docs/reference/ and the
rows/claims part of each docs/studies/<suite>.md) is what scripts/gen_reference.py writes from the code
today; every shipped suite has a study page; and no source, suite or doc file points at a tracker ticket
number (say what the thing is instead)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
TICKET = re.compile(r"\bissue\s*#?\d+", re.IGNORECASE)


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            yield i, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path):
    """(line number, target) of every link in prose (not in code blocks or inline code)."""
    for i, line in _prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(INLINE_CODE.sub("", line)):
            yield i, m.group(1)


def test_docs_exist():
    assert (REPO / "docs" / "index.md").is_file()
    assert len(DOCS) > 10


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    bad = []
    for line, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = doc if not file_part else (doc.parent / file_part).resolve()
        where = f"{doc.relative_to(REPO)}:{line}: {target}"
        if not dest.exists():
            bad.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_link_checker_sees_a_broken_link(tmp_path):
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Some `code` heading: yes\n\n## Again\n## Again\n")
    doc.write_text("[ok](b.md#some-code-heading-yes) [dup](b.md#again-1) [gone](c.md)\n"
                   "`[not a link](x.md)`\n```\n[in code](y.md)\n```\n[http](https://example.org)\n")
    assert [t for _, t in links(doc)] == ["b.md#some-code-heading-yes", "b.md#again-1", "c.md",
                                          "https://example.org"]
    assert {"some-code-heading-yes", "again", "again-1"} <= anchors(tmp_path / "b.md")


SOURCE_ROOTS = ("bench", "adapters", "scripts", "suites", "tests", "docs", ".ci", ".github")
SOURCE_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt"}


def _sources():
    yield from (REPO / n for n in ("README.md", "Makefile", "pyproject.toml") if (REPO / n).exists())
    for root in SOURCE_ROOTS:
        for p in sorted((REPO / root).rglob("*")):
            if p.is_file() and (p.suffix in SOURCE_SUFFIXES or p.name == "run") and "__pycache__" not in p.parts:
                yield p


def test_no_ticket_numbers_in_code_suites_or_docs():
    hits = []
    for p in _sources():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if TICKET.search(line):
                hits.append(f"{p.relative_to(REPO)}:{i}: {line.strip()[:120]}")
    assert not hits, ("say what the thing is, not which ticket asked for it:\n" + "\n".join(hits))


def test_every_suite_has_a_study_page_with_its_generated_part():
    sys.path.insert(0, str(REPO / "scripts"))
    from gen_reference import BEGIN, END

    missing = []
    for suite in sorted((REPO / "suites").glob("*.yaml")):
        page = REPO / "docs" / "studies" / f"{suite.stem}.md"
        if not page.exists():
            missing.append(f"{page.relative_to(REPO)}: no study page for suites/{suite.name}")
        elif BEGIN not in page.read_text() or END not in page.read_text():
            missing.append(f"{page.relative_to(REPO)}: no generated rows/claims part (add the two markers of "
                           "scripts/gen_reference.py, then run it)")
    assert not missing, "\n".join(missing)


def test_generated_reference_is_up_to_date():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_reference.py"), "--check"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
