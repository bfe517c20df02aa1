"""What does caching SmolLM2's GGUF conversion buy? First-use conversion against a cached load, measured in one run.

Converts SmolLM2-135M-Instruct from its GGUF file into a fresh temporary cache exactly as a first lesson run does
(`smollm2_path()`: tokenizer and model read from GGUF, dequantised to float32, saved with `save_pretrained`), then
loads the cached copy several times (`load_smollm2_tokenizer()` + `load_smollm2()`, as a lesson does; the
reference, 1.00x) in this process and once in a fresh process (what a new kernel pays: `import llm_course.assets`
excluded, but transformers' lazy import of the Llama and tokenizer classes included; a second fresh-process row
imports those first).
The same conversion without `_faster_gguf_reads` (plain transformers, which parses the GGUF file three times)
is timed too. Every cached load checks the SHA-256 hash of each cached file against the manifest (a flipped byte
keeps the size): once per process and folder, again only if a file's size or time stamp changed; that check is
timed on its own (uncached). MiniLM's loads are shown for orientation. The table shows each time / the cached load
(medians over repeats).
MiniLM's masked-LM head: the shipped one loaded in a fresh process (`load_minilm_mlm()`, SHA-256 check included) against
training it as lessons 05 and 09 did before it was shipped (`train_minilm_mlm` at the cpu profile's settings, all six
layers,
`--minilm-steps` steps; 0 skips it); their ratio is printed on its own line.

    OMP_NUM_THREADS=1 python bench/assets_load.py              # 3 repeats of the cached loads
    OMP_NUM_THREADS=1 python bench/assets_load.py --repeats 5
"""
import argparse, contextlib, json, os, shutil, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

from llm_course import assets   # sets the hub's offline switches before transformers is imported
import torch, transformers


CPU = {}   # step -> CPU seconds of this process (less disturbed by other processes than wall time)


def timed(fn, label=None):
    t0, c0 = time.perf_counter(), time.process_time(); out = fn()
    if label: CPU[label] = time.process_time() - c0
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-plain", action="store_true", help="skip the conversion without the GGUF memo (saves ~40 s)")
    ap.add_argument(
        "--minilm-steps",
        type=int,
        default=300,
        help="steps of the MiniLM head training row (0: skip; 300: the cpu profile)",
    )
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLM_COURSE_CACHE"] = tmp
        rows["convert from GGUF (first use)"], path = timed(assets.smollm2_path, "convert from GGUF (first use)")
        if not args.skip_plain:       # the same conversion without memoising GGUF parses (what plain transformers does)
            real = assets._faster_gguf_reads
            assets._faster_gguf_reads = contextlib.nullcontext
            try:
                rows["  same, without _faster_gguf_reads"] = timed(
                    lambda: assets.build_once(Path(tmp) / "plain", assets._convert_smollm2, "SmolLM2 (plain)"),
                    "  same, without _faster_gguf_reads",
                )[0]
            finally: assets._faster_gguf_reads = real
            shutil.rmtree(Path(tmp) / "plain")
        size_mb = sum(assets.cache_info(path)["files"].values()) / 1e6
        def cached(): assets.load_smollm2_tokenizer(); assets.load_smollm2()

        rows["cached load, this process (reference)"] = statistics.median(
            timed(cached, "cached load, this process (reference)")[0] for _ in range(args.repeats)
        )
        rows["  of which: SHA-256 of every cached file"] = statistics.median(
            timed(lambda: (assets._VERIFIED.clear(), assets.damaged_files(path)))[0] for _ in range(args.repeats))
        rows["cached model only"] = statistics.median(timed(assets.load_smollm2)[0] for _ in range(args.repeats))
        rows["cached tokenizer only"] = statistics.median(
            timed(assets.load_smollm2_tokenizer)[0] for _ in range(args.repeats)
        )
        for label, pre in [
            ("cached load, fresh process", ""),
            (
                "  same, model classes imported first",
                "from transformers.models.llama import modeling_llama; "
                "from transformers import tokenization_utils_tokenizers; ",
            ),
        ]:
            code = (f"import time; from llm_course import assets; {pre}t0 = time.perf_counter(); "
                    "assets.load_smollm2_tokenizer(); assets.load_smollm2(); print(time.perf_counter() - t0)")
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True
            )
            rows[label] = float(out.stdout.strip().splitlines()[-1])
        rows["bf16 cached model"] = statistics.median(
            timed(lambda: assets.load_smollm2(dtype=torch.bfloat16))[0] for _ in range(args.repeats)
        )
    rows["MiniLM tokenizer + encoder"] = statistics.median(
        timed(lambda: (assets.load_minilm_tokenizer(), assets.load_minilm()))[0] for _ in range(args.repeats)
    )
    code = ("import time; from llm_course import assets; t0 = time.perf_counter(); "
            "from llm_course.minilm_mlm import load_minilm_mlm; load_minilm_mlm(); print(time.perf_counter() - t0)")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True
    )
    rows["MiniLM MLM head: shipped, fresh process"] = mlm_load = float(out.stdout.strip().splitlines()[-1])
    if args.minilm_steps:
        from llm_course.core import get_profile
        from llm_course.minilm_mlm import train_minilm_mlm
        label = f"MiniLM MLM head: training it ({args.minilm_steps} steps)"
        rows[label] = mlm_build = timed(
            lambda: train_minilm_mlm(get_profile("cpu"), steps=args.minilm_steps, train_layers=6, progress=False), label
        )[0]
    ref = rows["cached load, this process (reference)"]
    print(
        f"\nSmolLM2 cache: {size_mb:.0f} MB; threads {torch.get_num_threads()}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(f"{'step':<42}{'x cached load':>14}{'seconds':>10}{'CPU s':>8}")
    for k, v in rows.items(): print(f"{k:<42}{v / ref:>14.2f}{v:>10.2f}" + (f"{CPU[k]:>8.2f}" if k in CPU else ""))
    if args.minilm_steps:
        print(
            f"MiniLM MLM head: training {args.minilm_steps} steps / loading the shipped head = "
            f"{mlm_build / mlm_load:.0f}x"
        )
    res = dict(
        bench="assets_load",
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        repeats=args.repeats,
        cache_mb=round(size_mb),
        minilm_steps=args.minilm_steps,
        reference="cached load, this process (reference)",
        seconds={k: round(v, 3) for k, v in rows.items()},
        cpu_seconds={k: round(v, 3) for k, v in CPU.items()},
        ratio_to_reference={k: round(v / ref, 2) for k, v in rows.items()},
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    out = Path(__file__).parent / "results" / "assets_load.json"
    out.parent.mkdir(exist_ok=True); out.write_text(json.dumps(res, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
