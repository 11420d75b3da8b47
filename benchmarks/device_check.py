"""Device check: the GPU path, measured with real-size random-weight CLIP models, no network needed.

Builds CLIPModels with the exact configs of ``openai/clip-vit-base-patch16`` and
``openai/clip-vit-large-patch14`` (written below; random weights, a CLIP BPE tokenizer learned
offline), runs the ``cuda``-marked tests, and measures each figure as a ratio against the plain
transformers loop in the same run (min/median/max over ``--repeats``):

- indexing throughput (``calibclip`` index pipeline: decode workers → pinned batches → model → store)
  vs the GPU-bound limit: the plain ``get_image_features`` forward on ready pixel tensors, same batch;
  mean GPU utilisation while indexing (NVML through ``torch.cuda.utilization``, else ``nvidia-smi``);
- text encoding (``encode_texts``) vs tokenizer + ``get_text_features``;
- CalibCLIP image (CVE) and text (DCC) feature sets vs the plain forward;
- a calibrated eval (CalibCLIP re-ranking + official TIR metrics) of a 5k-image × 25k-caption gallery
  of random features vs the plain-cosine eval of the same features;
- one RTD optimisation step at batch 128 in fp32, fp16 (GradScaler) and bf16 autocast: step time, peak
  memory, loss against fp32 on the same batch; vs a plain HF text-tower forward/backward of the same texts;
- one LinCIR φ training step (batch 512) vs two plain HF text passes over the same captions;
- a 1M-vector IVF-PQ search on the GPU when faiss has GPU support (else named as skipped).

Writes ``device_check.json`` and ``device_check.md`` to ``--out``. Parts whose packages are missing
(faiss GPU, pynvml, pytest) are skipped and named; a part that fails is recorded and the rest still run
(exit code 1 then).

    bash scripts/device_check.sh                      # GPU: both models, full sizes, cuda tests
    python benchmarks/device_check.py --device cpu --small --out /tmp/dc   # seconds; run by the test suite
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from calibclip.atomic import atomic_write_text  # noqa: E402
from calibclip.backends.hf_clip import HFClipEncoder  # noqa: E402
from calibclip.tokenizer import build_clip_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# config.json of the two OpenAI checkpoints, as published on the Hugging Face hub (the fields that
# define the computation; the legacy eos_token_id=2 makes HF pool at the highest id, i.e. the EOT).
_TEXT_COMMON = dict(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                    bos_token_id=0, eos_token_id=2, pad_token_id=1, attention_dropout=0.0, dropout=0.0,
                    initializer_range=0.02, initializer_factor=1.0)
_VISION_COMMON = dict(image_size=224, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                      attention_dropout=0.0, dropout=0.0, initializer_range=0.02, initializer_factor=1.0)
CONFIGS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-base-patch16": dict(
        projection_dim=512, logit_scale_init_value=2.6592,
        text_config=dict(_TEXT_COMMON, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, projection_dim=512),
        vision_config=dict(_VISION_COMMON, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, patch_size=16, projection_dim=512)),
    "openai/clip-vit-large-patch14": dict(
        projection_dim=768, logit_scale_init_value=2.6592,
        text_config=dict(_TEXT_COMMON, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, projection_dim=768),
        vision_config=dict(_VISION_COMMON, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, patch_size=14, projection_dim=768)),
}
# --small: the same structure scaled down so the whole check runs in seconds on a CPU
SMALL_CONFIG = dict(
    projection_dim=16, logit_scale_init_value=2.6592,
    text_config=dict(_TEXT_COMMON, vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, projection_dim=16),
    vision_config=dict(_VISION_COMMON, image_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, patch_size=8, projection_dim=16))


@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one run (``full`` on a GPU, ``small`` for the CPU test)."""

    index_images: int = 2048
    image_side: int = 320  # stored JPEG side: decoding + resizing cost like a real photo folder
    batch: int = 128
    texts: int = 8192
    text_batch: int = 256
    gallery: int = 5000
    captions: int = 25000
    rtd_batch: int = 128
    phi_batch: int = 512
    ann_vectors: int = 1_000_000
    ann_queries: int = 10_000
    repeats: int = 3


FULL = Sizes()
SMALL = Sizes(index_images=12, image_side=40, batch=4, texts=24, text_batch=8, gallery=50, captions=250,
              rtd_batch=4, phi_batch=4, ann_vectors=4000, ann_queries=50, repeats=3)


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds of ``fn()`` (min/median/max over ``repeats`` after one warm-up call)."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": float(np.median(times)), "max": max(times)}


