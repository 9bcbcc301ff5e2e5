"""The hostile-input suite at the trial counts of an attack, not of a test run.

    .venv/bin/python bench/hostile.py            # 50 bundle flips, 30 + 10 kills, 20 ledger edits
    .venv/bin/python bench/hostile.py --quick    # the test suite's own small counts

``tests/hostile`` holds one family of attacker-controlled input per file; the randomised
families (byte flips of a bundle, SIGKILLs of ``archiver capture`` and of the daemon,
edits of ledger rows) take their trial counts from ``HOSTILE_TRIALS_<FAMILY>``. This runs
the whole directory with raised counts and prints the tried / handled figure per family
(the last lines of pytest's output). ``HOSTILE_SEED`` picks another seed; a failing
trial's parameters name it so it can be replayed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchlib import ROOT

ATTACK = {"BUNDLE_FLIPS": 50, "KILLS": 30, "LEDGER_EDITS": 20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's counts")
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.quick:
        env.update({f"HOSTILE_TRIALS_{name}": str(n) for name, n in ATTACK.items()})
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "hostile")],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    lines = result.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if "hostile inputs" in line), None)
    for line in lines[start:] if start is not None else lines[-20:]:
        print(line)
    print(f"hostile suite: {time.monotonic() - started:.0f} s, pytest exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
