"""Run the test tiers, each timed against its budget (`make test`).

    .venv/bin/python scripts/test_tiers.py unit integration e2e -- [pytest options]

Each tier is one pytest run over `tests/<tier>` with the options given after `--`. The
unit tier runs first, alone; the integration and end-to-end tiers then run side by side
(`--one-by-one` runs them in turn): most of their time is spent waiting on servers,
PostgreSQL and subprocesses, so two cores carry both, and each tier's output is printed
whole when it ends. Every tier runs even when another fails; the exit status is the first
failing tier's. A tier slower than its budget gets a warning line, not a failure (budgets
are for a tier running alone on 2 cores). With `--junitxml=FILE` each tier writes its own
report beside FILE, and FILE is then one `<testsuites>` report holding the three suites,
named by tier.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

BUDGETS = {"unit": 60.0, "integration": 300.0, "e2e": 300.0}
"""Seconds each tier may take alone on 2 cores."""

SIDE_BY_SIDE_BUDGET = 420.0
"""Seconds the integration and end-to-end tiers may take together, side by side: with the
installs and the unit tier, the whole of `.ci/run` stays well under ten minutes."""

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


SIDE_BY_SIDE = ("integration", "e2e")


def command_of(tier: str, options: list[str], report: Path | None) -> list[str]:
    command = [sys.executable, "-m", "pytest", *TIER_PATHS.get(tier, [f"tests/{tier}"]), *options]
    if report is not None:
        command.append(f"--junitxml={tier_report(report, tier)}")
    return command


def run(tier: str, options: list[str], report: Path | None) -> tuple[int, float]:
    command = command_of(tier, options, report)
    print(f"\n== {tier} tier: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    code = subprocess.call(command, cwd=ROOT)
    return code, time.monotonic() - started


def run_side_by_side(
    tiers: list[str], options: list[str], report: Path | None
) -> dict[str, tuple[int, float]]:
    """Run `tiers` at once, each into a file of its own, printed whole as it ends."""
    results: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        running = {}
        started = time.monotonic()
        for tier in tiers:
            command = command_of(tier, options, report)
            print(f"\n== {tier} tier (side by side): {' '.join(command[1:])}", flush=True)
            out = (Path(scratch) / f"{tier}.log").open("w")
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            running[tier] = (process, out)
        while running:
            for tier, (process, out) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                out.close()
                results[tier] = (code, time.monotonic() - started)
                print(f"\n== {tier} tier ended (exit {code})", flush=True)
                print((Path(scratch) / f"{tier}.log").read_text(), flush=True)
                del running[tier]
            time.sleep(0.2)
    return results


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    names = argv[:split]
    unknown = [n for n in names if n not in BUDGETS and n != "--one-by-one"]
    if not names or unknown:
        print(f"usage: test_tiers.py {{{','.join(BUDGETS)}}}... -- [pytest options]")
        return 2
    options, report = junit_path(argv[split + 1 :])
    one_by_one = "--one-by-one" in names
    names = [n for n in names if n != "--one-by-one"]
    results: dict[str, tuple[int, float]] = {}
    together = [n for n in names if n in SIDE_BY_SIDE] if not one_by_one else []
    for tier in names:
        if tier not in together:
            results[tier] = run(tier, options, report)
    if len(together) > 1:
        results.update(run_side_by_side(together, options, report))
    elif together:
        results[together[0]] = run(together[0], options, report)
    results = {tier: results[tier] for tier in names}
    if report is not None:
        merge(report, {tier: tier_report(report, tier) for tier in names})

    print("\n== tiers (budgets on 2 cores)")
    paired = len(together) > 1
    for tier, (code, seconds) in results.items():
        verdict = "passed" if code in (0, NO_TESTS_COLLECTED) else f"failed (exit {code})"
        budget = SIDE_BY_SIDE_BUDGET if paired and tier in together else BUDGETS[tier]
        beside = " (side by side)" if paired and tier in together else ""
        print(f"{tier:<12} {seconds:6.1f} s of {budget:4.0f} s  {verdict}{beside}")
    for tier, (_, seconds) in results.items():
        budget = SIDE_BY_SIDE_BUDGET if paired and tier in together else BUDGETS[tier]
        if seconds > budget:
            print(
                f"warning: the {tier} tier took {seconds:.1f} s, over its budget of {budget:.0f} s"
            )
    codes = [code for code, _ in results.values()]
    if all(code == NO_TESTS_COLLECTED for code in codes):
        return NO_TESTS_COLLECTED
    return next((code for code in codes if code not in (0, NO_TESTS_COLLECTED)), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
