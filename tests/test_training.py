"""Checks of llm_course.training: exact resume, NaN handling, bad input, schedule, accumulation, early stopping, Trainer
parity."""
import math, os, signal, tempfile, time, warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from llm_course.core import set_seed
from llm_course.training import _set_epoch
from llm_course.training import (Batches, NonFiniteLossError, TrainConfig, byte_baselines, byte_lm_data, compute_loss,
                                 evaluate, fit, lr_factor, make_optimizer, make_scheduler, read_corpus)
from llm_course.runs import Callback, TrainState, checkpoints, load_checkpoint
from llm_course.testing import InterruptAt, tiny_gpt2

BLOCK = 16


@pytest.fixture(scope="module")
def data():
    return byte_lm_data(read_corpus(12_000), BLOCK)


def cfg(**kw):
    return TrainConfig(**{**dict(lr=3e-3, max_steps=8, warmup_steps=2, batch_size=4, progress=False, plot=False), **kw})


def weights_diff(a, b):
    return max(
        (x.float() - y.float()).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


# --- exact resume ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [3, 5])
def test_resume_after_interrupt_is_bitwise_exact(data, tmp_path, k):
    """Interrupt after step k (as Ctrl-C would, from a callback), resume in a fresh model: same weights and losses, atol
    0."""
    c = cfg(max_steps=9, grad_accum=2, ckpt_every=4, out_dir=str(tmp_path / "run"))
    full = tiny_gpt2(BLOCK, dropout=0.1, seed=0)
    h_full = fit(full, data, config=cfg(max_steps=9, grad_accum=2))
    part = tiny_gpt2(BLOCK, dropout=0.1, seed=0)
    h_part = fit(part, data, config=c, callbacks=[InterruptAt(k)])
    assert h_part.stopped == "interrupted" and len(h_part.loss) == k
    assert checkpoints(c.out_dir)[-1].name == f"step-{k:07d}"
    set_seed(123); torch.rand(7)                        # disturb the global RNGs: the checkpoint must restore them
    again = tiny_gpt2(BLOCK, dropout=0.1, seed=99)
    h_res = fit(again, data, config=c, resume=True)
    assert h_res.loss == h_full.loss and h_res.lr == h_full.lr and h_res.grad_norm == h_full.grad_norm
    assert weights_diff(full, again) == 0.0



def _groups(model):
    "Two AdamW groups with their own learning rates: the embeddings and everything else."
    emb = [p for n, p in model.named_parameters() if "wte" in n or "wpe" in n]
    rest = [p for n, p in model.named_parameters() if "wte" not in n and "wpe" not in n]
    assert emb and rest
    return [dict(params=emb, lr=1e-3, weight_decay=0.0), dict(params=rest, lr=4e-3)]


def test_param_groups_train_with_their_own_rates_and_resume_exactly(data, tmp_path):
    """fit(param_groups=...): each group keeps its own peak rate under the shared schedule, and an interrupted run
    resumes exactly."""
    c = cfg(max_steps=7, ckpt_every=3, out_dir=str(tmp_path / "run"))
    full = tiny_gpt2(BLOCK, dropout=0.1, seed=0)
    seen = []
    class Spy(Callback):
        def on_step_end(self, state): seen.append([g["lr"] for g in state.optimizer.param_groups])
    h_full = fit(full, data, config=cfg(max_steps=7), param_groups=_groups(full), callbacks=[Spy()])
    assert all(abs(a / b - 0.25) < 1e-12 for a, b in seen if b > 0)          # 1e-3 / 4e-3 at every step
    assert max(b for _, b in seen) == pytest.approx(4e-3 * lr_factor(2, 2, 7), rel=1e-9)
    part = tiny_gpt2(BLOCK, dropout=0.1, seed=0)
    fit(part, data, config=c, param_groups=_groups(part), callbacks=[InterruptAt(4)])
    again = tiny_gpt2(BLOCK, dropout=0.1, seed=5)
    h_res = fit(again, data, config=c, param_groups=_groups(again), resume=True)
    assert h_res.loss == h_full.loss and h_res.lr == h_full.lr
    assert weights_diff(full, again) == 0.0


def test_param_groups_must_cover_the_trainable_parameters(data):
    m = tiny_gpt2(BLOCK, seed=0)
    with pytest.raises(ValueError, match="trainable tensors"):
        fit(m, data, config=cfg(max_steps=2), param_groups=_groups(m)[:1])

def sigint_at(calls_to_signal, presses=1):
    "A loss_fn that sends SIGINT (a real Ctrl-C) to this process `presses` times during its n-th call."
    calls = {"n": 0}
    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == calls_to_signal:
            for _ in range(presses): os.kill(os.getpid(), signal.SIGINT); time.sleep(0.01)
        return compute_loss(model, batch)
    return loss_fn


def test_ctrl_c_in_the_middle_of_a_step_finishes_it_then_saves(data, tmp_path, capsys):
    """A real SIGINT during the 2nd micro-batch of step 4: step 4 completes, the checkpoint is of step 4, resuming is
    exact."""
    c = cfg(max_steps=7, grad_accum=2, out_dir=str(tmp_path / "run"))
    full = tiny_gpt2(BLOCK, dropout=0.1, seed=0)
    h_full = fit(full, data, config=cfg(max_steps=7, grad_accum=2))
    part = tiny_gpt2(BLOCK, dropout=0.1, seed=0)
    before = signal.getsignal(signal.SIGINT)   # whatever the process had (other tests' libraries may have changed it)
    h_part = fit(part, data, config=c, loss_fn=sigint_at(3 * 2 + 2))
    assert h_part.stopped == "interrupted" and len(h_part.loss) == 4
    assert "stopping after this step" in capsys.readouterr().out
    state = torch.load(checkpoints(c.out_dir)[-1] / "state.pt", weights_only=True)
    assert state["pos"] == {"epoch": 0, "batch": 8} and state["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before                            # the handler is put back
    again = tiny_gpt2(BLOCK, dropout=0.1, seed=5)
    h_res = fit(again, data, config=c, resume=True)
    assert h_res.loss == h_full.loss and weights_diff(full, again) == 0.0


@pytest.mark.parametrize("how", ["double Ctrl-C", "exception"])
def test_forced_interrupt_mid_step_writes_no_checkpoint(data, tmp_path, capsys, how):
    "Ctrl-C twice (or a KeyboardInterrupt raised inside the step) stops at once: no checkpoint of a half-done step."
    if how == "exception":
        calls = {"n": 0}
        def loss_fn(model, batch):
            calls["n"] += 1
            if calls["n"] == 5: raise KeyboardInterrupt
            return compute_loss(model, batch)
    else: loss_fn = sigint_at(5, presses=2)
    c = cfg(max_steps=7, ckpt_every=2, out_dir=str(tmp_path / "run"))
    full = tiny_gpt2(BLOCK, dropout=0.1, seed=0); h_full = fit(full, data, config=cfg(max_steps=7))
    h = fit(tiny_gpt2(BLOCK, dropout=0.1, seed=0), data, config=c, loss_fn=loss_fn)
    assert h.stopped == "interrupted" and len(h.loss) == 4
    assert [p.name for p in checkpoints(c.out_dir)] == ["step-0000002", "step-0000004"]
    assert "during step 5: no checkpoint written" in capsys.readouterr().out
    again = tiny_gpt2(BLOCK, dropout=0.1, seed=5)
    assert fit(again, data, config=c, resume=True).loss == h_full.loss and weights_diff(full, again) == 0.0


def test_resume_across_an_epoch_boundary(data, tmp_path):
    "A small dataset makes the run cross epochs; the order of each epoch is a function of (seed, epoch)."
    small = data[:12]                                    # 3 batches of 4 per epoch
    c = cfg(max_steps=8, out_dir=str(tmp_path / "run"))
    full = tiny_gpt2(BLOCK, seed=0); h_full = fit(full, small, config=cfg(max_steps=8))
    part = tiny_gpt2(BLOCK, seed=0); fit(part, small, config=c, callbacks=[InterruptAt(4)])
    again = tiny_gpt2(BLOCK, seed=1); h_res = fit(again, small, config=c, resume=True)
    assert h_res.loss == h_full.loss and weights_diff(full, again) == 0.0


@pytest.mark.parametrize("kind", ["shuffling DataLoader", "sequential DataLoader"])
def test_resume_with_a_dataloader(data, tmp_path, kind):
    "A DataLoader that shuffles gets its order from (seed, epoch) too, so resuming across epochs stays exact."
    small = data[:12]
    make = lambda: torch.utils.data.DataLoader(small, batch_size=4, shuffle=kind.startswith("shuffling"),
                                               generator=torch.Generator().manual_seed(0))
    c = cfg(max_steps=8, out_dir=str(tmp_path / "run"))
    full = tiny_gpt2(BLOCK, dropout=0.1, seed=0); h_full = fit(full, make(), config=cfg(max_steps=8))
    fit(tiny_gpt2(BLOCK, dropout=0.1, seed=0), make(), config=c, callbacks=[InterruptAt(5)])
    again = tiny_gpt2(BLOCK, dropout=0.1, seed=1); h_res = fit(again, make(), config=c, resume=True)
    assert h_res.loss == h_full.loss and weights_diff(full, again) == 0.0
    if kind.startswith("shuffling"):                   # the epochs really are shuffled differently
        dl = make(); orders = []
        for e in range(2):
            _set_epoch(dl, e, 42); orders.append(list(dl.sampler))
        assert orders[0] != orders[1] and sorted(orders[0]) == list(range(12))


def test_checkpoints_are_complete_pruned_and_never_silently_overwritten(data, tmp_path):
    c = cfg(max_steps=8, ckpt_every=2, keep=2, out_dir=str(tmp_path / "run"))
    m = tiny_gpt2(BLOCK)
    fit(m, data, config=c)
    assert [p.name for p in checkpoints(c.out_dir)] == ["step-0000006", "step-0000008"]
    (tmp_path / "run" / "step-0000099").mkdir()         # a half-written folder (no .complete marker) is ignored
    assert checkpoints(c.out_dir)[-1].name == "step-0000008"
    with pytest.raises(FileExistsError, match="resume=True"): fit(tiny_gpt2(BLOCK), data, config=c)
    state = TrainState(m2 := tiny_gpt2(BLOCK, seed=3), (o := make_optimizer(m2, c)), make_scheduler(o, c), c)
    load_checkpoint(checkpoints(c.out_dir)[-1], state)
    assert state.step == 8 and weights_diff(m, m2) == 0.0
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "run" / "step-0000099", state)


# --- NaN, bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, bad):
    calls = {"n": 0}
    def loss_fn(model, batch):
        calls["n"] += 1
        loss = compute_loss(model, batch)
        return loss * bad if calls["n"] > 5 else loss
    c = cfg(max_steps=10, ckpt_every=2, out_dir=str(tmp_path / "run"))
    m = tiny_gpt2(BLOCK)
    with pytest.raises(NonFiniteLossError, match="Step 6: loss .*last good checkpoint .*step-0000004 is kept") as e:
        fit(m, data, config=c, loss_fn=loss_fn)
    assert [p.name for p in checkpoints(c.out_dir)] == ["step-0000002", "step-0000004"]
    assert len(e.value.history.loss) == 5 and e.value.history.stopped == "non-finite loss"
    assert all(torch.isfinite(p).all() for p in m.parameters())
    saved = torch.load(checkpoints(c.out_dir)[-1] / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    # the weights in memory are those after step 5: one more step from the step-4 checkpoint reproduces them
    m4 = tiny_gpt2(BLOCK, seed=7)
    fit(m4, data, config=cfg(max_steps=5, ckpt_every=2, out_dir=c.out_dir), resume=True)
    assert weights_diff(m, m4) == 0.0


def test_empty_and_bad_input_give_clear_errors(data, tmp_path):
    m = tiny_gpt2(BLOCK)
    with pytest.raises(ValueError, match="train_data is empty"): fit(m, [], config=cfg())
    with pytest.raises(ValueError, match=r"train_data is empty.*\(3 examples, batch_size 4\)"):
        fit(m, data[:3], config=cfg())
    with pytest.raises(ValueError, match="train_data is empty"):
        fit(m, torch.utils.data.DataLoader(data[:0], batch_size=4), config=cfg())
    with pytest.raises(ValueError, match="train_data is empty"):     # an iterable without len() that gives nothing
        fit(m, (b for b in []), config=cfg())
    with pytest.raises(ValueError, match="valid_data is empty"): fit(m, data, [], config=cfg())
    with pytest.raises(ValueError, match="valid_data is empty"): evaluate(m, [])
    with pytest.raises(ValueError, match="patience .* needs valid_data and eval_every"):
        fit(m, data, config=cfg(patience=2))
    with pytest.raises(ValueError, match="patience .* needs valid_data and eval_every"):
        fit(m, data, data, config=cfg(patience=2))
    with pytest.raises(ValueError, match="returned no loss"):
        fit(m, [dict(input_ids=d["input_ids"]) for d in data], config=cfg())
    with torch.device("meta"): meta = tiny_gpt2(BLOCK)
    with pytest.raises(ValueError, match="'meta' device"): fit(meta, data, config=cfg())
    with pytest.raises(ValueError, match="nothing to train"):
        fit(tiny_gpt2(BLOCK).requires_grad_(False), data, config=cfg())
    with pytest.raises(ValueError, match="needs TrainConfig\\(out_dir"): fit(m, data, config=cfg(), resume=True)
    with pytest.raises(ValueError, match="warmup_steps=20 exceeds max_steps=8"): cfg(warmup_steps=20)


def test_mapping_batches_like_batch_encoding(data):
    "A tokenizer's BatchEncoding is a Mapping, not a dict: it is moved and passed as keyword arguments too."
    from transformers import BatchEncoding
    loader = [BatchEncoding({"input_ids": torch.stack([d["input_ids"] for d in data[i:i + 4]]),
                             "labels": torch.stack([d["labels"] for d in data[i:i + 4]])}) for i in range(0, 16, 4)]
    m1, m2 = tiny_gpt2(BLOCK, seed=0), tiny_gpt2(BLOCK, seed=0)
    h1 = fit(m1, loader, config=cfg(max_steps=3))
    h2 = fit(m2, [dict(b) for b in loader], config=cfg(max_steps=3))
    assert h1.loss == h2.loss


def test_batches_are_moved_to_the_model_device(data):
    "The loop moves CPU batches to the model's device itself; a custom collate that returns other types passes through."
    seen = []
    def loss_fn(model, batch):
        seen.append({k: v.device for k, v in batch.items()})
        return compute_loss(model, batch)
    m = tiny_gpt2(BLOCK)
    fit(m, data, config=cfg(max_steps=1, warmup_steps=0), loss_fn=loss_fn)
    dev = next(m.parameters()).device
    assert seen and all(d == dev for s in seen for d in s.values())


# --- schedule, optimizer, accumulation --------------------------------------------------------------------------------

def test_schedule_endpoints_and_history_lr(data):
    assert [lr_factor(s, 4, 20) for s in (0, 1, 4)] == [0.0, 0.25, 1.0]
    assert lr_factor(12, 4, 20) == pytest.approx(0.5, abs=1e-15)
    assert lr_factor(20, 4, 20) == 0.0 and lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1, abs=1e-15)
    from transformers import get_cosine_schedule_with_warmup
    hf = get_cosine_schedule_with_warmup(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 4, 20)
    assert [hf.lr_lambdas[0](s) for s in range(21)] == [
        lr_factor(s, 4, 20) for s in range(21)
    ]  # HF goes up again after max_steps; we stay at the floor
    h = fit(tiny_gpt2(BLOCK), data, config=cfg(lr=1e-3, max_steps=10, warmup_steps=4))
    assert h.lr == pytest.approx([1e-3 * lr_factor(s, 4, 10) for s in range(10)], abs=1e-15)
    assert h.lr[0] == 0.0 and h.lr[4] == pytest.approx(1e-3) and h.steps == list(range(1, 11))


def test_weight_decay_only_on_matrices():
    m = tiny_gpt2(BLOCK)
    groups = make_optimizer(m, cfg(weight_decay=0.2)).param_groups
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.2 and groups[1]["weight_decay"] == 0.0
    assert not any(n.endswith("bias") or ".ln_" in n for n in decayed) and "transformer.wte.weight" in decayed
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(m.parameters()))