def ratio(ours: dict[str, float], plain: dict[str, float], throughput: bool = False) -> float:
    """Time ratio ours/plain on medians; for a throughput figure plain/ours (>1 = we are faster)."""
    return plain["median"] / ours["median"] if throughput else ours["median"] / plain["median"]


def pooled(out: Any) -> torch.Tensor:
    """``get_*_features`` result as a tensor (transformers 5 returns an output object, projected pooler_output)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def captions(n: int, seed: int = 0) -> list[str]:
    """Varied captions (8–20 words) from a fixed lexicon, deterministic."""
    rng = random.Random(seed)
    adj = "red blue green yellow black white small large striped wooden old bright dark".split()
    noun = "car house dog cat man woman shirt hat tree table bike street park window bag".split()
    rel = "next to|on the left of|behind|in front of|under|near".split("|")
    out = []
    for _ in range(n):
        parts = [f"a {rng.choice(adj)} {rng.choice(noun)} {rng.choice(rel)} a {rng.choice(adj)} {rng.choice(noun)}"]
        if rng.random() < 0.5:
            parts.append(f"with a {rng.choice(adj)} {rng.choice(noun)}")
        out.append(" ".join(parts))
    return out


def build_encoder(name: str, cfg: dict[str, Any], device: torch.device, tmp: Path) -> HFClipEncoder:
    """Random-weight CLIPModel of ``cfg`` with an offline CLIP BPE tokenizer (ids < vocab_size, EOT last)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tok = build_clip_tokenizer(captions(600, 1), tmp / "tokenizer", num_merges=400)
    cfg = copy.deepcopy(cfg)
    if len(tok) > cfg["text_config"]["vocab_size"]:
        raise RuntimeError(f"tokenizer of {len(tok)} ids does not fit vocab_size {cfg['text_config']['vocab_size']}")
    if cfg["text_config"]["eos_token_id"] != 2:  # non-legacy configs pool at the EOT id itself
        cfg["text_config"].update(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: ViT-L/14's 428M parameters init in seconds
        model = CLIPModel(CLIPConfig(**cfg))
    model.config._attn_implementation = "sdpa"
    side = cfg["vision_config"]["image_size"]
    proc = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return HFClipEncoder(model, tok, proc, name=name, device=device)


class Utilisation:
    """Mean GPU utilisation (%) sampled every 0.2 s in a thread; None where neither NVML nor nvidia-smi works."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.source = device, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _nvml(self) -> float:
        return float(torch.cuda.utilization(self.device))  # needs pynvml

    def _smi(self) -> float:
        out = subprocess.run(["nvidia-smi", f"--id={self.device.index or 0}", "--query-gpu=utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
        return float(out.stdout.strip().splitlines()[0])

    def _read(self) -> float | None:
        sources = {"nvml": self._nvml, "nvidia-smi": self._smi}
        for name in ([self.source] if self.source else list(sources)):
            try:
                value = sources[name]()
            except Exception:  # noqa: BLE001 - pynvml or nvidia-smi missing / unsupported
                continue
            self.source = name
            return value
        self.source = "unavailable"
        return None

    def _run(self) -> None:
        while not self._stop.is_set() and self.source != "unavailable":
            v = self._read()
            if v is not None:
                self.samples.append(v)
            self._stop.wait(0.2)

    def __enter__(self) -> "Utilisation":
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


# ---------------------------------------------------------------------------------------------- parts
def part_indexing(enc: HFClipEncoder, sz: Sizes, tmp: Path) -> dict[str, Any]:
    from PIL import Image

    from calibclip.index.embed import default_workers, index_folder
    from calibclip.index.store import EmbeddingStore

    folder = tmp / "photos"
    if not folder.is_dir():
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(sz.index_images):
            # smooth colour field + noise: decodes like a photo, not like a flat PNG
            base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((sz.image_side, sz.image_side), Image.BILINEAR)
            img.save(folder / f"{i:06d}.jpg", quality=90)
    workers = default_workers()
    runs = [0]

    def ours() -> None:
        runs[0] += 1
        store = EmbeddingStore(tmp / f"run{runs[0]}.idx", create=True)
        index_folder(store, folder, enc, batch_size=sz.batch, num_workers=workers, progress=False)

    side = enc.model.config.vision_config.image_size
    px = torch.randn(sz.batch, 3, side, side, device=enc.device)
    n_batches = -(-sz.index_images // sz.batch)

    def plain() -> None:
        with torch.inference_mode():
            for _ in range(n_batches):
                enc.model.get_image_features(pixel_values=px)

    t_plain = timed(plain, enc.device, sz.repeats)
    with Utilisation(enc.device) as util:
        t_ours = timed(ours, enc.device, sz.repeats)
    n = n_batches * sz.batch
    return {"images": sz.index_images, "batch": sz.batch, "decode_workers": workers,
            "ours_img_s": sz.index_images / t_ours["median"], "plain_forward_img_s": n / t_plain["median"],
            "ratio": (sz.index_images / t_ours["median"]) / (n / t_plain["median"]), "target": ">= 0.9",
            "gpu_util_mean_pct": util.mean, "gpu_util_source": util.source, "ours_s": t_ours, "plain_s": t_plain}


def part_text(enc: HFClipEncoder, sz: Sizes) -> dict[str, Any]:
    texts = captions(sz.texts, 2)

    def plain() -> None:
        with torch.inference_mode():
            for a in range(0, len(texts), sz.text_batch):
                t = enc.tokenizer(texts[a:a + sz.text_batch], padding=True, truncation=True, max_length=77,
                                  return_tensors="pt").to(enc.device)
                enc.model.get_text_features(**t)

    t_plain = timed(plain, enc.device, sz.repeats)
    t_ours = timed(lambda: enc.encode_texts(texts, batch_size=sz.text_batch), enc.device, sz.repeats)
    return {"texts": len(texts), "batch": sz.text_batch, "ours_text_s": len(texts) / t_ours["median"],
            "plain_text_s": len(texts) / t_plain["median"], "ratio": ratio(t_ours, t_plain, throughput=True),
            "ours_s": t_ours, "plain_s": t_plain}


def part_calib(enc: HFClipEncoder, sz: Sizes) -> dict[str, Any]:
    from calibclip.calib import CalibConfig, image_feature_sets, text_feature_sets

    cfg = CalibConfig()
    side = enc.model.config.vision_config.image_size
    px = torch.randn(sz.batch, 3, side, side, device=enc.device)
    texts = captions(sz.text_batch, 3)
    with torch.inference_mode():
        img_plain = timed(lambda: enc.model.get_image_features(pixel_values=px), enc.device, sz.repeats)
        img_cc_plain = timed(lambda: image_feature_sets(enc, px, None), enc.device, sz.repeats)
        img_calib = timed(lambda: image_feature_sets(enc, px, cfg), enc.device, sz.repeats)
        tok = enc.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(enc.device)
        txt_plain = timed(lambda: enc.model.get_text_features(**tok), enc.device, sz.repeats)
        txt_calib = timed(lambda: text_feature_sets(enc, texts, cfg), enc.device, sz.repeats)
    return {"image_batch": sz.batch, "text_batch": len(texts),
            "image_overhead": ratio(img_calib, img_plain), "image_overhead_target": "<= 1.15",
            "plain_backend_image_overhead": ratio(img_cc_plain, img_plain),
            "text_overhead": ratio(txt_calib, txt_plain),
            "image_s": {"plain": img_plain, "calibclip_plain": img_cc_plain, "calibclip_calib": img_calib},
            "text_s": {"plain": txt_plain, "calibclip_calib": txt_calib}}


def part_eval(dim: int, sz: Sizes, device: torch.device) -> dict[str, Any]:
    from calibclip.calib import CalibConfig
    from calibclip.eval import metrics as M
    from calibclip.eval.scoring import similarity_source

    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    per = sz.captions // sz.gallery
    text_image = np.repeat(np.arange(sz.gallery), per)
    g = {"plain": unit(sz.gallery), "cve": unit(sz.gallery)}
    # queries near their image so the ranks are not all random
    qp = g["plain"][text_image] + 0.9 * unit(len(text_image))
    q = {"plain": qp / np.linalg.norm(qp, axis=1, keepdims=True), "dcc": unit(len(text_image))}
    cfg = CalibConfig()
    out: dict[str, Any] = {}

    def run(calib: Any) -> None:
        out[bool(calib)] = M.tir_metrics(similarity_source(q, g, calib), text_image, i2t=False)

    t_plain = timed(lambda: run(None), device, sz.repeats)
    t_calib = timed(lambda: run(cfg), device, sz.repeats)
    return {"gallery": sz.gallery, "captions": len(text_image), "ratio": ratio(t_calib, t_plain),
            "calib_s": t_calib, "plain_s": t_plain, "plain_R@1": out[False]["t2i_R@1"],
            "calib_R@1": out[True]["t2i_R@1"]}


def part_rtd(enc: HFClipEncoder, sz: Sizes) -> dict[str, Any]:
    from calibclip.cir import build_phi
    from calibclip.cir.precision import autocast_for
    from calibclip.cir.rtd import RTDConfig, Triplet, make_trainable_tower, rtd_loss
    from calibclip.cir.rtd.train import BatchOrder, make_optimizer, optimisation_step

    caps = captions(sz.rtd_batch * 2, 4)
    triplets = [Triplet(caps[2 * i], "make it " + caps[2 * i + 1].split()[1], caps[2 * i + 1])
                for i in range(sz.rtd_batch)]
    torch.manual_seed(0)
    phi = build_phi("lincir", enc.dim, enc.token_dim).to(enc.device).eval().requires_grad_(False)
    base = make_trainable_tower(enc)
    init = copy.deepcopy(base.state_dict())
    cfg = RTDConfig(batch_size=sz.rtd_batch, accum=1)
    enc.model.requires_grad_(False)
    rows: dict[str, Any] = {}
    cuda = enc.device.type == "cuda"
    for mode in ("off", "fp16", "bf16"):
        if mode != "off" and not cuda:
            rows[mode] = {"skipped": "autocast training is CUDA-only"}
            continue
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            rows[mode] = {"skipped": "this GPU has no bf16"}
            continue
        autocast, scaler = autocast_for(enc.device, mode)  # the trainers' rule for RTDConfig.amp = mode
        losses, times, peaks = [], [], []
        for _ in range(sz.repeats + 1):  # first = warm-up; every step starts from the same weights and batch
            base.load_state_dict(init)
            opt = make_optimizer(base, cfg)
            if cuda:
                torch.cuda.reset_peak_memory_stats(enc.device)
            sync(enc.device)
            t0 = time.perf_counter()
            losses.append(optimisation_step(enc, base, phi, triplets, BatchOrder(len(triplets), cfg.seed), cfg, 0,
                                            opt, scaler, autocast))
            sync(enc.device)
            times.append(time.perf_counter() - t0)
            peaks.append(torch.cuda.max_memory_allocated(enc.device) / 2**20 if cuda else None)
        t = times[1:]
        rows[mode] = {"loss": losses[-1], "step_s": {"min": min(t), "median": float(np.median(t)), "max": max(t)},
                      "peak_mib": peaks[-1], "autocast_from": "fp32" if mode == "off" else "RTDConfig.amp"}
    ref = rows["off"]["loss"]
    for mode in ("fp16", "bf16"):
        if "loss" in rows[mode]:
            rows[mode]["loss_rel_diff_vs_fp32"] = abs(rows[mode]["loss"] - ref) / abs(ref)
    rows["fp16_target"] = "loss within 2 % of fp32"

    # plain loop: the HF text tower forward/backward over the same 2B query texts + frozen anchor keys
    texts = [cfg.prompt.format(t.conditioning).replace("$", "a") for t in triplets] + [cfg.ref_prompt] * len(triplets)
    keys = [t.target for t in triplets] + [t.reference for t in triplets]

    def plain() -> None:
        base.load_state_dict(init)
        opt = torch.optim.AdamW(base.parameters(), lr=cfg.lr)
        tq = enc.tokenizer(texts, padding=True, return_tensors="pt").to(enc.device)
        tk = enc.tokenizer(keys, padding=True, return_tensors="pt").to(enc.device)
        with torch.no_grad():
            k = pooled(enc.model.get_text_features(**tk))
        qv = base.text_projection(base(**tq).pooler_output)
        rtd_loss(qv, k, cfg.tau).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_plain = timed(plain, enc.device, sz.repeats)
    rows["plain_fp32_step_s"] = t_plain
    rows["ratio_fp32"] = rows["off"]["step_s"]["median"] / t_plain["median"]
    rows["batch"] = sz.rtd_batch
    return rows


def part_phi(enc: HFClipEncoder, sz: Sizes) -> dict[str, Any]:
    from calibclip.cir import build_phi
    from calibclip.cir.train_phi import lincir_loss, step_noise

    caps = captions(sz.phi_batch, 5)
    masked = [c.replace(c.split()[2], "$", 1) for c in caps]  # the noun after the first adjective
    torch.manual_seed(0)
    phi = build_phi("lincir", enc.dim, enc.token_dim).to(enc.device).train()
    opt = torch.optim.AdamW(phi.parameters(), lr=1e-4, weight_decay=0.01)
    u, eps = step_noise(0, 0, len(caps), enc.dim)
    enc.model.requires_grad_(False)
    losses = []

    def ours() -> None:
        loss = lincir_loss(enc, phi, caps, masked, u, eps, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    emb = enc.model.text_model.embeddings.token_embedding

    def plain() -> None:  # the same two text passes through HF, the second with a graph to its inputs
        t1 = enc.tokenizer(caps, padding=True, return_tensors="pt").to(enc.device)
        t2 = enc.tokenizer(masked, padding=True, return_tensors="pt").to(enc.device)
        with torch.no_grad():
            e = pooled(enc.model.get_text_features(**t1))
        emb.weight.requires_grad_(True)
        try:
            torch.nn.functional.mse_loss(pooled(enc.model.get_text_features(**t2)), e).backward()
        finally:
            emb.weight.requires_grad_(False)
            emb.weight.grad = None

    t_plain = timed(plain, enc.device, sz.repeats)
    t_ours = timed(ours, enc.device, sz.repeats)
    return {"batch": len(caps), "ratio": ratio(t_ours, t_plain), "ours_s": t_ours, "plain_s": t_plain,
            "loss_first": losses[0], "loss_last": losses[-1]}


def part_ann(sz: Sizes, device: torch.device, dim: int = 512) -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"skipped": "faiss is not installed"}
    from calibclip.index.ann import build_ann, clustered_vectors, factory_string, recall_at_k, set_nprobe

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    on_gpu = device.type == "cuda" and gpus > 0
    if device.type == "cuda" and not on_gpu:
        return {"skipped": "faiss has no GPU support here (faiss-cpu); install faiss-gpu to measure IVF-PQ on the GPU"}
    x = clustered_vectors(sz.ann_vectors, dim, seed=0)
    q = clustered_vectors(sz.ann_queries, dim, seed=1)
    nprobe = 32
    t0 = time.perf_counter()
    if on_gpu:  # the index calibclip builds (same factory string), trained and searched on the GPU
        desc = factory_string("ivf-pq", len(x), dim)
        co = faiss.GpuClonerOptions()
        co.useFloat16 = True  # fp16 lookup tables: needed for 64 sub-quantisers on the GPU
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, device.index or 0, faiss.index_factory(dim, desc, faiss.METRIC_INNER_PRODUCT),
                                       co)
        nlist = int(desc.split(",")[0][len("IVF"):])
        index.train(x[np.random.default_rng(0).permutation(len(x))[: min(len(x), 64 * nlist)]])
        index.add(x)
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    else:
        index = build_ann(x, "ivf-pq", refine="none")
        nlist = faiss.extract_index_ivf(index).nlist
        set_nprobe(index, nprobe)
    build_s = time.perf_counter() - t0
    k = 10
    found: dict[str, np.ndarray] = {}

    def ours() -> None:
        found["ann"] = index.search(q, k)[1]

    xt = torch.from_numpy(x).to(device, torch.float16 if on_gpu else torch.float32)
    qt = torch.from_numpy(q).to(device, xt.dtype)

    def exact() -> None:  # the plain loop: brute-force matmul + top-k on the same device
        found["exact"] = torch.cat([(qt[a:a + 1024] @ xt.T).topk(k).indices
                                    for a in range(0, len(qt), 1024)]).cpu().numpy()

    t_exact = timed(exact, device, sz.repeats)
    t_ours = timed(ours, device, sz.repeats)
    return {"vectors": len(x), "queries": len(q), "dim": dim, "on_gpu": on_gpu, "nlist": nlist, "nprobe": nprobe,
            "build_s": build_s, "ivfpq_qps": len(q) / t_ours["median"], "exact_qps": len(q) / t_exact["median"],
            "ratio": ratio(t_ours, t_exact, throughput=True), "recall@10": recall_at_k(found["ann"], found["exact"], k)}


def run_cuda_tests(device: torch.device, timeout: int) -> dict[str, Any]:
    """``pytest -m cuda`` in a subprocess, on ``device`` (made the only visible GPU, so "cuda" means it)."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"skipped": "pytest is not installed"}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if device.index is not None:  # index into what this process sees, which may itself be a subset
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[device.index] if device.index < len(visible) else str(device.index)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return {"exit_code": proc.returncode, "summary": tail[-1] if tail else "", "seconds": time.perf_counter() - t0,
            "failures": [ln for ln in tail if ln.startswith(("FAILED", "ERROR"))][:20]}


# ---------------------------------------------------------------------------------------------- report
def _f(x: Any, spec: str = ".3g") -> str:
    return "–" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def markdown(report: dict[str, Any]) -> str:
    """One Markdown table of the headline figures per model, then what was skipped or failed."""
    env = report["environment"]
    lines = [f"# Device check — {env['device_name']} ({report['mode']} mode)", "",
             f"torch {env['torch']}, transformers {env['transformers']}, CUDA {env['cuda']}, "
             f"{env['cpu_count']} CPU cores; medians of {report['repeats']} repeats; ratio = calibclip / plain "
             "transformers loop in the same run.", "",
             "| model | figure | value | ratio | target |", "|---|---|---|---|---|"]
    for name, parts in report["models"].items():
        def row(fig: str, val: Any, r: Any, target: str = "") -> None:
            lines.append(f"| {name} | {fig} | {val} | {_f(r)} | {target} |")
        ix = parts.get("indexing", {})
        if "ratio" in ix:
            row("indexing img/s (GPU util %)", f"{ix['ours_img_s']:.1f} ({_f(ix['gpu_util_mean_pct'], '.0f')})",
                ix["ratio"], "≥ 0.9× forward limit")
        tx = parts.get("text", {})
        if "ratio" in tx:
            row("text encoding texts/s", f"{tx['ours_text_s']:.1f}", tx["ratio"])
        cc = parts.get("calib", {})
        if "image_overhead" in cc:
            row("CalibCLIP image time", "", cc["image_overhead"], "≤ 1.15×")
            row("CalibCLIP text time", "", cc["text_overhead"])
        rt = parts.get("rtd", {})
        for mode in ("off", "fp16", "bf16"):
            m = rt.get(mode, {})
            if "loss" in m:
                diff = m.get("loss_rel_diff_vs_fp32")
                row(f"RTD step b{rt['batch']} {'fp32' if mode == 'off' else mode} s (peak MiB, Δloss)",
                    f"{m['step_s']['median']:.3g} ({_f(m['peak_mib'], '.0f')}, {_f(diff, '.2%')})",
                    rt["ratio_fp32"] if mode == "off" else None, "Δloss ≤ 2 %" if mode == "fp16" else "")
        ph = parts.get("phi", {})
        if "ratio" in ph:
            row(f"LinCIR φ step b{ph['batch']} s", f"{ph['ours_s']['median']:.3g}", ph["ratio"])
    ev = report.get("eval", {})
    if "ratio" in ev:
        lines.append(f"| – | calibrated eval {ev['gallery']}×{ev['captions']} s | {ev['calib_s']['median']:.3g} | "
                     f"{_f(ev['ratio'])} | |")
    an = report.get("ann", {})
    if "ratio" in an:
        lines.append(f"| – | IVF-PQ {an['vectors']} vectors q/s (recall@10) | {an['ivfpq_qps']:.0f} "
                     f"({an['recall@10']:.3f}) | {_f(an['ratio'])} | |")
    tests = report.get("cuda_tests", {})
    lines += ["", f"cuda tests: {tests.get('summary') or tests.get('skipped', '–')}", ""]
    for what, met in report.get("targets", {}).items():
        lines.append(f"- target {what}: {'met' if met else 'not met' if met is False else 'not measured'}")
    for what, why in report["skipped"].items():
        lines.append(f"- skipped {what}: {why}")
    for what, err in report["failed"].items():
        lines.append(f"- FAILED {what}: {err.splitlines()[-1] if err else ''}")
    return "\n".join(lines) + "\n"


def targets(report: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets per model: met (True/False), or None where the figure is missing (skipped/failed)."""
    out: dict[str, bool | None] = {}
    for name, parts in report["models"].items():
        ix = parts.get("indexing", {}).get("ratio")
        cc = parts.get("calib", {}).get("image_overhead")
        fp16 = parts.get("rtd", {}).get("fp16", {}).get("loss_rel_diff_vs_fp32")
        out[f"{name}: indexing >= 0.9x plain forward"] = None if ix is None else ix >= 0.9
        out[f"{name}: CalibCLIP image overhead <= 1.15x"] = None if cc is None else cc <= 1.15
        out[f"{name}: RTD fp16 loss within 2% of fp32"] = None if fp16 is None else fp16 <= 0.02
    return out


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    return {"device": str(device), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or "cpu"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("results/device_check"))
    ap.add_argument("--small", action="store_true", help="tiny model and sizes (CPU test of the script itself)")
    ap.add_argument("--models", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    ap.add_argument("--no-tests", action="store_true", help="do not run `pytest -m cuda`")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--test-timeout", type=int, default=240)
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="parts not started within this many seconds are skipped (the report is always written)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device on this machine; use --device cpu --small.", file=sys.stderr)
        return 2
    sz = SMALL if args.small else FULL
    if args.repeats:
        sz = replace(sz, repeats=args.repeats)
    models = {"small": SMALL_CONFIG} if args.small else {m: CONFIGS[m] for m in args.models.split(",") if m}
    report: dict[str, Any] = {"mode": "small" if args.small else "full", "repeats": sz.repeats,
                              "sizes": sz.__dict__, "environment": environment(device), "models": {},
                              "skipped": {}, "failed": {}, "part_seconds": {}}
    t_start = time.perf_counter()

    def attempt(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if time.perf_counter() - t_start > args.budget_s:
            report["skipped"][what] = f"time budget of {args.budget_s:.0f} s spent"
            return {}
        print(f"[device-check] {what} ...", flush=True)
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception:  # noqa: BLE001 - one failing part must not hide the others' figures
            report["failed"][what] = traceback.format_exc(limit=3)
            print(f"[device-check] {what} FAILED:\n{report['failed'][what]}", file=sys.stderr, flush=True)
            return {}
        if "skipped" in out:
            report["skipped"][what] = out["skipped"]
        report["part_seconds"][what] = round(time.perf_counter() - t0, 2)
        return out

    if not args.no_tests and device.type == "cuda":
        report["cuda_tests"] = attempt("cuda tests", lambda: run_cuda_tests(device, args.test_timeout))
        if report["cuda_tests"].get("exit_code") not in (0, None):
            report["failed"]["cuda tests"] = report["cuda_tests"].get("summary", "")
    elif not args.no_tests:
        report["skipped"]["cuda tests"] = "not on a CUDA device"
    dim = 512
    with tempfile.TemporaryDirectory(prefix="calibclip-devcheck-") as tmp:
        for name, cfg in models.items():
            work = Path(tmp) / name.replace("/", "_")
            work.mkdir(parents=True)
            parts: dict[str, Any] = {}
            enc = attempt(f"{name} build", lambda: {"enc": build_encoder(name, cfg, device, work)}).get("enc")
            if enc is None:
                continue
            dim = enc.dim
            parts["params_m"] = sum(p.numel() for p in enc.model.parameters()) / 1e6
            parts["indexing"] = attempt(f"{name} indexing", lambda: part_indexing(enc, sz, work))
            parts["text"] = attempt(f"{name} text encoding", lambda: part_text(enc, sz))
            parts["calib"] = attempt(f"{name} calib overhead", lambda: part_calib(enc, sz))
            parts["rtd"] = attempt(f"{name} rtd step", lambda: part_rtd(enc, sz))
            parts["phi"] = attempt(f"{name} phi step", lambda: part_phi(enc, sz))
            report["models"][name] = parts
            del enc
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["eval"] = attempt("calibrated eval", lambda: part_eval(dim, sz, device))
    report["ann"] = attempt("ivf-pq", lambda: part_ann(sz, device, 64 if args.small else 512))
    report["targets"] = targets(report)
    report["seconds"] = time.perf_counter() - t_start
    atomic_write_text(args.out / "device_check.json", json.dumps(report, indent=1, default=str) + "\n")
    atomic_write_text(args.out / "device_check.md", markdown(report))
    print(markdown(report))
    print(f"[device-check] wrote {args.out}/device_check.json and .md in {report['seconds']:.0f} s")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
