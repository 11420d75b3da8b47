"""Start-up time: ``calibclip --help`` vs ``python -c 'import torch, transformers'`` (issue 21.5).

    python benchmarks/startup.py [--repeats 5]

Each command runs in a fresh interpreter, alternated, ``--repeats`` times; prints both wall times
(min/median/max) and the ratio. Also checks that ``--help`` imported no torch. Targets: ``--help``
< 0.5 s and well under the torch + transformers import.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from _common import machine, paired, ratio_line, spread  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
HELP = [sys.executable, "-c", "import sys; sys.argv = ['calibclip', '--help']; from calibclip.cli import main; main()"]
IMPORT = [sys.executable, "-c", "import torch, transformers"]
NO_TORCH = [sys.executable, "-c", "import sys; sys.argv = ['calibclip', '--help']\n"
            "from calibclip.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'"]


def run(cmd: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(SRC))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(machine())
    run(NO_TORCH)
    print("calibclip --help imports no torch: yes")
    tb, tc = paired(lambda: run(IMPORT), lambda: run(HELP), args.repeats)
    print(f"calibclip --help seconds min/med/max {spread(tc)} (target < 0.5 s)")
    print(ratio_line("--help / import torch, transformers", tb, tc, unit_ms=False))


if __name__ == "__main__":
    main()
