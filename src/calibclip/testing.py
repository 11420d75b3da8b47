"""Helpers for tests and demos: a tiny, randomly initialised CLIP saved in real HF format.

``tiny_clip(path)`` writes a model directory that loads through the same ``calibclip.load(path)``
code path as a downloaded checkpoint (config.json + model.safetensors + tokenizer files +
preprocessor_config.json). It is a real CLIPModel, only small and untrained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from calibclip.tokenizer import build_clip_tokenizer

# A small generic corpus so the tiny tokenizer has whole-word tokens for everyday captions.
_CORPUS = """a photo of a red car on the left of a blue house
a man in a red jacket riding a bike down the street
a woman with a black backpack and white shoes walking
a small green square next to a large yellow circle
a dog and a cat sitting on a wooden table
the person wears a hat, a striped shirt and dark trousers
make the left square green and remove the hat
is blue and has long sleeves, is shorter and brighter
two people standing near a tree in the park at night
an orange triangle above a purple star with dotted texture""".splitlines()


def tiny_clip_config(vocab_size: int, eos_token_id: int, bos_token_id: int, image_size: int = 32,
                     patch_size: int = 8, width: int = 32, layers: int = 2, heads: int = 4,
                     projection_dim: int = 16, context_length: int = 77) -> CLIPConfig:
    """Config of a tiny ViT CLIP; every size is an argument so tests can vary them."""
    text = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=context_length, eos_token_id=eos_token_id,
                bos_token_id=bos_token_id, pad_token_id=eos_token_id, projection_dim=projection_dim)
    vision = dict(hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers, num_attention_heads=heads,
                  image_size=image_size, patch_size=patch_size, projection_dim=projection_dim)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def save_clip_dir(model: CLIPModel, tokenizer, path: str | Path, image_size: int) -> Path:
    """Save model, tokenizer and image processor so ``calibclip.load(path)`` finds everything."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": image_size},
                          crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def tiny_clip(path: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Write a randomly initialised tiny CLIP model directory (HF format) to ``path`` and return it."""
    path = Path(path)
    tok = build_clip_tokenizer(_CORPUS * 3, path, num_merges=300)
    cfg = tiny_clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, **config_kwargs)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    return save_clip_dir(model, tok, path, cfg.vision_config.image_size)


def write_random_images(folder: str | Path, n: int, start: int = 0, shape: tuple[int, int] = (36, 44),
                        name: str = "img{:03d}.png") -> list[Path]:
    """Write ``n`` PNGs of seeded random pixels (image i from RandomState(i)), numbered from ``start``."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        pixels = (np.random.RandomState(i).rand(*shape, 3) * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / name.format(i))
        paths.append(folder / name.format(i))
    return paths
