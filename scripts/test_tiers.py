"""Run the test tiers one after another, each timed against its budget (`make test`).

    .venv/bin/python scripts/test_tiers.py unit integration e2e -- [pytest options]

Each tier is one pytest run over `tests/<tier>` with the options given after `--`. Every
tier runs even when an earlier one fails; the exit status is the first failing tier's. A
tier slower than its budget (on 2 cores) gets a warning line, not a failure. With
`--junitxml=FILE` each tier writes its own report beside FILE, and FILE is then one
`<testsuites>` report holding the three suites, named by tier.
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

BUDGETS = {"unit": 60.0, "integration": 240.0, "e2e": 180.0}
"""Seconds each tier may take on 2 cores."""

NO_TESTS_COLLECTED = 5
ROOT = Path(__file__).resolve().parent.parent


def junit_path(args: list[str]) -> tuple[list[str], Path | None]:
    """The options without `--junitxml`, and the report it asked for."""
    rest: list[str] = []
    report: Path | None = None
    options = iter(args)
    for option in options:
        if option.startswith("--junitxml=") or option.startswith("--junit-xml="):
            report = Path(option.split("=", 1)[1])
        elif option in ("--junitxml", "--junit-xml"):
            report = Path(next(options))
        else:
            rest.append(option)
    return rest, report


def tier_report(report: Path, tier: str) -> Path:
    return report.with_name(f"{report.stem}-{tier}{report.suffix or '.xml'}")


def merge(report: Path, parts: dict[str, Path]) -> None:
    """One `<testsuites>` report of every tier's suites, each named by its tier."""
    merged = ET.Element("testsuites")
    for tier, part in parts.items():
        if not part.exists():
            continue
        root = ET.parse(part).getroot()
        for suite in [root] if root.tag == "testsuite" else list(root):
            suite.set("name", tier)
            merged.append(suite)
    ET.ElementTree(merged).write(report, encoding="utf-8", xml_declaration=True)


TIER_PATHS = {"e2e": ["tests/e2e", "clients/python/tests"]}
"""Tiers that also run tests kept elsewhere: the Python client's run against a real server."""


def run(tier: str, options: list[str], report: Path | None) -> tuple[int, float]:
    command = [sys.executable, "-m", "pytest", *TIER_PATHS.get(tier, [f"tests/{tier}"]), *options]
    if report is not None:
        command.append(f"--junitxml={tier_report(report, tier)}")
    print(f"\n== {tier} tier: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    code = subprocess.call(command, cwd=ROOT)
    return code, time.monotonic() - started


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    names = argv[:split]
    unknown = [n for n in names if n not in BUDGETS]
    if not names or unknown:
        print(f"usage: test_tiers.py {{{','.join(BUDGETS)}}}... -- [pytest options]")
        return 2
    options, report = junit_path(argv[split + 1 :])
    results: dict[str, tuple[int, float]] = {}
    for tier in names:
        results[tier] = run(tier, options, report)
    if report is not None:
        merge(report, {tier: tier_report(report, tier) for tier in names})

    print("\n== tiers (budgets on 2 cores)")
    for tier, (code, seconds) in results.items():
        verdict = "passed" if code in (0, NO_TESTS_COLLECTED) else f"failed (exit {code})"
        print(f"{tier:<12} {seconds:6.1f} s of {BUDGETS[tier]:4.0f} s  {verdict}")
    for tier, (_, seconds) in results.items():
        if seconds > BUDGETS[tier]:
            print(
                f"warning: the {tier} tier took {seconds:.1f} s, over its budget of "
                f"{BUDGETS[tier]:.0f} s"
            )
    codes = [code for code, _ in results.values()]
    if all(code == NO_TESTS_COLLECTED for code in codes):
        return NO_TESTS_COLLECTED
    return next((code for code in codes if code not in (0, NO_TESTS_COLLECTED)), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
