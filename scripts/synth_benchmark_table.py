"""Measure the synthetic-benchmark table of the README: CalibCLIP ablations and composed retrieval.

    python scripts/synth_benchmark_table.py                 # print the table
    python scripts/synth_benchmark_table.py --readme        # also replace it in README.md

Test splits of the synthetic world (seed 0, ``--n-test`` images each, written in the Flickr30K /
CUHK-PEDES / CIRR formats) are evaluated with the shipped small CLIP through the ordinary
``calibclip eval`` runner:
- TIR (Flickr30K format) and TBPR (CUHK-PEDES format): baseline, +CVE, +DCC (with its
  discriminative similarity), +both (CalibCLIP defaults);
- CIR (CIRR format, full-gallery recall and Recall_subset): shipped LinCIR φ, and φ + RTD text tower.
Numbers are whatever the run measures; nothing is copied from elsewhere.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from calibclip.data.synth import generate, shipped_model_dir, shipped_phi_path, shipped_rtd_path
from calibclip.demo import README_TEST_IMAGES
from calibclip.eval.runner import EvalSpec, evaluate

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- synth-table:start -->", "<!-- synth-table:end -->"
# Row label → CalibConfig switches. Every calibrated row re-ranks with s0 + λ·cos(t̃, ṽ) (spec §3):
# +CVE uses ṽ = CVE features with the plain query, +DCC the DCC query with plain image features.
ABLATIONS = {
    "baseline": None,
    "+CVE": {"cve": True, "dcc": False, "disc_sim": True},
    "+DCC": {"cve": False, "dcc": True, "disc_sim": True},
    "+CVE+DCC (CalibCLIP)": {"cve": True, "dcc": True, "disc_sim": True},
}
COLUMNS = {"flickr30k": ("t2i_R@1", "t2i_R@5", "t2i_R@10"), "cuhk-pedes": ("R@1", "R@5", "R@10", "mAP"),
           "cirr": ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3")}


def _toml(path: Path, switches: dict[str, bool]) -> Path:
    path.write_text("".join(f"{k} = {str(v).lower()}\n" for k, v in switches.items()), encoding="utf-8")
    return path


def _table(title: str, cols: tuple[str, ...], rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    out = [f"| {title} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    out += [f"| {name} | " + " | ".join(f"{m[c]:.1f}" for c in cols) + " |" for name, m in rows]
    return out


def measure(n_test: int, seed: int, tmp: Path) -> list[str]:
    """Run every row; return the Markdown lines."""
    model = str(shipped_model_dir())
    common = dict(model=model, split="test", cache_dir=tmp / "cache", results_dir=tmp / "results", progress=False)
    lines: list[str] = []
    for task, name, label in (("tir", "flickr30k", "Text→image (Flickr30K format)"),
                              ("tbpr", "cuhk-pedes", "Person retrieval (CUHK-PEDES format)")):
        root = tmp / name
        generate(root, task, {"test": n_test}, seed, progress=False)
        rows = []
        for row, switches in ABLATIONS.items():
            spec = EvalSpec(dataset=name, root=root, mode="base" if switches is None else "calib",
                            calib_config=None if switches is None else _toml(tmp / f"{row[:4]}.toml", switches),
                            **common)
            rows.append((row, evaluate(spec).metrics))
        lines += _table(label, COLUMNS[name], rows) + [""]
    phi, rtd = shipped_phi_path(), shipped_rtd_path()
    if phi is None:
        return lines + ["(composed retrieval: no shipped φ; run scripts/train_synth_cir.py)"]
    root = tmp / "cirr"
    generate(root, "cir", {"test": n_test}, seed, progress=False)
    rows = [("LinCIR φ", evaluate(EvalSpec(dataset="cirr", root=root, phi=phi, **common)).metrics)]
    if rtd is not None:
        rows.append(("LinCIR φ + RTD", evaluate(EvalSpec(dataset="cirr", root=root, phi=phi, rtd=rtd, mode="rtd",
                                                          **common)).metrics))
    return lines + _table("Composed retrieval (CIRR format)", COLUMNS["cirr"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-test", type=int, default=README_TEST_IMAGES, help="images per synthetic test split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readme", action="store_true", help=f"replace the table between {START} and {END}")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        lines = measure(args.n_test, args.seed, Path(tmp))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    note = (f"Measured by `python scripts/synth_benchmark_table.py` (seed {args.seed}, {args.n_test} test images "
            f"per task, shipped synthetic CLIP; {wall:.0f} s wall / {cpu:.0f} s CPU on a {os.cpu_count()}-core "
            f"CPU{load}).")
    text = "\n".join(lines + ["", note])
    print(text)
    if args.readme:
        readme = README.read_text(encoding="utf-8")
        if START not in readme or END not in readme:
            raise SystemExit(f"{README}: add the markers {START} and {END} where the table goes.")
        head, rest = readme.split(START, 1)
        new = head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1]
        tmp_path = README.with_name(README.name + ".tmp")
        tmp_path.write_text(new, encoding="utf-8")
        tmp_path.replace(README)
        print(f"updated {README}")


if __name__ == "__main__":
    main()
