"""README.md says what the code and the result files say: its generated sections match
their JSON (``bench/readme.py``), and its Layout table lists every module."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bench import readme

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_generated_sections_match_their_result_files() -> None:
    assert readme.generate(TEXT) == TEXT, "README.md is out of date: run `python -m bench.readme`"


def test_a_changed_result_changes_the_readme(tmp_path: Path) -> None:
    for spec in readme.SECTIONS.values():
        (tmp_path / spec.source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / spec.source, tmp_path / spec.source)
    latest = tmp_path / readme.LATEST
    results = json.loads(latest.read_text())
    cold = next(t for t in results["targets"] if t["figure"].startswith("cold start"))
    cold["measured"] = 0.123
    results["systems"]["local"]["workloads"]["W1"]["closed"]["64"]["rps"] = 31234.0
    latest.write_text(json.dumps(results))
    changed = readme.generate(TEXT, root=tmp_path)
    assert changed != TEXT
    assert "| 0.123 s |" in changed and "31,234 (" in changed
    assert readme.generate(changed, root=tmp_path) == changed  # rewriting is idempotent


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- bench:nosuch:start -->\n<!-- bench:nosuch:end -->\n", "without a registered section"),
        ("<!-- bench:other:start -->\n", "has no end marker"),
        ("<!-- bench:performance:start -->\n<!-- bench:performance:end -->\n", "appears twice"),
        ("<!-- bench:performance:end -->\n", "without its start"),
    ],
)
def test_bad_markers_are_errors(text: str, problem: str) -> None:
    with pytest.raises(readme.ReadmeError, match=problem):
        readme.generate(TEXT + text)


def test_check_fails_on_a_stale_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = TEXT.replace("| W1 no-op | 64 |", "| W1 no-op | 64 | 1 |", 1)
    assert stale != TEXT
    path = tmp_path / "README.md"
    path.write_text(stale)
    monkeypatch.setattr(readme, "README", path)
    assert readme.main(["--check"]) == 1
    assert path.read_text() == stale  # --check writes nothing
    assert readme.main([]) == 0 and path.read_text() == TEXT


def test_the_layout_lists_every_module() -> None:
    layout = TEXT.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `((?:graphserve|compiler|runtime)/\w+\.py)` \|", layout, re.M))
    modules = {
        str(p.relative_to(ROOT))
        for folder in ("graphserve", "compiler", "runtime")
        for p in (ROOT / folder).glob("*.py")
    }
    assert sorted(modules - listed) == [], "modules missing from the README's Layout table"
    assert sorted(listed - modules) == [], "the README's Layout table lists modules that do not exist"


def test_the_reliability_section_shows_a_failed_criterion(tmp_path: Path) -> None:
    for spec in readme.SECTIONS.values():
        (tmp_path / spec.source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / spec.source, tmp_path / spec.source)
    source = tmp_path / readme.SECTIONS["reliability"].source
    results = json.loads(source.read_text())
    assert (
        "**FAIL**"
        not in readme.generate(TEXT, root=tmp_path)
        .split("bench:reliability:start")[1]
        .split("bench:reliability:end")[0]
    )
    results["replica_kill"]["recovery_s"] = 9.5
    results["fuzz"]["server_errors"] = 1
    source.write_text(json.dumps(results))
    section = readme.generate(TEXT, root=tmp_path).split("bench:reliability:start", 1)[1]
    assert section.count("**FAIL**") == 2 and "answered 9.50 s after the kill" in section
