"""Our LoRA (`llm_course.lora.add_lora`) against peft's LoRA on MiniLM sequence classification, and full fine-tuning.

Same model (all-MiniLM-L6-v2 + a 5-class head), same batch of BBC articles, same settings (r=8, lora_alpha=16,
target_modules=["query", "value"], the head trained in full), same AdamW. Each configuration runs in its own fresh
process, so its peak memory is that process's max RSS (`resource.getrusage`), and the configurations are interleaved
over several rounds (the order rotates every round), so machine noise hits all of them alike. Per step we record wall
time and this process's CPU time (with one thread, CPU time is the steadier measure on a shared machine).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/lora_vs_peft.py            # batch 16 x 128 tokens, 3 rounds
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/lora_vs_peft.py --quick    # small sizes, one round

Targets: our step time <= 1.05x peft's, our peak memory within 5% of peft's.
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

CONFIGS = ["ours", "peft", "full"]


def worker(config: str, batch_size: int, max_length: int, warmup: int, steps: int) -> dict:
    "One configuration in this (fresh) process: time `steps` training steps after `warmup`; report times and max RSS."
    os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from llm_course.core import set_seed
    from llm_course.assets import load_minilm_classifier, load_minilm_tokenizer
    from llm_course.data import load_bbc, BBC_LABELS
    set_seed(0)
    model = load_minilm_classifier(len(BBC_LABELS), BBC_LABELS)
    data = load_bbc().sample(batch_size, seed=0)
    enc = load_minilm_tokenizer()(
        data.texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
    )
    batch = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=torch.tensor(data.labels))
    if config == "ours":
        from llm_course.lora import add_lora
        add_lora(model, ["query", "value"], r=8, lora_alpha=16, modules_to_save=["classifier"])
    elif config == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["classifier"])
        )
    elif config != "full": raise ValueError(config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KB on Linux: weights, libraries, batch
    wall, cpu = [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(**batch).loss
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        if i >= warmup: wall.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(
        config=config,
        trainable=sum(p.numel() for p in params),
        loss=loss.item(),
        wall_s=statistics.median(wall),
        cpu_s=statistics.median(cpu),
        rss_before_mb=rss_before / 1024,
        rss_peak_mb=rss_peak / 1024,
        train_delta_mb=(rss_peak - rss_before) / 1024,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 4 x 32 tokens, 1 warm-up, 3 steps, 1 round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick: a.rounds, a.batch_size, a.max_length, a.warmup, a.steps = 1, 4, 32, 1, 3
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.batch_size, a.max_length, a.warmup, a.steps)), flush=True)
        return

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    args = [
        "--batch-size",
        str(a.batch_size),
        "--max-length",
        str(a.max_length),
        "--warmup",
        str(a.warmup),
        "--steps",
        str(a.steps),
    ]
    runs = {c: [] for c in CONFIGS}
    load0 = os.getloadavg()[0]
    for r in range(a.rounds):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]  # rotate: no configuration always goes first
        for c in order:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", c, *args], env=env, capture_output=True, text=True
            )
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if out.returncode or line is None: sys.exit(f"worker {c} failed:\n{out.stderr[-3000:]}")
            runs[c].append(json.loads(line[7:]))
            print(
                f"round {r + 1}/{a.rounds} {c:5s} wall {runs[c][-1]['wall_s']:.3f} s/step, cpu "
                f"{runs[c][-1]['cpu_s']:.3f} s/step, "
                f"peak RSS {runs[c][-1]['rss_peak_mb']:.0f} MB",
                flush=True,
            )
    med = {
        c: {
            k: statistics.median(x[k] for x in runs[c])
            for k in ("wall_s", "cpu_s", "rss_before_mb", "rss_peak_mb", "train_delta_mb")
        }
        | {"trainable": runs[c][0]["trainable"]}
        for c in CONFIGS
    }
    ratios = {
        "ours/peft step wall": med["ours"]["wall_s"] / med["peft"]["wall_s"],
        "ours/peft step cpu": med["ours"]["cpu_s"] / med["peft"]["cpu_s"],
        "ours/peft peak RSS": med["ours"]["rss_peak_mb"] / med["peft"]["rss_peak_mb"],
        "ours/peft training RSS delta": med["ours"]["train_delta_mb"] / med["peft"]["train_delta_mb"],
        "full/ours step wall": med["full"]["wall_s"] / med["ours"]["wall_s"],
        "full/ours step cpu": med["full"]["cpu_s"] / med["ours"]["cpu_s"],
        "full/ours peak RSS": med["full"]["rss_peak_mb"] / med["ours"]["rss_peak_mb"],
        "full/ours training RSS delta": med["full"]["train_delta_mb"] / med["ours"]["train_delta_mb"],
    }
    print(
        f"\nMiniLM + 5-class head, batch {a.batch_size} x {a.max_length} tokens, {a.steps} timed steps after "
        f"{a.warmup}, "
        f"median of {a.rounds} rounds, {env['OMP_NUM_THREADS']} thread(s), load average {load0:.1f} -> "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'config':6s} {'trainable':>11s} {'wall s/step':>12s} {'cpu s/step':>11s} {'RSS before MB':>14s} "
        f"{'peak RSS MB':>12s} {'train delta MB':>15s}"
    )
    for c in CONFIGS:
        m = med[c]
        print(
            f"{c:6s} {m['trainable']:>11,} {m['wall_s']:>12.3f} {m['cpu_s']:>11.3f} "
            f"{m['rss_before_mb']:>14.0f} {m['rss_peak_mb']:>12.0f} {m['train_delta_mb']:>15.0f}"
        )
    print()
    for k, v in ratios.items(): print(f"{k:30s} {v:.3f}x")
    ok_time, ok_mem = ratios["ours/peft step cpu"] <= 1.05, abs(ratios["ours/peft peak RSS"] - 1) <= 0.05
    print(
        f"\ntargets: step time <= 1.05x peft: {'met' if ok_time else 'MISSED'}; "
        f"peak memory within 5%: {'met' if ok_mem else 'MISSED'}"
    )
    res = dict(
        settings=dict(
            batch_size=a.batch_size,
            max_length=a.max_length,
            warmup=a.warmup,
            steps=a.steps,
            rounds=a.rounds,
            threads=env["OMP_NUM_THREADS"],
            r=8,
            lora_alpha=16,
            target_modules=["query", "value"],
        ),
        machine=dict(
            platform=platform.platform(),
            cpus=os.cpu_count(),
            loadavg_start=load0,
            loadavg_end=os.getloadavg()[0],
            when=time.strftime("%Y-%m-%d %H:%M:%S"),
        ),
        median=med,
        ratios=ratios,
        targets=dict(step_time=ok_time, peak_memory=ok_mem),
        runs=runs,
    )
    out = Path(__file__).parent / "results" / "lora_vs_peft.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
