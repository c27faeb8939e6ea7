"""Writes tests/durations.txt: each test's measured seconds (setup + call + teardown).

    python -m pytest -q --durations=0 > durations.txt
    python tests/update_durations.py durations.txt [more.txt ...]

Measure on the idle 2-core machine the suite's budgets are stated for, the whole suite and
then the fast tier, until the fast tier finds nothing new: a test's time depends on what
ran before it in its worker (a compile, or a module fixture, is paid by whichever test needs
it first), so each test keeps the longest time any run measured. Delete the file to start
afresh.

The root conftest.py reads the file twice: a test of `SLOW_SECONDS` or more is marked
`slow` (`-m "not slow"`, the fast tier, skips it), and test files run longest first, so
that the 2 workers finish together instead of one waiting on the last long file.
"""

from __future__ import annotations

import argparse
import collections
import os
import re

DURATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "durations.txt")
HEADER = """\
# Seconds per test (setup + call + teardown) measured on the idle 2-core machine, written by
# `python tests/update_durations.py DURATIONS...`. The root conftest.py marks `slow` the tests
# of its SLOW_SECONDS or more (`python -m pytest -m "not slow"` is the fast tier) and runs
# the files longest first.
"""
DURATION_LINE = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S.*?)\s*$")


def measured(paths: list[str]) -> dict[str, float]:
    """Seconds per test id, summed over its phases, from `--durations=0` outputs.

    A test in several outputs gets its longest time.
    """
    longest: dict[str, float] = {}
    for path in paths:
        total: dict[str, float] = collections.defaultdict(float)
        with open(path) as f:
            for line in f:
                match = DURATION_LINE.match(line)
                if match and "::" in match.group(3):
                    total[match.group(3)] += float(match.group(1))
        longest = longest_of(longest, total)
    return longest


def longest_of(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Every test of `a` and `b`, with the longer of its two times."""
    return {test: max(a.get(test, 0.0), b.get(test, 0.0)) for test in a.keys() | b.keys()}


def read_durations(path: str = DURATIONS) -> dict[str, float]:
    """{test id: seconds} of `path` (empty if it does not exist).

    Args:
      path: a file of `SECONDS TEST_ID` lines; `#` lines are comments.

    Returns:
      The seconds of each listed test.
    """
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                seconds, test = line.rstrip("\n").split(" ", 1)
                out[test] = float(seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", help="pytest outputs with --durations=0")
    args = parser.parse_args()
    new = measured(args.outputs)
    if not new:
        raise SystemExit("error: no durations found (run pytest with --durations=0)")
    old = read_durations()
    durations = longest_of(old, new)
    with open(DURATIONS, "w") as f:
        f.write(HEADER)
        f.writelines(f"{durations[test]:.2f} {test}\n" for test in sorted(durations))
    slower = [t for t in new if t in old and new[t] > old[t]]
    print(f"{len(durations)} tests ({len(set(new) - set(old))} new, {len(slower)} slower than "
          f"before) in {DURATIONS}")


if __name__ == "__main__":
    main()
