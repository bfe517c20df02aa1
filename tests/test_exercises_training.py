"""The checkers of lessons 04-06 (llm_course.exercise_sets.training, .pretraining, .heads): right answers written
differently from the reference pass, each usual mistake is recognised and named, and a do-nothing answer earns 0
without crashing them."""
import math, re

import torch
import torch.nn.functional as F

from llm_course.core import get_profile
from llm_course.exercises import EXERCISES, get_exercise
import llm_course.exercise_sets.heads as H
import llm_course.exercise_sets.pretraining as P
import llm_course.exercise_sets.training as T

LESSONS = ("04", "05", "06")

from exercise_checks import assert_named, assert_zero, first, run, stub  # noqa: E402
def zero(*args, **kwargs): return 0


def test_the_set_registers_its_exercises():
    mine = [e for e in EXERCISES.values() if e.lesson in ("04", "05", "06")]
    by_lesson = {l: [e for e in mine if e.lesson == l] for l in ("04", "05", "06")}
    assert all(len(v) >= 3 for v in by_lesson.values()), {k: len(v) for k, v in by_lesson.items()}
    assert {e.kind for e in mine} == {"build", "predict", "ablate", "debug"}
    assert {l for l, v in by_lesson.items() if any(e.scales for e in v)} == {"04", "05", "06"}
    for e in mine:
        assert re.match(rf"{e.lesson}[a-z]?_", e.section), e.section      # 05b_generation is part of lesson 05
        assert e.notebook == {"04": "ex04_training", "05": "ex05_pretraining", "06": "ex06_heads"}[e.lesson]


# lesson 04
def lr_factor(step, warmup_steps, max_steps, min_lr_ratio=0.0):
    "Written differently: the cosine through sin^2."
    if warmup_steps and step < warmup_steps: return step / warmup_steps
    t = min(step - warmup_steps, max_steps - warmup_steps) / max(1, max_steps - warmup_steps)
    return 1 - (1 - min_lr_ratio) * math.sin(math.pi * t / 2) ** 2

def test_lr_factor():
    assert run("lr_factor", lr_factor, seed=3).ok
    for mistake, wrong in get_exercise("lr_factor").mistakes.items(): assert_named("lr_factor", wrong, mistake)
    for lazy in (stub, first, zero): assert_zero("lr_factor", lazy)

def test_init_loss():
    assert run("init_loss", 5.55).ok and run("init_loss", math.log(256)).ok
    assert_named("init_loss", 8.0, "bits")
    assert_named("init_loss", 256, "perplexity")
    r = assert_zero("init_loss", 0)
    assert "ln 256" in r.text()
    assert_zero("init_loss", ...)
    assert_zero("init_loss", "five")

def train_loop(model, batches, lr):
    "Written differently: set_to_none=False, the optimizer built from a list."
    opt = torch.optim.AdamW(list(model.parameters()), lr=lr)
    out = []
    for b in batches:
        opt.zero_grad(set_to_none=False)
        loss = model(b["idx"], b["targets"])[1]
        loss.backward(); opt.step()
        out.append(float(loss.detach()))
    return out

def planted_loop(model, batches, lr):
    "The function as the student gets it."
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for batch in batches:
        _, loss = model(**batch)
        loss.backward()
        opt.zero_grad()
        opt.step()
        losses.append(loss.item())
    return losses

def no_zero_grad(model, batches, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for batch in batches:
        _, loss = model(**batch); loss.backward(); opt.step(); losses.append(loss.item())
    return losses

def test_train_loop():
    assert run("train_loop", train_loop).ok
    assert_named("train_loop", planted_loop, "zero_grad between backward and step")
    assert_named("train_loop", no_zero_grad, "never zeroed")
    assert_named("train_loop", lambda m, b, lr: train_loop(m, b, lr / 100), "the fixed loop reaches")
    for lazy in (stub, zero, lambda m, b, lr: []): assert_zero("train_loop", lazy)

def test_lr_sweep():
    table = T._lr_sweep_table(get_profile().name)
    best = min(table, key=table.get)
    assert run("lr_sweep", {"table": {k: round(v, 3) for k, v in table.items()}, "conclusion": best}).ok
    wrong = next(k for k in table if table[k] > min(table.values()) + 0.01)
    assert_named("lr_sweep", {"table": table, "conclusion": wrong}, "does not support")
    assert_named("lr_sweep", {"table": {**table, "small": table["small"] + 1}, "conclusion": best}, "re-run")
    for lazy in ({"table": {}, "conclusion": ""}, 0, None): assert_zero("lr_sweep", lazy)


# lesson 05
def mask_tokens(input_ids, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15, generator=None):
    "Written differently: one uniform draw for both decisions, replacements by rejection-free indexing."
    u = torch.rand(input_ids.shape, generator=generator)
    special = torch.tensor(list(special_ids) + [mask_token_id])
    chosen = (u < mlm_probability) & ~torch.isin(input_ids, special)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    out = input_ids.clone()
    split = u / mlm_probability                                 # uniform in [0, 1) on the chosen tokens
    out[chosen & (split < 0.8)] = mask_token_id
    rnd = chosen & (split >= 0.8) & (split < 0.9)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special.tolist())])
    out[rnd] = ordinary[torch.randint(len(ordinary), (int(rnd.sum()),), generator=generator)]
    return out, labels

