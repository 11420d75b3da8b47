"""Images/s of `calibclip index` against a plain transformers loop over the same images and model.

    python benchmarks/embed_throughput.py [--models b32,small] [--n 256] [--batch-size 32] [--repeats 3]

Without --model, randomly initialised CLIPs are built, which cost the same per image as trained
ones: ``b32`` is ViT-B/32-shaped (768 wide, 12 layers, 224 px), ``small`` a 6-layer 256-wide ViT/32
whose forward pass is cheap next to JPEG decoding. Both paths run in this process on the same files,
alternated over ``--repeats`` rounds; the ratio ours / baseline (images per second) is printed as
min/median/max (target >= 1.0 at every size: decoding overlapped only where a core is spare).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from _common import machine, spread  # noqa: E402  (puts src/ on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import calibclip  # noqa: E402
from calibclip.index import Index  # noqa: E402
from calibclip.index.embed import thread_plan  # noqa: E402
from calibclip.testing import save_clip_dir, tiny_clip_config  # noqa: E402
from calibclip.tokenizer import build_clip_tokenizer  # noqa: E402

SHAPES = {"b32": dict(width=768, layers=12, heads=12, projection_dim=512),
          "small": dict(width=256, layers=6, heads=4, projection_dim=256)}


def make_images(folder: Path, n: int, size: int = 320) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    paths = []
    for i in range(n):
        arr = (rng.rand(size // 8, size // 8, 3) * 255).astype("uint8")
        img = Image.fromarray(arr).resize((size, size + 40), Image.BILINEAR)  # JPEG-like natural content
        p = folder / f"img{i:05d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def random_model(path: Path, shape: str = "b32") -> Path:
    tok = build_clip_tokenizer(["a photo of a cat", "a photo of a dog"] * 5, path, num_merges=50)
    cfg = tiny_clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, image_size=224, patch_size=32,
                           **SHAPES[shape])
    torch.manual_seed(0)
    from transformers import CLIPModel

    return save_clip_dir(CLIPModel(cfg).eval(), tok, path, 224)


def plain_loop(model_dir: Path, paths: list[Path], batch_size: int) -> float:
    """The baseline a user would write with transformers alone."""
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval()
    proc = CLIPImageProcessorPil.from_pretrained(model_dir)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            imgs = [Image.open(p).convert("RGB") for p in paths[i:i + batch_size]]
            pv = proc(images=imgs, return_tensors="pt")["pixel_values"]
            feats = model.get_image_features(pixel_values=pv).pooler_output
            _ = torch.nn.functional.normalize(feats, dim=-1).numpy()
    return len(paths) / (time.perf_counter() - start)


def ours(model_dir: Path, folder: Path, out: Path, batch_size: int, workers: int | None) -> float:
    enc = calibclip.load(str(model_dir), device="cpu")
    start = time.perf_counter()
    index = Index.build(folder, enc, out=out, batch_size=batch_size, num_workers=workers, progress=False)
    return index.last_summary.added / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=None, help="a CLIP directory instead of the random shapes")
    ap.add_argument("--models", default="b32,small")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(machine())
    workers, threads = thread_plan(num_workers=args.num_workers)
    print(f"images: {args.n}  batch: {args.batch_size}  torch threads: {torch.get_num_threads()}  "
          f"calibclip plan: {workers} decode workers, {threads} model threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp / "photos", args.n)
        runs = itertools.count()
        for shape in ([str(args.model)] if args.model else args.models.split(",")):
            model_dir = args.model or random_model(tmp / f"model-{shape}", shape)
            plain_loop(model_dir, paths[: args.batch_size], args.batch_size)  # warm-up (page cache, kernels)
            tb, tc = [], []  # images per second (model loading excluded on both sides), alternated
            for r in range(args.repeats):
                base = lambda: tb.append(plain_loop(model_dir, paths, args.batch_size))  # noqa: E731
                mine = lambda: tc.append(ours(model_dir, tmp / "photos", tmp / f"p{next(runs)}.idx",  # noqa: E731
                                              args.batch_size, args.num_workers))
                for fn in ((base, mine) if r % 2 == 0 else (mine, base)):
                    fn()
            print(f"{shape:6s} plain loop {np.median(tb):7.1f} img/s  calibclip index {np.median(tc):7.1f} img/s  "
                  f"ratio min/med/max {spread([c / b for b, c in zip(tb, tc)])}x  (target >= 1.00x)")


if __name__ == "__main__":
    main()
