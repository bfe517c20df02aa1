"""What do length-grouped training batches save? MiniLM fine-tuning steps on tweets, shuffled vs grouped, in one run.

Lesson 06 trains on the tweets with `grouped_loader` (`LengthGroupedSampler`: shuffle, sort windows of 50 batches by
length, cut, shuffle the batches) instead of `make_loader(..., shuffle=True)`. This script takes the lesson's cpu
training set (2,000 tweets, batches of 16, max_length 128), builds both loaders and runs full fine-tuning steps
(forward, backward, AdamW) of one all-MiniLM-L6-v2 classifier, alternating blocks of steps between the two loaders,
and reports process CPU seconds per step (the reference is the shuffled loader, 1.00x), the padded and real tokens
of the batches drawn, and the padding share. Wall time on a shared machine is not reported: compare CPU.

    OMP_NUM_THREADS=1 python bench/length_grouped.py             # 3 rounds of 6 steps per loader
    OMP_NUM_THREADS=1 python bench/length_grouped.py --rounds 5
"""
import argparse, datetime, itertools, json, os, platform, sys, time
from pathlib import Path

os.environ["LLM_COURSE_PROFILE"] = "cpu"   # the lesson's cpu sizes
from llm_course.assets import load_minilm, load_minilm_tokenizer
from llm_course.core import set_seed
from llm_course.data import load_tweets, make_loader, split_data
from llm_course.heads import SequenceClassifier, grouped_loader
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="steps per loader in each round")
    a = ap.parse_args(argv)
    set_seed()
    tok = load_minilm_tokenizer()
    train = split_data(load_tweets(), valid=0.1, test=0.1, seed=0).train.sample(2000)  # as lesson 06 at cpu
    loaders = {
        "shuffled": make_loader(train, tok, batch_size=16, shuffle=True),
        "grouped": grouped_loader(train, tok, 16),
    }
    batches = {k: itertools.chain.from_iterable(itertools.repeat(v, 3)) for k, v in loaders.items()}
    model = SequenceClassifier(load_minilm(), 3, pooling="mean").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    cpu, padded, real = ({k: 0 for k in loaders} for _ in range(3))
    for r in range(a.rounds):
        for k in loaders:
            for _ in range(a.steps):
                b = next(batches[k]); c0 = time.process_time()
                model(b["input_ids"], b["attention_mask"], b["labels"])[1].backward(); opt.step(); opt.zero_grad()
                cpu[k] += time.process_time() - c0
                padded[k] += b["input_ids"].numel(); real[k] += int(b["attention_mask"].sum())
        print(f"round {r + 1}: CPU s " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()), file=sys.stderr, flush=True)
    n = a.rounds * a.steps
    rows = {k: dict(cpu_s_per_step=round(cpu[k] / n, 3), padded_tokens_per_step=round(padded[k] / n, 1),
                    padding=round(1 - real[k] / padded[k], 3)) for k in loaders}
    res = dict(rows=rows, grouped_over_shuffled_cpu=round(cpu["grouped"] / cpu["shuffled"], 3),
               grouped_over_shuffled_tokens=round(padded["grouped"] / padded["shuffled"], 3), steps_each=n,
               threads=torch.get_num_threads(), load_avg=round(os.getloadavg()[0], 1), cores=os.cpu_count(),
               machine=platform.processor() or platform.machine(), date=datetime.date.today().isoformat())
    print("| loader | CPU s / step | padded tokens / step | padding |\n|---|---:|---:|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v['cpu_s_per_step']:.3f} | {v['padded_tokens_per_step']:.0f} | {v['padding']:.1%} |")
    print(
        f"grouped / shuffled: CPU {res['grouped_over_shuffled_cpu']:.2f}x, padded tokens "
        f"{res['grouped_over_shuffled_tokens']:.2f}x ({n} steps each, {res['threads']} thread(s), load "
        f"{res['load_avg']})"
    )
    out = Path(__file__).parent / "results" / "length_grouped.json"
    out.parent.mkdir(exist_ok=True); out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
