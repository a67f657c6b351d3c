"""docs/ERRORS.md lists every ErrorInfo reason the code can raise, under the service that raises it,
with its status code; and lists nothing that no code raises. The scan: tests/support/error_reasons.py."""

from __future__ import annotations

import os
import re
from collections import defaultdict

from tests.support.error_reasons import REPO_ROOT, Raised, raised_reasons

CATALOGUE = os.path.join(REPO_ROOT, "docs", "ERRORS.md")
# Where a reason is raised -> the catalogue's section for it.
SECTIONS = {"ledger": "Ledger", "partners": "Partners", "settlement": "Settlement", "shared": "Every service"}
_ROW = re.compile(r"^\| `(?P<reason>[A-Z0-9_]+)` \| (?P<status>[^|]*) \|")


def catalogue() -> dict[str, dict[str, set[str]]]:
    """section title -> reason -> the status codes its row names."""
    sections: dict[str, dict[str, set[str]]] = defaultdict(dict)
    section = ""
    with open(CATALOGUE, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.startswith("## "):
                section = line[3:].strip()
            match = _ROW.match(line)
            if match and section:
                reason = match["reason"]
                assert reason not in sections[section], f"docs/ERRORS.md:{number}: {reason} twice in {section}"
                sections[section][reason] = set(re.findall(r"[A-Z_]{5,}", match["status"]))
    return sections


def _missing_row(raised: Raised, section: str) -> str:
    code = raised.code or "STATUS"
    return (
        f"{raised.where} raises reason {raised.reason}, which docs/ERRORS.md does not list under '## {section}'; "
        f"add a row: | `{raised.reason}` | {code} | <RPCs> | <metadata keys> | <what a caller should do> |"
    )


def test_every_raised_reason_has_a_catalogue_row_with_its_status():
    listed = catalogue()
    assert set(SECTIONS.values()) <= set(listed), f"docs/ERRORS.md needs the sections {sorted(SECTIONS.values())}"
    problems = []
    for raised in raised_reasons():
        section = SECTIONS[raised.area]
        codes = listed[section].get(raised.reason)
        if codes is None:
            problems.append(_missing_row(raised, section))
        elif raised.code and raised.code not in codes:
            problems.append(
                f"{raised.where} raises {raised.reason} as {raised.code}; its row under '## {section}' in "
                f"docs/ERRORS.md says {', '.join(sorted(codes))}: add {raised.code} to the status column"
            )
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_every_catalogue_row_is_raised_by_some_code():
    raised = defaultdict(set)
    for one in raised_reasons():
        raised[SECTIONS[one.area]].add(one.reason)
    stale = [
        f"docs/ERRORS.md lists {reason} under '## {section}', but no code under "
        f"{', '.join(f'services/{area}' for area, title in SECTIONS.items() if title == section)} raises it: "
        "remove the row (or move it to the section of the service that raises it)"
        for section, reasons in catalogue().items()
        if section in SECTIONS.values()
        for reason in reasons
        if reason not in raised[section]
    ]
    assert not stale, "\n".join(stale)


def test_the_readme_partners_examples_use_partners_words():
    """README "Calling it" calls partners: each reason it names must be one partners can send."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    section = readme.split("\n## Calling it", 1)[1].split("\n## ", 1)[0]
    words = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", section))
    words -= set(re.findall(r"`(COALITION_\w+)`", section))  # settings
    listed = catalogue()
    partners_words = set(listed["Partners"]) | set(listed["Every service"])
    assert words, "the README's partners example names no reason any more"
    assert words <= partners_words, f"README 'Calling it' names {sorted(words - partners_words)}, not partners' words"
