"""Every relative link in README.md and docs/*.md resolves.

A link `[text](path)` must name an existing file or directory (relative to the
page it is in), and `[text](path#anchor)` or `[text](#anchor)` must also name a
heading of that file, by GitHub's slug rules: lowercase, spaces to `-`,
punctuation dropped except `-` and `_`, and `-1`, `-2`, ... for repeated
headings. Links with a scheme (https:, mailto:) are not checked; neither is
anything inside code (fenced blocks and `inline code`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may carry a "title".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_pages(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and _
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line in _prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = seen.get(f"{slug}-{count}", 0) + 1
    return set(seen)


def links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def broken_links(pages: list[Path]) -> list[str]:
    problems = []
    for page in pages:
        for number, target in links(page):
            if not target or SCHEME.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.name}:{number}: ({target})"
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                problems.append(f"{where} no such file {resolved}")
                continue
            if anchor:
                if resolved.is_dir() or resolved.suffix.lower() != ".md":
                    problems.append(f"{where} an anchor into something that is not markdown")
                elif anchor not in anchors(resolved):
                    problems.append(f"{where} no heading #{anchor} in {resolved.name}")
    return problems


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = markdown_pages()
    assert all(page.exists() for page in pages)
    assert len(pages) > 1, "docs/*.md not found"
    assert sum(len(links(page)) for page in pages) > 20, "the link parser found (almost) nothing"
    assert broken_links(pages) == []


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("The state machine", "the-state-machine"),
        ("`POST /webhooks/codat`", "post-webhookscodat"),
        (
            "The authorization journey (Codat's Platform API)",
            "the-authorization-journey-codats-platform-api",
        ),
        ("Resilience: soak, faults, fuzz", "resilience-soak-faults-fuzz"),
        ("What a 2xx means if Redis loses writes", "what-a-2xx-means-if-redis-loses-writes"),
        ("snake_case and kebab-case", "snake_case-and-kebab-case"),
        ("A [linked](other.md) heading", "a-linked-heading"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_broken_files_and_anchors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    page = tmp_path / "README.md"
    other = tmp_path / "docs" / "other.md"
    other.write_text("# Other\n\n## A section\n\n## A section\n", encoding="utf-8")
    page.write_text(
        "# Title\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#a-section) [ok](docs/other.md#a-section-1)\n"
        "[ok](#title) [ok](https://example.com/x.md#nothing) `[code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n"
        "[gone](docs/missing.md) [bad anchor](docs/other.md#nope) [self](#nope-either)\n",
        encoding="utf-8",
    )
    problems = broken_links([page, other])
    assert len(problems) == 3, problems
    assert "docs/missing.md" in problems[0]
    assert "#nope" in problems[1]
    assert "#nope-either" in problems[2]
