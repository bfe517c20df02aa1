"""`llm-course serve`'s stack under load: FastAPI + uvicorn on 127.0.0.1, with micro-batching on and off, against
calling
the model directly in the same process.

The model is lesson 11's intent router (MiniLM sentence vectors + nearest centroid). Every request carries one customer
message, the hardest case for a server. For 1, 16, 64 and 200 concurrent clients (each its own keep-alive connection)
it prints requests/s, p50 and p99 latency, failed requests and the model calls made; the direct rows are the router
called in-process on one text at a time and on batches of 32 (the ceiling batching can approach).

    OMP_NUM_THREADS=2 python bench/serve.py               # 1, 16, 64, 200 clients, 4 requests per client (at least 64)
    python bench/serve.py --quick                         # 1, 16, 200 clients, fewer requests

Targets: no failed request at any concurrency; with 16 clients or more, batching serves more requests/s than one call
per request. The script exits with status 1 when a target is missed. Results: bench/results/serve.json.
"""
import argparse, json, os, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import numpy as np

from llm_course.apps import Embedder, IntentRouter, NearestCentroid
from llm_course.data import load_intents, split_data
from llm_course.serving import Limits, create_app, load_test, run_in_thread


def direct(router, texts, batch):
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch): router.predict(texts[s:s + batch])
    return len(texts) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    levels = [1, 16, 200] if args.quick else [1, 16, 64, 200]
    intents = load_intents()
    train, _, test = split_data(intents, valid=0.2, test=0.2, seed=0)
    embed = Embedder(max_length=64)
    router = IntentRouter(
        embed, NearestCentroid().fit(embed(train.texts), np.array(train.labels)), intents.label_names, 0.5
    )
    texts = test.texts * 10
    router.predict(texts[:32])   # warm-up
    n_direct = 64 if args.quick else 256
    rows = [dict(mode="direct, 1 text per call", requests_per_s=direct(router, texts[:n_direct], 1)),
            dict(mode="direct, 32 texts per call", requests_per_s=direct(router, texts[:n_direct], 32))]
    for clients in levels:
        n = max(64 if not args.quick else 32, (2 if args.quick else 4) * clients)
        payloads = [{"text": t} for t in (texts * (n // len(texts) + 1))[:n]]
        for batching in (False, True):
            app = create_app(
                router.predict, name="intents", limits=Limits(max_batch=32, max_wait_ms=5), batching=batching
            )
            with run_in_thread(app) as url:
                load_test(url + "/predict", payloads[:8], clients=min(clients, 8))   # warm-up
                app.state.batcher.calls = 0
                r = load_test(url + "/predict", payloads, clients=clients)
            r.update(
                mode=f"HTTP, {'micro-batching' if batching else 'one call per request'}",
                model_calls=app.state.batcher.calls,
            )
            rows.append(r)
            print(f"{r['mode']:38} clients {clients:4d}: {r['requests_per_s']:7.1f} req/s, p50 {r['p50_ms']:7.1f} ms, "
                  f"p99 {r['p99_ms']:8.1f} ms, failed {r['failed']}, model calls {r['model_calls']}", flush=True)
    print()
    print(f"{'mode':38} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6} {'calls':>6}")
    for r in rows:
        print(
            f"{r['mode']:38} {r.get('clients', '-'):>7} {r['requests_per_s']:8.1f} "
            f"{r.get('p50_ms', float('nan')):8.1f} "
            f"{r.get('p99_ms', float('nan')):8.1f} {r.get('failed', '-'):>6} {r.get('model_calls', '-'):>6}"
        )
    failed = sum(r.get("failed", 0) for r in rows)
    gains = {r1["clients"]: r2["requests_per_s"] / r1["requests_per_s"]
             for r1, r2 in zip(rows[2::2], rows[3::2]) if r1["clients"] >= 16}
    print(f"\nfailed requests in all runs: {failed}")
    print("batching / one call per request (req/s): " + ", ".join(f"{c} clients {g:.2f}x" for c, g in gains.items()))
    print(f"direct batches of 32 / direct single texts: {rows[1]['requests_per_s'] / rows[0]['requests_per_s']:.2f}x")
    out = Path(__file__).parent / "results" / "serve.json"
    out.write_text(json.dumps(dict(rows=rows, gains=gains, load=os.getloadavg()[0], quick=args.quick), indent=1))
    ok = failed == 0 and all(g > 1 for g in gains.values())
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
