"""Lesson 10 at sizes where the ratios mean something: memory and time of a training step (fp32 reference vs bf16
autocast, activation checkpointing and 4-way gradient accumulation) and quantized inference (fp32 reference vs our
weight-only int8 / 4-bit and torch's quantize_dynamic) on SmolLM2-sized Linear layers and on SmolLM2 itself.

Everything is measured in one process against a reference measured in the same run (interleaved rounds, medians), so
machine noise hits all variants alike; memory on CPU is the PyTorch profiler's allocation count (`measure_memory`), on
CUDA the allocator's counters.

    python bench/efficiency.py            # GPT 6 x 192, block 256, batch 16; SmolLM2 forward on 256 tokens; 1 thread
    python bench/efficiency.py --quick    # small sizes, no SmolLM2 (seconds)
"""
import argparse, json, os, platform, time, warnings
from pathlib import Path

for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ.setdefault(k, "1")
import torch
from torch import nn

warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
warnings.filterwarnings("ignore", message=".*quantize_per_tensor, torch.quantize_per_channel.*")


def train_section(a, device):
    from llm_course.transformer import GPT, GPTConfig
    from llm_course.efficiency import (accumulate_gradients, checkpoint_blocks, interleaved_times, measure_memory,
                                       memory_estimate, split_batch)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=a.vocab, block_size=a.block, n_layer=a.layers, n_head=a.heads, n_embd=a.dim)
    model = GPT(cfg).to(device).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, a.vocab, (a.batch, a.block + 1), generator=g).to(device)
    batch = (ids[:, :-1].contiguous(), ids[:, 1:].contiguous())

    def step(kind):
        checkpoint_blocks(model, enable=kind == "checkpointed")
        if kind == "accumulate x4": accumulate_gradients(model, split_batch(batch, 4))
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=kind == "bf16 autocast"):
                loss = model(*batch)[1]
            loss.backward()
        model.zero_grad(set_to_none=True)

    kinds = ["fp32", "bf16 autocast", "checkpointed", "accumulate x4"]
    mem = {}
    for k in kinds:
        step(k)                                                           # warm-up outside the measurement
        mem[k] = measure_memory(lambda: step(k), device)[1]["peak"]
    times = interleaved_times({k: (lambda k=k: step(k)) for k in kinds}, repeats=a.repeats, warmup=1)
    checkpoint_blocks(model, enable=False)
    with torch.no_grad():
        l32 = model(*batch)[1].item()
        with torch.autocast(device.type, dtype=torch.bfloat16): l16 = model(*batch)[1].item()
    est = memory_estimate(model, a.batch, a.block)
    rows = {
        k: dict(
            step_s=times[k], time_vs_fp32=times[k] / times["fp32"], peak_bytes=mem[k], peak_vs_fp32=mem[k] / mem["fp32"]
        )
        for k in kinds
    }
    print(
        f"\nTraining step: GPT {a.layers} x {a.dim}, {a.heads} heads, block {a.block}, batch {a.batch}, vocab "
        f"{a.vocab}, "
        f"{model.num_params():,} parameters; {a.repeats} interleaved rounds on {device}"
    )
    print(f"{'variant':<16}{'ms/step':>9}{'time / fp32':>13}{'peak MiB':>10}{'peak / fp32':>13}")
    for k, r in rows.items():
        print(
            f"{k:<16}{r['step_s'] * 1e3:>9.0f}{r['time_vs_fp32']:>12.2f}x"
            f"{r['peak_bytes'] / 2**20:>10.1f}{r['peak_vs_fp32']:>12.2f}x"
        )
    print(
        f"loss fp32 {l32:.5f}, bf16 autocast {l16:.5f} (difference {abs(l16 - l32):.1e}); estimated activations "
        f"{est['activations'] / 2**20:.1f} MiB (checkpointed: "
        f"{memory_estimate(model, a.batch, a.block, checkpoint=True)['activations'] / 2**20:.1f} MiB)"
    )
    return dict(rows=rows, loss_fp32=l32, loss_bf16=l16, estimate=est, params=model.num_params())


