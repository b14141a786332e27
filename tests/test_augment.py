"""--augment: the transforms' semantics, determinism, resume, and that only training
batches are augmented."""
import json

import numpy as np
import pytest
import torch

from neurodelay import api
from neurodelay.errors import OptionError
from neurodelay.train import augment as A
from neurodelay.train.model import loss_fn


def batch(B=16, T=30, C=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((B, T, C), 0.7), generator=g)
    y = torch.arange(B) % classes
    return x, y


def gen(i=0):
    return A.batch_generator(3, 1, i, "cpu")


# ----------------------------------------------------------------------------- parsing
def test_parse_canonical_and_presets():
    assert A.canonical("none") == A.canonical("") == A.canonical(None) == ""
    # every parameter explicit (a recorded setting keeps its meaning if a default changes)
    assert A.canonical("reference") == "mask:p=0.65,cutmix:p=0.5"
    assert A.canonical("reference, shift:k=3") == "mask:p=0.65,cutmix:p=0.5,shift:k=3:p=1"
    assert A.canonical("mask:time=7:p=0.5") == "mask:p=0.5:time=7"
    assert A.canonical(A.canonical("shift,blend")) == A.canonical("shift,blend")
    assert A.describe("mask", window=25, n_in=140) == "mask(p=0.65, time=8, channels=28)"


@pytest.mark.parametrize("spec, msg", [
    ("wobble", "unknown transform 'wobble'"),
    ("mask,,cutmix", "an empty item"),
    ("mask:q=1", "'q=1' is not key=value with a key of p, time, channels"),
    ("mask:p=1.5", r"mask:p=1.5 must be a probability in \[0, 1\]"),
    ("shift:k=x", "shift:k must be an integer, got 'x'"),
    ("shift:k=0", "shift:k=0 must be an integer >= 1"),
    ("noise:sigma=-1", "must be a number >= 0"),
    ("none,mask", "'none' cannot be combined"),
    ("shift:k=2:k=3", "a parameter is given twice"),
])
def test_parse_errors_name_the_problem(spec, msg):
    with pytest.raises(OptionError, match=msg):
        A.parse(spec)


# ----------------------------------------------------------------------- the transforms
def run(spec, x, y, i=0, classes=4, window=12):
    return A.Augmenter(spec, window=window, n_classes=classes)(x, y, gen(i))


def test_mask_zeroes_one_run_of_steps_and_of_channels():
    x, y = batch()
    x = x + 1                           # no zero anywhere before masking
    out, y2 = run("mask:p=1:time=6:channels=5", x, y)
    assert torch.equal(y2, y)
    zero = out == 0
    for b in range(len(x)):
        steps = zero[b].all(1).nonzero().flatten()      # fully zeroed steps
        chans = zero[b].all(0).nonzero().flatten()
        for idx, limit in ((steps, 6), (chans, 5)):
            assert len(idx) < limit
            if len(idx):                                  # one contiguous run
                assert idx.max() - idx.min() + 1 == len(idx)
        kept = ~zero[b]
        assert torch.equal(out[b][kept], x[b][kept])
    assert zero.any()
    assert torch.equal(run("mask:p=0", x, y)[0], x)


def test_cutmix_copies_a_span_of_the_next_sample_and_mixes_labels():
    x, y = batch()
    out, soft = run("cutmix:p=1", x, y, classes=4)
    assert soft.shape == (16, 4) and torch.allclose(soft.sum(1), torch.ones(16))
    T = x.shape[1]
    for b in range(16):
        nxt = (b + 1) % 16
        from_next = (out[b] != x[b]).any(1)          # steps that changed
        frac = soft[b, y[nxt]] if y[nxt] != y[b] else None
        assert torch.equal(out[b][from_next], x[nxt][from_next])
        if frac is not None:
            # the label share of the partner is the fraction of steps taken from it
            # (>= the steps that visibly changed: copied steps may coincide)
            assert frac * T >= int(from_next.sum()) - 1e-6
            assert soft[b, y[b]] == pytest.approx(1 - float(frac))
    loss = loss_fn(torch.randn(16, T, 4), soft)     # loss_fn takes mixed targets
    assert torch.isfinite(loss)


def test_shift_moves_every_channel_of_a_sample_by_one_amount():
    x, y = batch(C=12)
    out, _ = run("shift:k=3", x, y)
    seen = set()
    for b in range(16):
        matches = [s for s in range(-3, 4)
                   if torch.equal(out[b], torch.roll(x[b], s, 1)
                                  * _inside(12, s)[None, :])]
        assert matches, f"sample {b} is not a shifted copy"
        seen.update(matches)
    assert len(seen) > 2                                # the amount is random per sample


def _inside(C, s):
    src = torch.arange(C) - s
    return ((src >= 0) & (src < C)).float()


def test_blend_mixes_only_samples_of_the_same_class():
    x, y = batch(B=12, classes=3)
    out, y2 = run("blend:p=1", x, y, classes=3)
    assert torch.equal(y2, y)
    for b in range(12):
        same = [j for j in range(12) if j != b and y[j] == y[b]]
        ok = [j for j in same
              if torch.all((out[b] == x[b]) | (out[b] == x[j]))]
        assert ok, f"sample {b} is not a mix of itself and one of its class"
    assert not torch.equal(out, x)


