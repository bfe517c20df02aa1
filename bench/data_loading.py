"""How fast are the `llm_course.data` loaders, and how much encoder compute does dynamic padding save?

Part 1, loading: each loader's time against a floor measured in the same run: reading and decoding every BBC file,
or reading, decoding and `csv`-parsing the tweets file (what any loader must do); the table shows loader / floor
(and seconds, for orientation only).
Part 2, padding: all-MiniLM-L6-v2 forward passes (inference, fp32) over the same tweets, batched by `make_loader`
(dynamic padding), by the same tokenizer with padding="max_length" (fixed), and dynamically padded after sorting by
length. The table shows time relative to fixed padding and the measured padding fraction. Rounds alternate the
variants so that load from other processes hits all alike; medians over rounds.

    OMP_NUM_THREADS=1 python bench/data_loading.py            # 256 tweets, max_length 128, batch 32
    OMP_NUM_THREADS=1 python bench/data_loading.py --quick    # 128 tweets
"""
import argparse, csv, io, json, os, platform, statistics, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch
import transformers

from llm_course.core import asset_path
from llm_course.data import (
    load_bbc,
    load_corpus,
    load_intents,
    load_tweets,
    make_loader,
    padding_fraction,
    split_data,
)


def best_of(fn, n=3):
    "Fastest of n runs, in seconds (the least disturbed by other processes)."
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)


def bench_loading():
    bbc_files = sorted(asset_path("bbc").glob("*/*.txt"))
    floor_bbc = best_of(lambda: [f.read_bytes().decode("latin-1") for f in bbc_files])
    floor_tweets = best_of(
        lambda: list(csv.reader(io.StringIO(asset_path("tweets").read_bytes().decode("latin-1"), newline="")))
    )
    tweets = load_tweets()
    rows = [
        ("load_bbc()", best_of(load_bbc), floor_bbc),
        ("load_bbc(dedupe=False)", best_of(lambda: load_bbc(dedupe=False)), floor_bbc),
        ("load_tweets()", best_of(load_tweets), floor_tweets),
        ("load_tweets('apple')", best_of(lambda: load_tweets("apple")), floor_tweets),
        ("load_corpus()", best_of(load_corpus), floor_bbc),
        ("split_data(tweets)", best_of(lambda: split_data(tweets)), floor_tweets),
        ("load_intents()", best_of(load_intents), None),
    ]
    return [
        dict(
            what=w,
            seconds=round(s, 4),
            floor_seconds=None if f is None else round(f, 4),
            ratio=None if f is None else round(s / f, 1),
        )
        for w, s, f in rows
    ]


def bench_padding(n, max_length, batch_size, rounds):
    from transformers import AutoModel, AutoTokenizer
    path = str(asset_path("minilm").parent)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    data = load_tweets().sample(n, seed=0)
    lengths = [len(x) for x in tok(data.texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(n), key=lambda i: lengths[i])
    fixed = [
        tok(
            data.texts[i : i + batch_size],
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="pt",
        )
        for i in range(0, n, batch_size)
    ]
    variants = {
        "fixed (max_length)": (fixed, padding_fraction(lengths, batch_size, max_length)),
        "dynamic": (
            list(make_loader(data, tok, batch_size=batch_size, max_length=max_length)),
            padding_fraction(lengths, batch_size),
        ),
        "dynamic, sorted": (
            list(make_loader(data.subset(order), tok, batch_size=batch_size, max_length=max_length)),
            padding_fraction([lengths[i] for i in order], batch_size),
        ),
    }
    def run(batches):
        with torch.inference_mode():
            for b in batches: model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    run(variants["dynamic"][0][:1])  # warm-up
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, (batches, _) in variants.items():
            t0 = time.perf_counter(); run(batches); times[k].append(time.perf_counter() - t0)
    ref = statistics.median(times["fixed (max_length)"])
    return [dict(variant=k, pad_fraction=round(variants[k][1], 3), seconds=round(statistics.median(t), 3),
                 ratio_to_fixed=round(statistics.median(t) / ref, 3)) for k, t in times.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    n, rounds = (128, 2) if a.quick else (256, 3)
    loading = bench_loading()
    print("| loader | seconds | floor (read, decode, parse) | loader / floor |\n|---|---|---|---|")
    for r in loading:
        floor = "" if r["floor_seconds"] is None else f"{r['floor_seconds']:.3f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']}x"
        print(f"| {r['what']} | {r['seconds']:.3f} | {floor} | {ratio} |")
    padding = bench_padding(n, 128, 32, rounds)
    print(
        f"\nMiniLM forward over {n} tweets, batch 32, max_length 128, {torch.get_num_threads()} thread(s), median of "
        f"{rounds} rounds"
    )
    print("| batching | padding | seconds | time / fixed |\n|---|---|---|---|")
    for r in padding:
        print(f"| {r['variant']} | {r['pad_fraction']:.0%} | {r['seconds']:.2f} | {r['ratio_to_fixed']:.2f} |")
    out = Path(__file__).parent / "results" / "data_loading.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                loading=loading,
                padding=padding,
                n=n,
                rounds=rounds,
                threads=torch.get_num_threads(),
                torch=torch.__version__,
                transformers=transformers.__version__,
                python=platform.python_version(),
            ),
            indent=1,
        )
    )
    print(f"\nsaved {out}")


if __name__ == "__main__":
    sys.exit(main())
