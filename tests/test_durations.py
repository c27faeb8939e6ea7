"""tests/update_durations.py: the measured seconds that mark `slow` and order the files."""

import os

import update_durations
from _train_subprocess import REPO

OUTPUT = """\
============================= slowest durations ==============================
12.50s call     tests/test_a.py::test_long
0.50s setup    tests/test_a.py::test_long
1.20s call     parity/test_b.py::test_case[B/16]
0.01s teardown parity/test_b.py::test_case[B/16]
(20 durations < 0.005s hidden.  Use -vv to show these durations.)
1 passed in 14.2s
"""


def test_phases_are_summed_and_each_test_keeps_its_longest_time(tmp_path):
    first, second = tmp_path / "full.txt", tmp_path / "fast.txt"
    first.write_text(OUTPUT)
    second.write_text("2.00s call     parity/test_b.py::test_case[B/16]\n"
                      "0.30s call     tests/test_a.py::test_long\n")
    assert update_durations.measured([str(first)]) == {
        "tests/test_a.py::test_long": 13.0, "parity/test_b.py::test_case[B/16]": 1.21}
    assert update_durations.measured([str(first), str(second)]) == {
        "tests/test_a.py::test_long": 13.0, "parity/test_b.py::test_case[B/16]": 2.0}


def test_the_committed_file_reads_and_names_tests_that_exist():
    durations = update_durations.read_durations()
    assert len(durations) > 100 and all(s >= 0 for s in durations.values())
    files = {test.split("::")[0] for test in durations}
    missing = sorted(f for f in files if not os.path.exists(os.path.join(REPO, f)))
    assert not missing, f"durations.txt names deleted files {missing}: measure again"