@pytest.mark.parametrize("sigma, sparse", [(0.2, None), (0.6, None), (0.6, True)])
def test_noise_follows_the_law_of_abs_round_normal(sigma, sparse, monkeypatch):
    """The sparse draw (q < 5 %: sigma 0.2; forced at 0.6, where 2s are common) and the
    dense one (0.6) give |round(N(0, sigma))|: counts of 1 and 2 within 5 sd."""
    import math
    if sparse:
        monkeypatch.setattr(A, "SPARSE_NOISE_MAX_Q", 1.0)
    x = torch.zeros(64, 125, 125)                 # 1e6 bins
    out, _ = A.Augmenter(f"noise:sigma={sigma}", window=12, n_classes=2)(
        x, torch.zeros(64, dtype=torch.int64), gen())
    n = out.numel()
    for k in (1, 2):
        p = (math.erfc((k - 0.5) / (sigma * math.sqrt(2)))
             - math.erfc((k + 0.5) / (sigma * math.sqrt(2))))
        seen = int((out == k).sum())
        assert abs(seen - n * p) <= 5 * math.sqrt(n * p) + 5, (k, seen, n * p)
    half = out.reshape(-1)[: n // 2].sum() / out.sum()     # spread over the whole batch
    assert 0.48 < float(half) < 0.52


def test_noise_adds_nonnegative_integer_counts():
    x, y = batch()
    out, _ = run("noise:sigma=0.5", x, y)
    d = out - x
    assert (d >= 0).all() and torch.equal(d, d.round()) and d.sum() > 0
    assert torch.equal(run("noise:sigma=0", x, y)[0], x)


def test_a_generator_fixes_the_draw_and_the_input_is_not_changed():
    x, y = batch()
    x0 = x.clone()
    spec = "mask,shift,blend,cutmix,noise"
    a = run(spec, x, y, i=0)
    b = run(spec, x, y, i=0)
    c = run(spec, x, y, i=1)
    assert torch.equal(x, x0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# ------------------------------------------------------------------------ in training
def _metrics(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in path.read_text().splitlines()]


def test_augmented_training_resumes_to_the_same_numbers(tmp_path, files):
    kw = dict(preset="tiny", hidden=[8], epochs=3, batch_size=128, seed=5, progress=False,
              augment="reference,shift:k=2", log=lambda m: None)
    full = api.train_run(str(tmp_path / "full"), **kw, **files)
    plain = api.train_run(str(tmp_path / "plain"), **{**kw, "augment": None}, **files)
    assert _metrics(tmp_path / "full" / "metrics.jsonl") != \
        _metrics(tmp_path / "plain" / "metrics.jsonl")
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg["train"]["augment"] == "mask:p=0.65,cutmix:p=0.5,shift:k=2:p=1"
    from neurodelay.data import DataConfig
    from neurodelay.train.model import ModelConfig
    from neurodelay.train.trainer import TrainConfig, train
    mc, tc, dc = (ModelConfig(**cfg["model"]), TrainConfig(**cfg["train"]),
                  DataConfig(**cfg["data"]))
    train(tmp_path / "part", mc, tc, dc, progress=False, stop_after_epoch=1,
          log=lambda m: None)
    resumed = api.train_run(str(tmp_path / "part"), resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert _metrics(tmp_path / "part" / "metrics.jsonl") == \
        _metrics(tmp_path / "full" / "metrics.jsonl")
    assert plain["test_accuracy"] is not None
    with pytest.raises(OptionError, match=r"--augment mask \(the run has mask:p=0.65,cutmix:p=0.5,shift"):
        api.train_run(str(tmp_path / "part"), resume=True, augment="mask")
    # the same setting written differently is not a change
    api.check_resume_options(str(tmp_path / "part"), augment="reference,shift:k=2")


def test_only_training_batches_are_augmented(tmp_path, files, monkeypatch):
    """Every call of the augmenter is on a training batch: as many calls as batches."""
    seen = []
    real = A.Augmenter.__call__

    def spy(self, x, y, g):
        seen.append(len(y))
        return real(self, x, y, g)

    monkeypatch.setattr(A.Augmenter, "__call__", spy)
    res = api.train_run(str(tmp_path / "r"), preset="tiny", hidden=[8], epochs=2,
                        batch_size=128, seed=1, progress=False, augment="mask",
                        log=lambda m: None, **files)
    n_train = json.loads((tmp_path / "r" / "config.json").read_text())["splits"]["train"]
    assert sum(seen) == 2 * n_train and res["finished"]


def test_finetune_augments_its_batches_and_resumes_alike(trained, tmp_path, monkeypatch):
    from neurodelay.runs import open_run
    from neurodelay.train.finetune import FinetuneConfig, finetune

    calls = []
    real = A.Augmenter.__call__
    monkeypatch.setattr(A.Augmenter, "__call__",
                        lambda self, x, y, g: calls.append(len(y)) or real(self, x, y, g))
    fc = FinetuneConfig(weight_bits=6, delay_bits=5, epochs=2, augment="shift:k=2,cutmix")
    quiet = dict(progress=False, threads=1, log=lambda m: None)
    full = finetune(trained[0], tmp_path / "full", fc, **quiet)
    assert calls and open_run(tmp_path / "full").config["finetune"]["augment"] == \
        "shift:k=2:p=1,cutmix:p=0.5"
    finetune(trained[0], tmp_path / "part", fc, stop_after_epoch=1, **quiet)
    res = finetune(None, tmp_path / "part", resume=True, **quiet)
    assert res["test_accuracy"] == full["test_accuracy"]
    a, b = open_run(tmp_path / "full").qnetwork(), open_run(tmp_path / "part").qnetwork()
    assert all(np.array_equal(la.weight, lb.weight) for la, lb in zip(a.layers, b.layers))
