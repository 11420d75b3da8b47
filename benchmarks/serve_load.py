"""Load test of `calibclip serve`: /search/text under concurrent clients vs. calling search in-process.

    python benchmarks/serve_load.py [--duration 30] [--clients 1,8,32] [--size base|tiny] [--n 1000]
                                    [--index IDX] [--threads 1] [--uploads 16] [--no-text] [--json out.json]

Builds a random CLIP (``--size base``: a ViT-B-sized 12-layer 512-wide text tower, so each query
costs what a real one does; ``tiny`` measures the HTTP overhead alone) and a synthetic
collection, unless ``--index`` names an existing index. Then, in one run on this machine:

1. baselines in this process for ``--duration`` s each: ``Index.search(query, k)`` one query per
   call, and ``Index.search([32 queries], k)`` (what the server's micro-batching can reach at best);
2. served: ``calibclip serve`` started as a subprocess on 127.0.0.1 (a free port); for each
   ``--clients`` count, that many threads each POST /search/text over a keep-alive connection.
3. uploads (``--uploads N``, before the text load): N clients POST the same large, highly
   compressible PNG (7100x5400 = 38 Mpx, ~100 KB) to /search/image at once; the server's resident
   memory before and its peak (VmHWM from /proc) are printed. This is the memory-exhaustion test.

Prints requests/s, p50/p99 latency, the ratios served / one-query-per-call (what micro-batching
buys) and served / 32-queries-per-call (what the HTTP layer costs; ideal ~1.0 under load), and the
number of failed requests (any non-200 or wrong-length answer; must be 0). Only loopback traffic.
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


def direct(index_path: Path, duration: float, k: int, threads: int, batch: int = 1) -> dict:
    """A baseline: the search function itself, in this process, back to back, ``batch`` queries a call.

    ``rps`` counts queries answered per second; the latencies are per call.
    """
    import torch

    import calibclip
    from calibclip.index import Index

    torch.set_num_threads(threads)
    index = Index.open(index_path)
    index.encoder = calibclip.load(index.store.get_info("model"), device="cpu")
    index.search(QUERIES[0], k=k)  # warm-up: matrix, FAISS, first forward
    lat, n = [], 0
    t_start = time.perf_counter()
    end = t_start + duration
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        if batch == 1:
            index.search(QUERIES[n % len(QUERIES)], k=k)
        else:
            index.search([QUERIES[(n + i) % len(QUERIES)] for i in range(batch)], k=k)
        lat.append(time.perf_counter() - t0)
        n += batch
    elapsed = time.perf_counter() - t_start
    return {"requests": n, "rps": n / elapsed, "failed": 0, "p50_ms": percentiles(lat)[0],
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


def text_batches(port: int) -> tuple[int, int]:
    """(batches, queries) the server's text micro-batcher has run so far (from /stats)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/stats")
    tb = json.loads(conn.getresponse().read())["text_batches"]
    conn.close()
    return tb["batches"], tb["queries"]


def served(port: int, duration: float, clients: int, k: int) -> dict:
    """``clients`` threads, one keep-alive connection each, POSTing /search/text until the deadline."""
    b0, q0 = text_batches(port)
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
    b1, q1 = text_batches(port)
    return {"requests": len(lat), "rps": len(lat) / elapsed, "failed": len(failures), "p50_ms": p50, "p99_ms": p99,
            "mean_batch": (q1 - q0) / max(1, b1 - b0), "first_failures": failures[:5]}