def test_gradient_accumulation_matches_the_big_batch(data):
    runs = []
    for bs, acc in [(8, 1), (4, 2), (2, 4)]:
        m = tiny_gpt2(BLOCK, seed=0)
        runs.append((m, fit(m, data, config=cfg(max_steps=6, batch_size=bs, grad_accum=acc, grad_clip=None))))
    (m1, h1), *others = runs
    for m, h in others:
        assert max(abs(a - b) for a, b in zip(h1.loss, h.loss)) < 2e-6
        assert weights_diff(m1, m) < 5e-6
    assert h1.loss[0] != h1.loss[-1]


def test_bf16_autocast_on_cpu_runs_and_changes_numbers(data):
    h32 = fit(tiny_gpt2(BLOCK), data, config=cfg(max_steps=3, bf16=False))
    h16 = fit(tiny_gpt2(BLOCK), data, config=cfg(max_steps=3, bf16=True))
    assert all(math.isfinite(x) for x in h16.loss) and h16.loss != h32.loss
    # 8 bits of precision: one bf16 rounding of a loss near ln 256 moves it by at most ln(256) * 2**-8; matmul
    # errors average out below that
    assert max(abs(a - b) for a, b in zip(h16.loss, h32.loss)) < math.log(256) * 2**-8


# --- evaluation, early stopping, callbacks, model contracts -----------------------------------------------------------

