"""Writes tests/slow_tests.txt: the tests that a measured run found slow.

    python -m pytest -q --durations=0 > durations.txt
    python tests/update_slow_list.py durations.txt [more.txt ...] [--threshold 1.5]

A test is slow when its setup, call and teardown together took at least THRESHOLD seconds
(default 1.5, on the idle 2-core machine the suite's budgets are stated for). The root
conftest.py marks every listed test `slow`, so `-m "not slow"` (the fast tier) skips it.
A module fixture is charged to the first test that uses it; conftest.py marks the tests
that share a listed test's parametrized module fixture (parity's per-case fixtures) too.
Tests already listed stay listed: run the fast tier with --durations=0 and pass its output
too, until nothing new is found; delete the file to start afresh.
"""

from __future__ import annotations

import argparse
import collections
import os
import re

LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")
HEADER = """\
# Tests marked `slow` by measured duration (setup + call + teardown >= {threshold} s on the
# idle 2-core machine), written by `python tests/update_slow_list.py DURATIONS...`; the root
# conftest.py applies the mark. `python -m pytest -m "not slow"` is the fast tier.
"""
DURATION_LINE = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S.*?)\s*$")


def durations(paths: list[str]) -> dict[str, float]:
    """Seconds per test id, summed over its phases, from `--durations=0` outputs."""
    total: dict[str, float] = collections.defaultdict(float)
    for path in paths:
        with open(path) as f:
            for line in f:
                match = DURATION_LINE.match(line)
                if match and "::" in match.group(3):
                    total[match.group(3)] += float(match.group(1))
    return total


def read_list(path: str = LIST) -> set[str]:
    """The test ids listed in `path` (none if it does not exist)."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", help="pytest outputs with --durations=0")
    parser.add_argument("--threshold", type=float, default=1.5, help="seconds (default 1.5)")
    args = parser.parse_args()
    measured = durations(args.outputs)
    if not measured:
        raise SystemExit("error: no durations found (run pytest with --durations=0)")
    listed = read_list()
    slow = listed | {test for test, seconds in measured.items() if seconds >= args.threshold}
    with open(LIST, "w") as f:
        f.write(HEADER.format(threshold=args.threshold))
        f.writelines(f"{test}\n" for test in sorted(slow))
    print(f"{len(slow)} slow tests ({len(slow - listed)} new) in {LIST}")


if __name__ == "__main__":
    main()
