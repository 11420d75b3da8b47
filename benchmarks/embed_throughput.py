"""Images/s of `calibclip index` against a plain transformers loop over the same images and model.

    python benchmarks/embed_throughput.py [--model DIR] [--n 256] [--batch-size 32]

Without --model, a randomly initialised ViT-B/32-shaped CLIP (224 px) is built, which costs the
same per image as the real one. Both paths run in this process on the same files; the ratio
`ours / baseline` is printed (target >= 1.0: decoding overlapped with the model, no overhead).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import calibclip
from calibclip.index import Index
from calibclip.testing import save_clip_dir, tiny_clip_config
from calibclip.tokenizer import build_clip_tokenizer


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


def base_like_model(path: Path) -> Path:
    tok = build_clip_tokenizer(["a photo of a cat", "a photo of a dog"] * 5, path, num_merges=50)
    cfg = tiny_clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, image_size=224, patch_size=32,
                           width=768, layers=12, heads=12, projection_dim=512)
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
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model or base_like_model(tmp / "model")
        paths = make_images(tmp / "photos", args.n)
        plain_loop(model_dir, paths[: args.batch_size], args.batch_size)  # warm-up (page cache, kernels)
        base = plain_loop(model_dir, paths, args.batch_size)
        mine = ours(model_dir, tmp / "photos", tmp / "photos.idx", args.batch_size, args.num_workers)
    print(f"images: {args.n}  batch: {args.batch_size}  threads: {torch.get_num_threads()}")
    print(f"plain transformers loop : {base:8.1f} img/s")
    print(f"calibclip index         : {mine:8.1f} img/s")
    print(f"ratio (ours / baseline) : {mine / base:8.2f}x   (target >= 1.00x)")


if __name__ == "__main__":
    main()
