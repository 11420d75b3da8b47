"""Build the Python API reference from the docstrings with pdoc, and check it documents the public entry points.

    bash scripts/build_docs.sh [OUT]        # = python3 scripts/build_docs.py [OUT]   (default OUT: build/api)

Pages: ``calibclip`` (load, Index, Hit, CalibConfig, HFClipEncoder, UserError), ``calibclip.cir``
(φ and composed queries), ``calibclip.cir.rtd`` (RTD), ``calibclip.index``, ``calibclip.calib``,
``calibclip.backends`` and ``calibclip.eval``. Exits non-zero when a required name is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

MODULES = ["calibclip", "calibclip.cir", "calibclip.cir.rtd", "calibclip.index", "calibclip.calib",
           "calibclip.backends", "calibclip.eval"]
# page → names that must be documented on it (anchors pdoc writes as id="NAME")
REQUIRED = {
    "calibclip.html": ["load", "Index", "Index.build", "Index.search", "Hit", "CalibConfig", "HFClipEncoder"],
    "calibclip/cir.html": ["load_phi", "encode_composed", "train_phi", "build_phi"],
    "calibclip/cir/rtd.html": ["train_rtd", "load_rtd", "make_triplets", "RTDConfig"],
}


def build(out: Path) -> list[Path]:
    """Render MODULES into ``out``; return the pages written. SystemExit naming any missing entry point."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", footer_text="calibclip API reference",
                          search=True, show_source=False)
    out = Path(out)
    pdoc.pdoc(*MODULES, output_directory=out)
    missing = []
    for page, names in REQUIRED.items():
        path = out / page
        html = path.read_text(encoding="utf-8") if path.is_file() else ""
        missing += [f"{page}: {n}" for n in names if f'id="{n}"' not in html]
    if missing:
        raise SystemExit("API reference lacks: " + ", ".join(missing))
    return sorted(out.rglob("*.html"))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "build" / "api"
    pages = build(out)
    print(f"API reference: {len(pages)} pages in {out} (open {out / 'index.html'})")


if __name__ == "__main__":
    main()