def test_early_stopping_triggers_and_survives_a_resume(data, tmp_path):
    valid = data[-8:]
    h = fit(tiny_gpt2(BLOCK), data, valid, cfg(lr=0.0, max_steps=40, eval_every=2, patience=3))
    assert [e["step"] for e in h.evals] == [2, 4, 6, 8] and h.stopped.startswith("early stopping")
    c = cfg(lr=0.0, max_steps=40, eval_every=2, patience=3, out_dir=str(tmp_path / "run"))
    fit(tiny_gpt2(BLOCK), data, valid, c, callbacks=[InterruptAt(5)])   # evaluations at 2 and 4, then Ctrl-C
    h2 = fit(tiny_gpt2(BLOCK), data, valid, c, resume=True)
    assert [e["step"] for e in h2.evals] == [2, 4, 6, 8] and h2.stopped.startswith("early stopping")
    h3 = fit(tiny_gpt2(BLOCK), data, valid, cfg(lr=3e-3, max_steps=6, eval_every=2, patience=1))   # improving: no stop
    assert h3.stopped == "max_steps" and h3.evals[-1]["loss"] < h3.evals[0]["loss"]


def test_callback_protocol_order_and_stop(data, tmp_path):
    log = []
    class Spy:                                        # duck-typed: only some of the methods
        def on_train_begin(self, s): log.append(("begin", s.step))
        def on_eval(self, s, m): log.append(("eval", m["step"]))
        def on_checkpoint(self, s, p): log.append(("ckpt", Path(p).name))
        def on_step_end(self, s):
            log.append(("step", s.step))
            if s.step == 4: s.stop = "spy says stop"
        def on_train_end(self, s): log.append(("end", s.step))

    h = fit(
        tiny_gpt2(BLOCK),
        data,
        data[-4:],
        cfg(eval_every=2, ckpt_every=2, out_dir=str(tmp_path / "r")),
        callbacks=[Spy()],
    )
    assert log == [("begin", 0), ("step", 1), ("eval", 2), ("ckpt", "step-0000002"), ("step", 2), ("step", 3),
                   ("eval", 4), ("ckpt", "step-0000004"), ("step", 4), ("end", 4)]
    assert h.stopped == "spy says stop" and issubclass(InterruptAt, Callback)