def big_png(size: tuple[int, int] = (7100, 5400)) -> bytes:
    """A highly compressible PNG (7100x5400 = 38 Mpx in ~140 KB passes a 10 MB / 40 Mpx check; 115 MB decoded)."""
    import io

    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, (30, 90, 160))
    ImageDraw.Draw(img).ellipse((w // 7, h // 7, w * 6 // 7, h * 6 // 7), fill=(220, 180, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def memory_mb(pid: int) -> dict:
    """Current (VmRSS) and peak (VmHWM) resident memory of ``pid`` in MB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def uploads(port: int, pid: int, n: int, k: int, size: tuple[int, int]) -> dict:
    """``n`` simultaneous POST /search/image of a big PNG; the server's memory before and at peak."""
    data = big_png(size)
    boundary = "calibclipbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n{k}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    before = memory_mb(pid)
    statuses: list[int] = []
    start = threading.Barrier(n)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start.wait()
        conn.request("POST", "/search/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = memory_mb(pid)
    return {"png_bytes": len(data), "pixels": size[0] * size[1], "uploads": n, "seconds": time.perf_counter() - t0,
            "statuses": sorted(statuses), "rss_before_mb": before["VmRSS"], "peak_rss_mb": after["VmHWM"],
            "rss_after_mb": after["VmRSS"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per measurement (default 30)")
    ap.add_argument("--clients", default="1,8,32", help="client counts to measure, comma-separated")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--size", choices=["base", "tiny"], default="base", help="random model's text tower size")
    ap.add_argument("--n", type=int, default=1000, help="synthetic collection size")
    ap.add_argument("--index", type=Path, help="use this existing index (its model must be local)")
    ap.add_argument("--keep", type=Path, help="build the collection here and keep it (reuse with --index)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--uploads", type=int, default=16, help="simultaneous 38 Mpx PNG uploads (0: skip)")
    ap.add_argument("--no-text", action="store_true", help="only the upload memory test")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    results: dict = {"served": {}}
    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        index_path = args.index or make_collection(args.keep or Path(tmp), args.size, args.n, args.threads)
        if not args.no_text:
            results["direct"] = direct(index_path, args.duration, args.k, args.threads)
            results["direct32"] = direct(index_path, args.duration, args.k, args.threads, batch=32)
        port = free_port()
        proc = start_server(index_path, port, args.threads)
        try:
            if args.uploads:  # 38 Mpx (the report's image), then 15.3 Mpx (under a 16 Mpx decode cap)
                results["uploads"] = [uploads(port, proc.pid, args.uploads, args.k, size)
                                      for size in ((7100, 5400), (4500, 3400))]
            if not args.no_text:
                served(port, min(2.0, args.duration), max(clients), args.k)  # warm-up, not counted
                for c in clients:
                    results["served"][c] = served(port, args.duration, c, args.k)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print(f"\nmodel={args.index or args.size}, torch threads={args.threads}, {os.cpu_count()} CPUs, "
          f"{len(os.sched_getaffinity(0))} usable")
    failed = 0
    for u in results.get("uploads", []):
        print(f"{u['uploads']} simultaneous uploads of a {u['png_bytes'] / 1024:.0f} KB {u['pixels'] / 1e6:.0f} Mpx "
              f"PNG: server RSS {u['rss_before_mb']:.0f} MB before, peak {u['peak_rss_mb']:.0f} MB, "
              f"{u['rss_after_mb']:.0f} MB after; {u['seconds']:.1f} s; statuses {sorted(set(u['statuses']))}"
              " (peak = VmHWM since the server started)")
    if not args.no_text:
        base, base32 = results["direct"], results["direct32"]
        print(f"/search/text, k={args.k}, {args.duration:g} s each")
        print(f"{'':34s}{'req/s':>9s}{'p50 ms':>9s}{'p99 ms':>9s}{'failed':>8s}{'requests':>9s}"
              f"{'/1-per-call':>12s}{'/32-per-call':>13s}{'batch':>7s}")
        rows = [("direct, 1 query a call", base), ("direct, 32 queries a call", base32)]
        rows += [(f"served, {c} client{'s' * (c > 1)} (HTTP)", r) for c, r in results["served"].items()]
        for name, r in rows:
            print(f"{name:34s}{r['rps']:9.1f}{r['p50_ms']:9.1f}{r['p99_ms']:9.1f}{r['failed']:8d}{r['requests']:9d}"
                  f"{r['rps'] / base['rps']:11.2f}x{r['rps'] / base32['rps']:12.2f}x"
                  + (f"{r['mean_batch']:7.1f}" if "mean_batch" in r else ""))
            failed += r["failed"]
        for r in results["served"].values():
            if r["failed"]:
                print("first failures:", *r["first_failures"], sep="\n  ")
        print("(p50/p99 of the direct rows are per call; 32-query calls answer 32 queries each; batch: mean "
              "queries per model call in the server)")
    if args.json:
        args.json.write_text(json.dumps({**results, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