def test_mask_tokens():
    assert run("mask_tokens", mask_tokens, seed=5).ok
    for mistake, wrong in get_exercise("mask_tokens").mistakes.items(): assert_named("mask_tokens", wrong, mistake)
    def nothing(input_ids, *a, **k): return input_ids.clone(), torch.full_like(input_ids, -100)

    r = assert_zero("mask_tokens", nothing)  # masks nothing: no ZeroDivisionError, a sentence instead
    assert "no token was chosen" in r.text()
    def labels_all(input_ids, *a, **k): return input_ids.clone(), input_ids.clone()
    assert_zero("mask_tokens", labels_all)
    for lazy in (stub, first, zero): assert_zero("mask_tokens", lazy)

def test_uniform_perplexity():
    V = P._uniform_ppl()[1]
    assert run("uniform_perplexity", V).ok
    assert_named("uniform_perplexity", math.log(V), "the loss, not the perplexity")
    assert_named("uniform_perplexity", 1 / V, "probability")
    assert_zero("uniform_perplexity", 0)
    assert_zero("uniform_perplexity", ...)

def sample_next(logits, temperature=1.0, generator=None):
    "Written differently: Gumbel-max on the scaled logits."
    if temperature == 0: return logits.argmax(-1, keepdim=True)
    u = torch.rand(logits.shape, generator=generator).clamp_min(1e-20)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1, keepdim=True)

def test_sample_next():
    assert run("sample_next", sample_next, seed=2).ok
    assert_named("sample_next", P._sample_times, "multiplied by the temperature")
    assert_named("sample_next", lambda logits, temperature=1.0, generator=None:
                 torch.multinomial(logits.softmax(-1), 1, generator=generator), "temperature is ignored")
    for lazy in (stub, first, zero, lambda logits, *a, **k: torch.zeros(len(logits), dtype=torch.long)):
        assert_zero("sample_next", lazy)