class TupleGPT(nn.Module):
    "The nanoGPT contract: forward(idx, targets=None) -> (logits, loss)."
    def __init__(self, vocab=256, d=16):
        super().__init__(); self.wte = nn.Embedding(vocab, d); self.lm_head = nn.Linear(d, vocab)
    def forward(self, idx, targets=None):
        logits = self.lm_head(self.wte(idx))
        loss = None if targets is None else nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def test_tuple_model_contract_and_tuple_batches(data):
    gpt = byte_lm_data(read_corpus(4_000), BLOCK, style="gpt")
    torch.manual_seed(0); m = TupleGPT()
    h = fit(m, gpt, gpt[-8:], cfg(lr=1e-2, max_steps=10, eval_every=5))
    assert h.loss[-1] < h.loss[0] and len(h.evals) == 2
    ev = evaluate(m, gpt[-8:], batch_size=8)
    assert ev["loss"] == pytest.approx(h.evals[-1]["loss"], abs=1e-6)
    pairs = [(d["idx"], d["targets"]) for d in gpt]         # tuple batches are passed positionally
    assert fit(TupleGPT(), pairs, config=cfg(max_steps=2)).stopped == "max_steps"


def test_our_gpt():
    "Lesson 03's GPT (forward(idx, targets) -> (logits, loss)) trains with the default compute_loss."
    from llm_course.transformer import GPT, GPTConfig
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=256, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    gpt = byte_lm_data(read_corpus(4_000), BLOCK, style="gpt")
    h = fit(m, gpt, gpt[-8:], config=cfg(lr=1e-2, max_steps=6, eval_every=3))
    assert len(h.loss) == 6 and h.loss[-1] < h.loss[0] and h.evals[-1]["loss"] < math.log(256)


