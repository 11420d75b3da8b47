"""Load test of `calibclip serve`: /search/text under concurrent clients vs. calling search in-process.

    python benchmarks/serve_load.py [--duration 30] [--clients 16] [--size base|tiny] [--n 1000]
                                    [--index IDX] [--threads 1] [--json out.json]

Builds a random CLIP (``--size base``: a ViT-B-sized 12-layer 512-wide text tower, so each query
costs what a real one does; ``tiny`` measures the HTTP overhead alone) and a synthetic
collection, unless ``--index`` names an existing index. Then, in one run on this machine:

1. baseline: ``Index.search(query, k)`` called in a loop in this process for ``--duration`` s;
2. served: ``calibclip serve`` started as a subprocess on 127.0.0.1 (a free port), and
   ``--clients`` threads each POSTing /search/text over a keep-alive connection for the same time.

Prints requests/s, p50/p99 latency of both, the ratio served/direct of throughput, and the number
of failed requests (any non-200 or wrong-length answer; must be 0). Only loopback traffic. Model
calls are serialised by the server, so the ideal ratio is ~1.0; the gap is HTTP + JSON overhead.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

QUERIES = ["a red car", "a dog on the grass", "two cats on a sofa", "a city street at night",
           "a bowl of fruit", "a mountain lake", "a person riding a bike", "a small boat at sea"]


def make_collection(root: Path, size: str, n: int, threads: int) -> Path:
    """Random model + ``n`` synthetic images, indexed; returns the index path."""
    import torch
    from PIL import Image

    import calibclip
    from calibclip.index import Index
    from calibclip.testing import tiny_clip

    torch.set_num_threads(threads)
    kw = dict(width=512, layers=12, heads=8, projection_dim=512) if size == "base" else {}
    model_dir = tiny_clip(root / f"model-{size}", seed=0, **kw)
    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray((rng.rand(8, 8, 3) * 255).astype("uint8")).resize((48, 40)).save(folder / f"{i:05d}.png")
    enc = calibclip.load(str(model_dir), device="cpu")
    Index.build(folder, enc, out=root / "photos.idx", batch_size=128, num_workers=0, progress=True)
    return root / "photos.idx"


def percentiles(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    a = np.asarray(lat) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def direct(index_path: Path, duration: float, k: int, threads: int) -> dict:
    """The baseline: the search function itself, in this process, back to back."""
    import torch

    import calibclip
    from calibclip.index import Index

    torch.set_num_threads(threads)
    index = Index.open(index_path)
    index.encoder = calibclip.load(index.store.get_info("model"), device="cpu")
    index.search(QUERIES[0], k=k)  # warm-up: matrix, FAISS, first forward
    lat, n = [], 0
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        index.search(QUERIES[n % len(QUERIES)], k=k)
        lat.append(time.perf_counter() - t0)
        n += 1
    return {"requests": n, "rps": n / duration, "failed": 0, "p50_ms": percentiles(lat)[0],
            "p99_ms": percentiles(lat)[1]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_path: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("CALIBCLIP_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "calibclip.cli", "serve", str(index_path), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early:\n{proc.stderr.read()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not answer /health within 180 s")


def served(port: int, duration: float, clients: int, k: int) -> dict:
    """``clients`` threads, one keep-alive connection each, POSTing /search/text until the deadline."""
    lat: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    end_box = [0.0]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad, i = [], [], c
        start.wait()
        while time.perf_counter() < end_box[0]:
            body = json.dumps({"query": QUERIES[i % len(QUERIES)], "k": k})
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/search/text", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and len(json.loads(data)["hits"]) == k
                if not ok:
                    bad.append(f"{resp.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                bad.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            lat.extend(mine)
            failures.extend(bad)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    end_box[0] = t_start + duration
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    p50, p99 = percentiles(lat)
    return {"requests": len(lat), "rps": len(lat) / elapsed, "failed": len(failures), "p50_ms": p50, "p99_ms": p99,
            "first_failures": failures[:5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per measurement (default 30)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--size", choices=["base", "tiny"], default="base", help="random model's text tower size")
    ap.add_argument("--n", type=int, default=1000, help="synthetic collection size")
    ap.add_argument("--index", type=Path, help="use this existing index (its model must be local)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        index_path = args.index or make_collection(Path(tmp), args.size, args.n, args.threads)
        base = direct(index_path, args.duration, args.k, args.threads)
        port = free_port()
        proc = start_server(index_path, port, args.threads)
        try:
            served(port, min(2.0, args.duration), args.clients, args.k)  # warm-up, not counted
            srv = served(port, args.duration, args.clients, args.k)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    ratio = srv["rps"] / base["rps"] if base["rps"] else float("nan")
    print(f"\n/search/text, k={args.k}, {args.duration:g} s each, model={args.index or args.size}, "
          f"torch threads={args.threads}, {os.cpu_count()} CPUs")
    print(f"{'':28s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}{'failed':>8s}{'requests':>10s}")
    for name, r in (("direct (in-process, 1 thread)", base), (f"served ({args.clients} clients, HTTP)", srv)):
        print(f"{name:28s}{r['rps']:10.1f}{r['p50_ms']:10.2f}{r['p99_ms']:10.2f}{r['failed']:8d}{r['requests']:10d}")
    print(f"served/direct throughput ratio: {ratio:.2f}x  (failed requests: {srv['failed']})")
    if srv["failed"]:
        print("first failures:", *srv["first_failures"], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps({"direct": base, "served": srv, "ratio": ratio, "args": {
            k: str(v) for k, v in vars(args).items()}}, indent=1))
    sys.exit(1 if srv["failed"] else 0)


if __name__ == "__main__":
    main()