def linear_section(a):
    from llm_course.efficiency import QuantLinear, interleaved_times
    from torch.ao.quantization import quantize_dynamic
    out = {}
    print("\nLinear layers of SmolLM2's MLP, CPU, 1 process; time / fp32 < 1 means faster than fp32")
    print(f"{'shape':<14}{'tokens':>7}{'fp32 ms':>9}{'int8 ours':>11}{'4-bit g32':>11}{'int8 dynamic':>14}")
    for d_in, d_out in ((576, 1536), (1536, 576)):
        torch.manual_seed(0)
        lin = nn.Linear(d_in, d_out)
        variants = {
            "fp32": lin,
            "int8 ours": QuantLinear.from_linear(lin, 8),
            "4-bit g32": QuantLinear.from_linear(lin, 4, 32),
            "int8 dynamic": quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8),
        }
        for tokens in (1, a.tokens):
            x = torch.randn(tokens, d_in)
            with torch.no_grad():
                t = interleaved_times(
                    {k: (lambda m=m: m(x)) for k, m in variants.items()}, repeats=a.repeats * 5, warmup=3
                )
            key = f"{d_in}x{d_out} @ {tokens} tokens"
            out[key] = {k: dict(s=v, vs_fp32=v / t["fp32"]) for k, v in t.items()}
            print(
                f"{d_in}->{d_out:<8}{tokens:>7}{t['fp32'] * 1e3:>9.3f}"
                + "".join(
                    f"{t[k] / t['fp32']:>{w}.2f}x"
                    for k, w in (("int8 ours", 10), ("4-bit g32", 10), ("int8 dynamic", 13))
                )
            )
    return out


def smollm2_section(a):
    from llm_course.assets import load_smollm2, load_smollm2_tokenizer
    from llm_course.data import load_corpus
    from llm_course.efficiency import interleaved_times, quantize_model, state_bytes
    from llm_course.evaluation import lm_nll, perplexity
    from torch.ao.quantization import quantize_dynamic, default_dynamic_qconfig
    smol, tok = load_smollm2(), load_smollm2_tokenizer()
    ids = tok(load_corpus(a.tokens * 8, split="valid"), return_tensors="pt").input_ids[:, :a.tokens]
    variants = {"fp32": smol, "int8 ours": quantize_model(smol, 8), "4-bit g32 ours": quantize_model(smol, 4, 32),
                "int8 dynamic (blocks)": quantize_dynamic(smol, {"model.layers": default_dynamic_qconfig})}
    res = {}
    with torch.no_grad():
        ref = smol(input_ids=ids).logits.argmax(-1)
        for k, m in variants.items():
            res[k] = dict(bytes=state_bytes(m), ppl=perplexity(*lm_nll(m, [dict(input_ids=ids)])),
                          agree=(m(input_ids=ids).logits.argmax(-1) == ref).float().mean().item())
        t = interleaved_times(
            {k: (lambda m=m: m(input_ids=ids)) for k, m in variants.items()}, repeats=a.repeats, warmup=1
        )
    print(
        f"\nSmolLM2-135M forward on {ids.shape[1]} held-out tokens, CPU (the tied lm_head stays fp32 in all; dynamic = "
        "int8 weights and activations)"
    )
    print(f"{'weights':<23}{'MB':>8}{'size/fp32':>11}{'perplexity':>12}{'top-1 agree':>13}{'time/fp32':>11}")
    for k, r in res.items():
        r.update(s=t[k], time_vs_fp32=t[k] / t["fp32"])
        print(
            f"{k:<23}{r['bytes'] / 1e6:>8.1f}{r['bytes'] / res['fp32']['bytes']:>10.2f}x"
            f"{r['ppl']:>12.3f}{r['agree']:>13.1%}{r['time_vs_fp32']:>10.2f}x"
        )
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, no SmolLM2 (seconds)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default=None, help="cpu or cuda for the training section; default: get_device()")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "efficiency.json"))
    a = ap.parse_args(argv)
    d = dict(layers=2, dim=64, heads=2, block=64, batch=8, vocab=256, repeats=3, tokens=64) if a.quick else \
        dict(layers=6, dim=192, heads=6, block=256, batch=16, vocab=1024, repeats=5, tokens=256)
    for k, v in d.items(): setattr(a, k, v)
    torch.set_num_threads(a.threads)
    from llm_course.core import get_device
    device = get_device(a.device)
    load_start = os.getloadavg()[0]
    out = dict(config=d | dict(threads=a.threads, quick=a.quick, device=str(device)), train=train_section(a, device),
               linear=linear_section(a))
    if not a.quick: out["smollm2"] = smollm2_section(a)
    out["env"] = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        cpus=os.cpu_count(),
        load_avg_start=load_start,
        load_avg_end=os.getloadavg()[0],
        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    print(f"\nload average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2, default=float))
    print(f"saved {a.out}")
    return out


if __name__ == "__main__":
    main()