def pretrain_gpt(model, ids, steps, batch_size, lr, seed=0):
    "Written differently: the pair cut from one window of T + 1 tokens."
    g, T_ = torch.Generator().manual_seed(seed), model.config.block_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        starts = torch.randint(1, len(ids) - T_ - 1, (batch_size,), generator=g).tolist()
        window = torch.stack([ids[s:s + T_ + 1] for s in starts])
        logits, _ = model(window[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    return losses

def planted_pretrain(model, ids, steps, batch_size, lr, seed=0, shift=0):
    g, T_ = torch.Generator().manual_seed(seed), model.config.block_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        starts = torch.randint(1, len(ids) - T_ - 1, (batch_size,), generator=g).tolist()
        idx = torch.stack([ids[s:s + T_] for s in starts])
        targets = torch.stack([ids[s + shift:s + shift + T_] for s in starts])
        _, loss = model(idx, targets)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    return losses

def test_pretrain_gpt():
    assert run("pretrain_gpt", pretrain_gpt).ok
    assert_named("pretrain_gpt", planted_pretrain, "the targets are the inputs")
    assert_named("pretrain_gpt", lambda *a, **k: planted_pretrain(*a, **k, shift=-1), "previous tokens")
    for lazy in (stub, zero, lambda *a, **k: [0.0]): assert_zero("pretrain_gpt", lazy)


# lesson 06
def mean_pool(hidden, mask):
    "Written differently: a masked einsum."
    m = mask.to(hidden.dtype)
    return torch.einsum("bt,bth->bh", m, hidden) / m.sum(1, keepdim=True).clamp(min=1)

def test_mean_pool():
    assert run("mean_pool", mean_pool).ok
    for mistake, wrong in get_exercise("mean_pool").mistakes.items(): assert_named("mean_pool", wrong, mistake)
    for lazy in (stub, first, zero, lambda h, m: torch.zeros(h.shape[0], h.shape[2])): assert_zero("mean_pool", lazy)

def cross_entropy(logits, labels, label_smoothing=0.0):
    "Written differently: an explicit smoothed target distribution."
    keep = labels != -100
    K = logits.size(-1)
    target = torch.full((int(keep.sum()), K), label_smoothing / K)
    target[torch.arange(len(target)), labels[keep]] += 1 - label_smoothing
    return -(target * torch.log_softmax(logits[keep], -1)).sum(-1).mean()

def test_cross_entropy():
    assert run("cross_entropy", cross_entropy).ok
    for mistake, wrong in get_exercise("cross_entropy").mistakes.items(): assert_named("cross_entropy", wrong, mistake)
    for lazy in (stub, first, zero, lambda logits, labels, eps=0.0: torch.tensor(0.0)):
        assert_zero("cross_entropy", lazy)

def predict_proba(model, tokenizer, texts):
    "Written differently: one text at a time, so no padding at all."
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(**tokenizer([t], return_tensors="pt")).logits.softmax(-1) for t in texts])

def planted_predict(model, tokenizer, texts):
    head = torch.nn.Linear(model.config.dim, model.config.num_labels)
    enc = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
    out = model(**enc)
    return head(out.pooler_output).softmax(-1)

def test_predict_proba():
    assert run("predict_proba", predict_proba).ok
    r = run("predict_proba", planted_predict)
    assert r.points == 0 and "pooler_output" in r.text(), r.text()
    def second_head(model, tokenizer, texts):
        model.eval()
        head = torch.nn.Linear(model.config.num_labels, model.config.num_labels)
        with torch.no_grad():
            return head(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits).softmax(-1)
    assert_named("predict_proba", second_head, "own classification head")
    def train_mode(model, tokenizer, texts):
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    assert_named("predict_proba", train_mode, "train mode")
    def logits_only(model, tokenizer, texts):
        model.eval()
        with torch.no_grad(): return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert_named("predict_proba", logits_only, "softmax")
    for lazy in (stub, zero, first): assert_zero("predict_proba", lazy)

def test_freeze_sweep():
    table = H._freeze_table(get_profile().name)
    best = max(table, key=table.get)
    assert run("freeze_sweep", {"table": {k: round(v, 3) for k, v in table.items()}, "conclusion": best}).ok
    worse = [k for k in table if table[k] < max(table.values()) - 0.02]
    if worse: assert_named("freeze_sweep", {"table": table, "conclusion": worse[0]}, "does not support")
    assert_named("freeze_sweep", {"table": {**table, "all": table["all"] + 0.2}, "conclusion": best}, "re-run")
    for lazy in ({"table": {}, "conclusion": ""}, 0, None): assert_zero("freeze_sweep", lazy)

def lesson_headings(lesson_stem):
    import json, pathlib
    nb = json.loads((pathlib.Path(__file__).parent.parent / "nbs" / f"{lesson_stem}.ipynb").read_text())
    return {line.lstrip("#").strip() for c in nb["cells"] if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("#")}

def test_sections_are_headings_of_their_lessons():
    "Each exercise names a section that exists in its lesson notebook (a renamed section fails here)."
    for e in EXERCISES.values():
        if e.lesson in LESSONS:
            stem, section = e.section.split(": ", 1)
            assert section in lesson_headings(stem), (e.name, e.section)


def collate(tokenizer, texts, labels, max_length=128):
    "Written differently: tokenised one by one, then padded by hand with the tokenizer's pad id."
    rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    T_ = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (T_ - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T_ - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels)}

def test_collate():
    assert run("collate", collate, seed=4).ok
    for mistake, wrong in get_exercise("collate").mistakes.items(): assert_named("collate", wrong, mistake)
    def texts_back(tokenizer, texts, labels, max_length=128): return texts
    for lazy in (stub, zero, texts_back): assert_zero("collate", lazy)