@pytest.mark.parametrize("style", ["hf", "gpt"])
def test_lesson_bar_is_reached_only_by_training(style):
    """Lesson 04's ci check, its own recipe: the validation loss must beat the uniform guess over the byte values seen
    in
    training (ln k). A working run does; an untrained model and a learning rate 100x too small stay near ln 256."""
    from llm_course.core import get_profile
    from llm_course.transformer import GPT, GPTConfig
    p = get_profile("ci")
    data = byte_lm_data(read_corpus(p.corpus_chars), p.block_size, style=style)
    n_valid = max(p.batch_size, len(data) // 10)
    train, valid = data[:-n_valid], data[-n_valid:]
    bar = byte_baselines(train, valid)["uniform_seen"]

    def final_loss(lr):
        torch.manual_seed(0)
        model = (tiny_gpt2(p.block_size, p.n_layer, p.n_head, p.n_embd) if style == "hf"
                 else GPT(GPTConfig.from_profile(p, vocab_size=256)))
        c = TrainConfig(lr=lr, max_steps=p.max_steps, warmup_steps=p.max_steps // 10, batch_size=p.batch_size,
                        eval_every=p.eval_every, eval_batches=20, progress=False, plot=False)
        return fit(model, train, valid, c).evals[-1]["loss"]
    trained, too_small, untrained = final_loss(p.lr), final_loss(p.lr / 100), final_loss(0.0)
    assert trained < bar < too_small < untrained + 0.05, (trained, bar, too_small, untrained)
    assert untrained > math.log(256) - 0.1


# --- parity with Hugging Face Trainer (a smaller version of the notebook's) -------------------------------------------

def test_matches_hf_trainer(data, no_network):
    from transformers import Trainer, TrainingArguments, PrinterCallback
    steps, bs = 6, 4
    ours = tiny_gpt2(BLOCK, seed=1); init = {k: v.clone() for k, v in ours.state_dict().items()}
    h = fit(ours, data, config=cfg(max_steps=steps, warmup_steps=2, batch_size=bs, weight_decay=0.1, grad_clip=1.0))
    hf = tiny_gpt2(BLOCK, seed=2); hf.load_state_dict(init)
    ordered = [data[i] for i in Batches(data, bs, seed=42).order(0)]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=bs,
            learning_rate=3e-3,
            weight_decay=0.1,
            warmup_steps=2,
            lr_scheduler_type="cosine",
            max_grad_norm=1.0,
            optim="adamw_torch",
            train_sampling_strategy="sequential",
            dataloader_drop_last=True,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=42,
        )
        t = Trainer(model=hf, args=args, train_dataset=ordered); t.remove_callback(PrinterCallback)
        with warnings.catch_warnings(): warnings.simplefilter("ignore"); t.train()
    hf_loss = [r["loss"] for r in t.state.log_history if "loss" in r]
    assert len(hf_loss) == steps
    assert max(abs(a - b) for a, b in zip(h.loss, hf_loss)) < 1e-5
    assert weights_diff(ours, hf) < 1e-5


