"""The repository stands alone: its docs link only to files (and headings) it has, never to documents
outside it, and the state the commands write with their default paths is ignored by git."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.demo.options import DEFAULT_OUT
from shared.site import CentralSettings, EdgeSettings, OpcUaSettings, load_site

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
# Words that point outside the repository: the old contract document and sibling directories.
OUTSIDE = re.compile(r"CONTRACTS|\.\./shared/|/work/")


def markdown_targets(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)  # code blocks
    return [a or b for a, b in LINK.findall(text)]


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    for line in text.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = match.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_a_doc_reaches_a_file_and_heading_of_the_repository(doc: Path) -> None:
    broken = []
    for target in markdown_targets(doc):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert broken == []


def test_no_doc_or_source_refers_to_documents_outside_the_repository() -> None:
    files = [*DOCS, *ROOT.glob("examples/*"), *ROOT.glob("pyproject.toml")]
    for package in ("shared", "central", "edge", "simulators", "lab", "ems", "tests"):
        files += (ROOT / package).rglob("*.py")
    this = Path(__file__).resolve()
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.resolve() != this and path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []


def default_state_paths() -> list[str]:
    """What the commands write relative to the working directory with the defaults and the example site."""
    example = load_site(ROOT / "examples" / "site.toml")
    paths = [str(DEFAULT_OUT / "summary.json")]
    for edge in (EdgeSettings(), example.edge):
        paths += [f"{edge.state_dir}/cab-1.sqlite3", f"{edge.state_dir}/cab-1.sqlite3-wal"]
    for central in (CentralSettings(), example.central):
        paths += [central.database_path, central.database_path + "-wal", central.database_path + "-shm"]
    for opcua in (OpcUaSettings(), example.opcua):
        paths += [f"{opcua.pki_dir}/own/central.key.pem", f"{opcua.pki_dir}/users.toml"]
    return [*paths, "var/log/central.log", "central.log.1"]


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
def test_state_written_with_default_paths_is_ignored_by_git() -> None:
    paths = default_state_paths()
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert sorted(result.stdout.split()) == sorted(paths)
