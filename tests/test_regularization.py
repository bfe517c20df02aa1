"""Lesson 06a's cures on toy models: FGM's step and restore, fgm_loss's value and gradient, EDA, gap_closed
(restoring the best weights is `TrainConfig(restore_best=True)`, tested in test_training.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_course.regularization import FGM, eda_augment, fgm_loss, gap_closed, set_dropout


class Toy(nn.Module):
    "Embedding -> mean -> linear, returning (logits, loss) like the course's heads."
    def __init__(self):
        super().__init__()
        self.word_embeddings, self.out = nn.Embedding(20, 6), nn.Linear(6, 3)

    def forward(self, input_ids, labels=None):
        logits = self.out(self.word_embeddings(input_ids).mean(1))
        return logits, None if labels is None else F.cross_entropy(logits, labels)


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 20, (4, 5), generator=g), "labels": torch.randint(0, 3, (4,), generator=g)}


def test_fgm_steps_up_the_gradient_by_epsilon_and_restores_exactly():
    torch.manual_seed(0); m, b = Toy(), _batch()
    clean = m(**b)[1]; clean.backward()
    w0, g = m.word_embeddings.weight.detach().clone(), m.word_embeddings.weight.grad.clone()
    fgm = FGM(m, epsilon=0.3); fgm.attack()
    r = m.word_embeddings.weight.detach() - w0
    assert abs(r.norm().item() - 0.3) < 1e-6                                      # norm epsilon
    assert F.cosine_similarity(r.flatten(), g.flatten(), 0).item() > 1 - 1e-6    # along +g (a sign bug gives -1)
    with torch.no_grad(): assert m(**b)[1].item() > clean.item()                  # the loss goes up
    fgm.restore()
    assert torch.equal(m.word_embeddings.weight, w0)


def test_fgm_loss_reports_the_clean_loss_and_adds_the_adversarial_gradient():
    torch.manual_seed(0); m, b = Toy(), _batch()
    clean = m(**b)[1]; clean.backward()
    g_clean = {n: p.grad.clone() for n, p in m.named_parameters()}
    fgm = FGM(m, 0.5); fgm.attack(); m.zero_grad(); m(**b)[1].backward(); fgm.restore()
    g_adv = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad(); w0 = m.word_embeddings.weight.detach().clone()
    value = fgm_loss(0.5, "word_embeddings")(m, b)
    value.backward()
    assert abs(value.item() - clean.item()) < 1e-6
    assert torch.equal(m.word_embeddings.weight, w0)
    for n, p in m.named_parameters(): assert torch.allclose(p.grad, g_clean[n] + g_adv[n], atol=1e-6), n


def test_fgm_bad_use():
    with pytest.raises(ValueError, match="emb_name"): FGM(Toy(), emb_name="nope")
    with pytest.raises(RuntimeError, match="backward"): FGM(Toy()).attack()


def test_eda_and_dropout():
    s = "one two three four five six seven eight"
    outs = eda_augment(s, n=30, p=0.25, seed=3)
    assert outs == eda_augment(s, n=30, p=0.25, seed=3) and len(outs) == 30
    assert all(set(o.split()) <= set(s.split()) for o in outs) and len(set(outs)) > 5
    m = nn.Sequential(nn.Dropout(0.1), nn.Linear(2, 2), nn.Dropout(0.3))
    assert set_dropout(m, 0.0) == 2 and m[0].p == m[2].p == 0.0


def test_gap_closed_is_paired_and_signed():
    rng = np.random.default_rng(0)
    tr, te = rng.uniform(0, 0.1, 30), rng.uniform(0.8, 1.2, 40)
    half = gap_closed(tr, te, tr, tr.mean() + (te - tr.mean()) / 2, n_boot=300)
    assert abs(half.estimate - 0.5) < 1e-9 and half.low > 0.3 and half.high < 0.7
    wider = gap_closed(tr, te, tr, te + 0.5, n_boot=300)
    assert wider.estimate < 0 and wider.high < 0
    same = gap_closed(tr, te, tr, te, n_boot=50)
    assert same.estimate == same.low == same.high == 0.0