def test_resume_with_other_settings_warns(data, tmp_path):
    c = cfg(max_steps=4, out_dir=str(tmp_path / "run"))
    fit(tiny_gpt2(BLOCK), data, config=c, callbacks=[InterruptAt(2)])
    with pytest.warns(UserWarning, match=r"other settings \(lr: 0.003 -> 0.01\)"):
        fit(tiny_gpt2(BLOCK), data, config=cfg(max_steps=4, lr=1e-2, out_dir=c.out_dir), resume=True)


def test_custom_eval_metric_early_stopping_and_final_plot(data):
    "eval_fn may return any metrics; mode='max' early stopping watches one; plot=True draws the final figure."
    from llm_course.runs import LossPlot
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.69])
    h = fit(
        tiny_gpt2(BLOCK),
        data,
        data[-4:],
        cfg(max_steps=20, eval_every=2, metric="accuracy", mode="max", patience=3, plot=True),
        eval_fn=lambda model, batches: {"accuracy": next(scores)},
    )
    assert [e["accuracy"] for e in h.evals] == [0.5, 0.7, 0.6, 0.65, 0.69] and h.stopped.startswith(
        "early stopping: valid accuracy"
    )
    fig = h.plot(metric="accuracy")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "valid accuracy"
    lp = LossPlot(); fit(tiny_gpt2(BLOCK), data, config=cfg(max_steps=2), callbacks=[lp])
    assert lp.fig is not None and lp.fig.axes[0].lines
    with pytest.raises(KeyError, match="watches 'f1'"):
        fit(tiny_gpt2(BLOCK), data, data[-4:], cfg(max_steps=4, eval_every=2, metric="f1", patience=1))


