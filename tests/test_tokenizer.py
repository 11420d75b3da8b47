"""The tiny tokenizer / tiny CLIP helpers are deterministic across processes (issue #16.17)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

SCRIPT = "import sys; from calibclip.testing import tiny_clip; tiny_clip(sys.argv[1], seed=3)"


def _digest(folder) -> dict[str, str]:
    return {name: hashlib.sha1((folder / name).read_bytes()).hexdigest()
            for name in ("merges.txt", "vocab.json", "model.safetensors")}


def test_tiny_clip_identical_in_two_processes(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="random")  # the failure came from per-process hash order
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / f"m{i}")], env=env) for i in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    a, b = _digest(tmp_path / "m0"), _digest(tmp_path / "m1")
    assert a == b
    merges = (tmp_path / "m0" / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) > 100


def test_learn_merges_breaks_ties_by_pair():
    from calibclip.tokenizer import learn_merges

    # "ab" and "cd" are equally frequent: the lexicographically smaller pair is merged first.
    assert learn_merges(["cd ab", "ab cd"], 2) == [("a", "b</w>"), ("c", "d</w>")]
