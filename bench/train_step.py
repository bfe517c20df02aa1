"""Training throughput of `llm_course.transformer.GPT` against a bare nanoGPT-style step and GPT2LMHeadModel.

Same sizes, same data, same AdamW, measured in one process with interleaved repeats after a
warm-up, so machine noise hits all three alike. Reports tokens/s, the ratios to the bare step
and to Hugging Face, and the model-FLOPs utilisation (MFU) against a large fp32 matmul timed in
the same run.

    python bench/train_step.py            # 4 layers x 128, 4 heads, block 256, batch 32, 2 threads
    python bench/train_step.py --quick    # small sizes, a few seconds
    python bench/train_step.py --device cuda --bf16   # on a GPU (./course gpu-check): GPT-2 small sizes, bf16 autocast,
                                                      # MFU against a bf16 matmul timed on the same card

Targets on CPU: ours >= 0.95x the bare step and >= 1.2x GPT2LMHeadModel (gelu_new, as users get it).
"""
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch
from torch import nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# The reference: a minimal nanoGPT-style model written with nothing but PyTorch.
class BareBlock(nn.Module):
    def __init__(self, C, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class BareGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(BareBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)): nn.init.normal_(m.weight, 0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None: nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for b in self.h: x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ---------------------------------------------------------------------------------------------
def matmul_peak(n=2048, reps=5, device="cpu", dtype=torch.float32):
    """GFLOP/s of the best of `reps` (n x n) @ (n x n) matmuls in `dtype` on `device` (the peak the MFU is measured
    against)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b, device) for _ in range(reps))
    return 2 * n**3 / best / 1e9

def _sync(device):
    if str(device).startswith("cuda"): torch.cuda.synchronize()

def _timed(fn, device="cpu"):
    _sync(device); t = time.perf_counter(); fn(); _sync(device); return time.perf_counter() - t

def make_step(model, loss_fn, lr=1e-3, bf16=False):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    device_type = next(model.parameters()).device.type
    def step(x, y):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    ap.add_argument("--layers", type=int); ap.add_argument("--dim", type=int); ap.add_argument("--heads", type=int)
    ap.add_argument("--block", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the gpu-check uses cuda)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast; the peak is then a bf16 matmul")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False (install the CUDA build of torch)")
    d = (
        dict(layers=2, dim=64, heads=2, block=64, batch=8, repeats=8, steps=2)
        if a.quick
        else dict(layers=12, dim=768, heads=12, block=1024, batch=16, repeats=12, steps=2)
        if a.device.startswith("cuda")
        else dict(layers=4, dim=128, heads=4, block=256, batch=32, repeats=12, steps=2)
    )
    for k, v in d.items():
        if getattr(a, k) is None: setattr(a, k, v)
    torch.set_num_threads(a.threads)
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)

    from llm_course.transformer import GPT, GPTConfig
    from transformers import GPT2Config, GPT2LMHeadModel
    V, T, L, H, C, B = a.vocab, a.block, a.layers, a.heads, a.dim, a.batch
    ours = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C))
    bare = BareGPT(V, T, L, H, C)
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=V,
            n_positions=T,
            n_layer=L,
            n_head=H,
            n_embd=C,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
        )
    )  # activation_function: gelu_new (default)
    hf.loss_type = "ForCausalLM"
    for m in (ours, bare, hf): m.to(a.device)
    steps = {
        "bare nanoGPT-style": make_step(bare, lambda m, x, y: m(x, y), bf16=a.bf16),
        "llm_course GPT": make_step(ours, lambda m, x, y: m(x, y)[1], bf16=a.bf16),
        "HF GPT2LMHeadModel": make_step(hf, lambda m, x, y: m(input_ids=x, labels=x).loss, bf16=a.bf16),
    }
    n_params = ours.num_params(non_embedding=True)   # includes the tied head's matmul, excludes the position lookup
    assert n_params == sum(p.numel() for p in bare.parameters()) - bare.wpe.weight.numel()
    tokens = B * T
    flops_per_step = (
        6 * n_params * tokens + 12 * L * C * T * tokens
    )  # weights (fwd + bwd) + attention scores and mixing

    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, V, (B, T + 1), generator=g) for _ in range(4)]
    data = [(b[:, :-1].contiguous().to(a.device), b[:, 1:].contiguous().to(a.device)) for b in batches]
    for name, step in steps.items():                  # warm-up: allocator, oneDNN primitives, AdamW state
        for x, y in data[:3]: step(x, y)
    peak_dtype = torch.bfloat16 if a.bf16 else torch.float32
    n_peak = 8192 if a.device.startswith("cuda") else 2048
    peak_before = matmul_peak(n_peak, device=a.device, dtype=peak_dtype)

    times = {n: [] for n in steps}
    names = list(steps)
    for r in range(a.repeats):
        order = names[r % 3:] + names[:r % 3]          # rotate who goes first
        for name in order:
            x, y = data[r % len(data)]
            _sync(a.device); t = time.perf_counter()
            for _ in range(a.steps): steps[name](x, y)
            _sync(a.device); times[name].append((time.perf_counter() - t) / a.steps)
    peak = max(peak_before, matmul_peak(n_peak, device=a.device, dtype=peak_dtype))

    ref, hfn, me = "bare nanoGPT-style", "HF GPT2LMHeadModel", "llm_course GPT"
    def q(xs, f): xs = sorted(xs); return xs[min(len(xs) - 1, int(f * len(xs)))]
    res = {}
    for name in names:
        s, best = statistics.median(times[name]), min(times[name])
        r_bare = [tb / tn for tb, tn in zip(times[ref], times[name])]   # per round: both measured seconds apart
        r_hf = [th / tn for th, tn in zip(times[hfn], times[name])]
        res[name] = dict(
            step_s=s,
            best_step_s=best,
            tokens_per_s=tokens / s,
            best_tokens_per_s=tokens / best,
            mfu=flops_per_step / s / (peak * 1e9),
            best_mfu=flops_per_step / best / (peak * 1e9),
            vs_bare=statistics.median(r_bare),
            vs_bare_iqr=[q(r_bare, 0.25), q(r_bare, 0.75)],
            vs_hf=statistics.median(r_hf),
            vs_hf_iqr=[q(r_hf, 0.25), q(r_hf, 0.75)],
            round_step_s=times[name],
        )
    print(
        f"\nTrain step, {L} layers x {C} dims, {H} heads, block {T}, batch {B}, vocab {V}, AdamW, {a.threads} threads; "
        f"{a.repeats} interleaved rounds x {a.steps} steps; {n_params:,} parameters (non-embedding)"
    )
    print(
        f"{a.device} {'bf16' if a.bf16 else 'fp32'} matmul peak measured in this run: {peak:.0f} GFLOP/s; model FLOPs "
        f"per step: {flops_per_step / 1e9:.1f} GFLOP; "
        f"load average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}\n"
    )
    print(
        f"{'model':<20}{'ms/step':>9}{'best':>7}{'tokens/s':>10}{'best':>8}{'MFU':>6}{'best':>6}"
        f"{'vs bare (IQR)':>20}{'vs HF (IQR)':>20}"
    )
    for name, r in res.items():
        print(
            f"{name:<20}{r['step_s'] * 1e3:>9.0f}{r['best_step_s'] * 1e3:>7.0f}"
            f"{r['tokens_per_s']:>10,.0f}{r['best_tokens_per_s']:>8,.0f}"
            f"{r['mfu']:>6.0%}{r['best_mfu']:>6.0%}"
            f"{r['vs_bare']:>8.2f}x ({r['vs_bare_iqr'][0]:.2f}-{r['vs_bare_iqr'][1]:.2f})"
            f"{r['vs_hf']:>8.2f}x ({r['vs_hf_iqr'][0]:.2f}-{r['vs_hf_iqr'][1]:.2f})"
        )
    print("ratios: median over rounds of (other's step time / this step time); IQR: their middle half")
    ok_bare, ok_hf = res[me]["vs_bare"] >= 0.95, res[me]["vs_hf"] >= 1.2
    print(f"\ntargets: ours >= 0.95x bare: {'met' if ok_bare else 'MISSED'} ({res[me]['vs_bare']:.2f}x); "
          f"ours >= 1.2x HF: {'met' if ok_hf else 'MISSED'} ({res[me]['vs_hf']:.2f}x)")
    out = dict(config=dict(layers=L, dim=C, heads=H, block=T, batch=B, vocab=V, threads=a.threads, repeats=a.repeats,
                           steps=a.steps, quick=a.quick, device=a.device, bf16=a.bf16),
               n_params_non_embedding=n_params, flops_per_step=flops_per_step, matmul_peak_gflops=peak, results=res,
               targets=dict(vs_bare_min=0.95, vs_hf_min=1.2, met_vs_bare=ok_bare, met_vs_hf=ok_hf),
               env=dict(torch=torch.__version__, python=platform.python_version(), cpus=os.cpu_count(),
                        load_avg_start=load_start, load_avg_end=os.getloadavg()[0],
                        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"saved {a.out}")
    return out

if __name__ == "__main__":
    main()