class _Snapshots(Callback):
    "A copy of the weights at every evaluation, by step."
    def __init__(self): self.at = {}
    def on_eval(self, state, metrics):
        self.at[metrics["step"]] = {k: t.clone() for k, t in state.model.state_dict().items()}


def _holds(model, weights):
    return all(torch.equal(t, weights[k]) for k, t in model.state_dict().items())


@pytest.mark.parametrize("patience", [2, None])
def test_restore_best_puts_back_the_best_evaluations_weights(data, patience):
    "Best at the 2nd evaluation (step 4): with restore_best the model ends with step 4's weights, without it the last."
    ends = {}
    for restore in (True, False):
        scores, snaps, model = iter([0.5, 0.9, 0.7, 0.6, 0.8, 0.4]), _Snapshots(), tiny_gpt2(BLOCK)
        c = cfg(max_steps=12, eval_every=2, metric="acc", mode="max", patience=patience, restore_best=restore)
        h = fit(model, data, data[-4:], c, callbacks=[snaps], eval_fn=lambda m, b: {"acc": next(scores)})
        last = max(snaps.at)
        assert last == (8 if patience else 12)        # patience 2 stops two evaluations after the best
        ends[restore] = (_holds(model, snaps.at[4]), _holds(model, snaps.at[last]), h.stopped)
    assert ends[True][:2] == (True, False) and "restored the weights of step 4 (best valid acc)" in ends[True][2]
    assert ends[False][:2] == (False, True) and "restored" not in ends[False][2]


def test_restore_best_needs_evaluations_and_warns_after_a_resume_past_the_best(data, tmp_path):
    with pytest.raises(ValueError, match="restore_best needs valid_data and eval_every"):
        fit(tiny_gpt2(BLOCK), data, config=cfg(restore_best=True))
    c = cfg(max_steps=8, eval_every=2, restore_best=True, out_dir=str(tmp_path / "run"))
    scores = iter([1.0, 2.0, 3.0, 4.0])           # best at the first evaluation, before the interrupt
    run = lambda **kw: fit(tiny_gpt2(BLOCK), data, data[-4:], c, eval_fn=lambda m, b: {"loss": next(scores)}, **kw)
    h1 = run(callbacks=[InterruptAt(3)])
    assert h1.stopped == "interrupted"             # an interrupted run keeps its last weights, like its checkpoint
    with pytest.warns(UserWarning, match=r"best evaluation \(step 2\) came before the resume"):
        h2 = run(resume=True)
    assert h2.stopped == "max_steps"


def test_default_warmup_is_a_tenth_and_at_least_one_step():
    from llm_course.training import default_warmup
    assert [default_warmup(n) for n in (1, 9, 10, 20, 101, 1000)] == [1, 1, 1, 2, 10, 100]
    assert TrainConfig(max_steps=1, warmup_steps=default_warmup(1)).warmup_steps == 1
