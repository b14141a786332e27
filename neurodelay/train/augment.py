"""Data augmentation of training batches: named, composable transforms (``--augment``).

A setting is a comma-separated list of transforms, applied in the order given, each with
optional parameters::

    --augment mask,cutmix                     the reference code's block (= "reference")
    --augment reference,shift                 a preset expands in place
    --augment shift:k=4,blend:p=0.5           channel shift, then same-class blend
    --augment mask:p=0.5:time=10,noise:sigma=0.2

The transforms act on a whole binned batch x (B, T, C) of spike counts at once (torch,
on the batch's device), never on validation or test data:

``mask``    (p=0.65, time=window//3, channels=C//5) with probability p per sample, zero a
            run of n ~ U{0..time-1} consecutive steps at a uniform start; independently,
            with probability p, zero a run of n ~ U{0..channels-1} neighbouring channels
            (SNN-delays' time-and-neuron masking: probability 0.65, Td/3 steps, n_in/5).
``cutmix``  (p=0.5) with probability p, replace a uniformly placed span of
            floor(lam * T) steps, lam ~ U(0, 1), by the same span of the next sample of
            the batch (cyclically); the target becomes the mix of the two one-hot labels
            in proportion to the steps each sample keeps (SNN-delays' time-axis CutMix,
            probability 0.5; there the label weight is lam, here the exact fraction).
``noise``   (sigma=0.2) add |round(N(0, sigma))| to every count (SNN-delays' RNoise;
            its default sigma 0 is off; 0.2 adds a spike to about 1 % of the bins).
``shift``   (k=2, p=1) with probability p, move all channels of a sample by one random
            integer in [-k, k] (channels that move out are dropped, the others are zero):
            a new voice's formants sit a few cochlear channels away (Nowotny et al.,
            loss shaping with EventProp). k=2 (of 140 inputs, i.e. +-10 of the 700 cochlea
            channels): on SSHD's validation speakers it beat k=4 and k=8
            (benchmarks/results/augment_sshd).
``blend``   (p=0.5) with probability p, mix a sample with a random other sample of the
            same class in the batch: every (step, channel) count comes from either of the
            two with probability 1/2 (same-class blending, Nowotny et al.; they also align
            the two samples' centres of mass, which this version does not).

Randomness: one ``torch.Generator`` per batch, seeded from (run seed, epoch, batch index),
so a run is fixed by its seed and a resumed run draws exactly what the uninterrupted one
drew; in distributed training every process augments the whole global batch alike and
then takes its share. Labels come back as int64 (B,) while no transform mixes labels and
as float (B, n_classes) probabilities otherwise (``loss_fn`` takes both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from neurodelay.errors import OptionError

PRESETS = {"none": "", "reference": "mask,cutmix"}
# noise: below this probability of a noisy bin only the noisy bins are drawn
SPARSE_NOISE_MAX_Q = 0.05


@dataclass(frozen=True)
class _Kind:
    params: dict            # name -> (type, default; None = derived from the data)
    help: str


KINDS: dict[str, _Kind] = {
    "mask": _Kind({"p": (float, 0.65), "time": (int, None), "channels": (int, None)},
                  "time and channel masking"),
    "cutmix": _Kind({"p": (float, 0.5)}, "time-axis CutMix with the next sample"),
    "noise": _Kind({"sigma": (float, 0.2)}, "additive |round(N(0, sigma))| counts"),
    "shift": _Kind({"k": (int, 2), "p": (float, 1.0)}, "shift all channels by U{-k..k}"),
    "blend": _Kind({"p": (float, 0.5)}, "mix with a sample of the same class"),
}


@dataclass(frozen=True)
class Transform:
    """One parsed transform: its name and its explicit parameters (others default)."""

    name: str
    params: tuple            # ((key, value), ...) in the order written

    def get(self, key: str, default=None):
        return dict(self.params).get(key, default)

    def __str__(self) -> str:
        return ":".join([self.name] + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in self.params])


def _bad(spec: str, msg: str) -> OptionError:
    names = ", ".join(KINDS)
    return OptionError(f"--augment {spec!r}: {msg}. A setting is a comma-separated list of "
                       f"transforms ({names}; presets: {', '.join(PRESETS)}), each with "
                       f"optional parameters, e.g. 'mask,cutmix' or 'shift:k=4,blend:p=0.5'")


def parse(spec: str | None) -> tuple[Transform, ...]:
    """The transforms of an ``--augment`` setting (OptionError naming what is wrong)."""
    spec = "" if spec is None else str(spec).strip()
    items = [i.strip() for i in spec.split(",")] if spec else []
    if "" in items:
        raise _bad(spec, "an empty item")
    if "none" in items and len(items) > 1:
        raise _bad(spec, "'none' cannot be combined with transforms")
    items = [part for i in items for part in (PRESETS[i].split(",") if i in PRESETS
                                              else [i]) if part]
    out = []
    for item in items:
        name, *pairs = item.split(":")
        if name not in KINDS:
            raise _bad(spec, f"unknown transform {name!r}")
        params = []
        for pair in pairs:
            key, eq, raw = pair.partition("=")
            if not eq or key not in KINDS[name].params:
                keys = ", ".join(KINDS[name].params)
                raise _bad(spec, f"{name}: {pair!r} is not key=value with a key of {keys}")
            typ, _ = KINDS[name].params[key]
            try:
                value = typ(raw)
            except ValueError:
                raise _bad(spec, f"{name}:{key} must be {'an integer' if typ is int else 'a number'}"
                                 f", got {raw!r}") from None
            ok = (0.0 <= value <= 1.0) if key == "p" else (value >= 0 if key == "sigma"
                                                           else value >= 1)
            if not (ok and np.isfinite(value)):
                rule = ("a probability in [0, 1]" if key == "p" else
                        "a number >= 0" if key == "sigma" else "an integer >= 1")
                raise _bad(spec, f"{name}:{key}={raw} must be {rule}")
            params.append((key, value))
        given = dict(params)
        if len(given) < len(params):
            raise _bad(spec, f"{name}: a parameter is given twice")
        # every parameter written out (the defaults too), so a recorded setting keeps its
        # meaning if a default changes; data-derived defaults (mask's spans) stay implicit
        full = [(k, given.get(k, d)) for k, (_, d) in KINDS[name].params.items()
                if k in given or d is not None]
        out.append(Transform(name, tuple(full)))
    return tuple(out)


def canonical(spec: str | None) -> str:
    """The setting written out in one standard form, every parameter explicit except
    the data-derived ones ("" = no augmentation): what config.json records."""
    return ",".join(str(t) for t in parse(spec))


def describe(spec: str | None, *, window: int | None = None, n_in: int | None = None) -> str:
    """Every transform with all its parameters, for logs and reports."""
    parts = []
    for t in parse(spec):
        vals = []
        for key, (_, default) in KINDS[t.name].params.items():
            v = t.get(key, default)
            if v is None:
                v = _derived(key, window, n_in)
            vals.append(f"{key}={v:g}" if isinstance(v, float) else f"{key}={v}")
        parts.append(f"{t.name}({', '.join(vals)})")
    return " -> ".join(parts) if parts else "none"


def _derived(key: str, window: int | None, n_in: int | None):
    if key == "time":
        return max(1, (window or 3) // 3) if window else "window//3"
    return max(1, n_in // 5) if n_in else "channels//5"


def batch_generator(seed: int, epoch: int, index: int, device) -> torch.Generator:
    """The generator of one batch: a function of (seed, epoch, batch index) only."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


class Augmenter:
    """Applies a parsed setting to training batches (module docstring).

    ``window``: the model's delay window in steps (mask's default time span);
    ``n_classes``: for the soft targets of label-mixing transforms.
    """

    def __init__(self, spec: str | None, *, window: int, n_classes: int):
        self.transforms = parse(spec)
        self.window, self.n_classes = int(window), int(n_classes)

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        """(x, y) augmented: x (B, T, C) float counts; y int64 (B,) or float (B, classes)."""
        if not self.transforms or len(y) == 0:
            return x, y
        x = x.clone()
        for t in self.transforms:
            x, y = getattr(self, f"_{t.name}")(t, x, y, g)
        return x, y

    # ----------------------------------------------------------------- the transforms
    def _coin(self, g, p: float, n: int, device) -> torch.Tensor:
        return torch.rand(n, generator=g, device=device) < p

    def _span(self, g, length: int, size: int, apply: torch.Tensor) -> torch.Tensor:
        """(B, length) bool: a run of U{0..size-1} positions at a uniform start."""
        B, dev = len(apply), apply.device
        size = max(1, min(size, length))
        n = torch.randint(0, size, (B,), generator=g, device=dev)
        start = (torch.rand(B, generator=g, device=dev) * (length - size + 1)).long()
        pos = torch.arange(length, device=dev)
        return (pos >= start[:, None]) & (pos < (start + n)[:, None]) & apply[:, None]

    def _mask(self, t, x, y, g):
        B, T, C = x.shape
        p = t.get("p", 0.65)
        time = t.get("time") or max(1, self.window // 3)
        channels = t.get("channels") or max(1, C // 5)
        tm = self._span(g, T, time, self._coin(g, p, B, x.device))
        cm = self._span(g, C, channels, self._coin(g, p, B, x.device))
        return x.masked_fill(tm[:, :, None] | cm[:, None, :], 0.0), y

    def _soft(self, y: torch.Tensor, dtype) -> torch.Tensor:
        if y.ndim == 2:
            return y
        return torch.nn.functional.one_hot(y, self.n_classes).to(dtype)

    def _cutmix(self, t, x, y, g):
        B, T, _ = x.shape
        apply = self._coin(g, t.get("p", 0.5), B, x.device)
        lam = torch.rand(B, generator=g, device=x.device)
        cut = torch.floor(lam * T).long() * apply
        start = (torch.rand(B, generator=g, device=x.device) * (T - cut + 1)).long()
        pos = torch.arange(T, device=x.device)
        span = (pos >= start[:, None]) & (pos < (start + cut)[:, None])      # (B, T)
        partner = torch.roll(torch.arange(B, device=x.device), -1)
        x = torch.where(span[:, :, None], x[partner], x)
        frac = (cut.to(x.dtype) / max(T, 1))[:, None]
        ys = self._soft(y, x.dtype)
        return x, (1 - frac) * ys + frac * ys[partner]

    def _noise(self, t, x, y, g):
        sigma = t.get("sigma", 0.2)
        if sigma == 0:
            return x, y
        # |round(N(0, sigma))| >= 1 with probability q = P(|N| >= 0.5); for small q only
        # the bins that get noise are drawn (Bernoulli process by geometric gaps), then
        # their value from the conditional distribution: the same law as a dense draw
        q = math.erfc(0.5 / (sigma * math.sqrt(2.0)))
        if q > SPARSE_NOISE_MAX_Q:
            noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * sigma
            return x + noise.round().abs(), y
        n = x.numel()
        mean = n * q
        pos = torch.empty(0, dtype=torch.int64, device=x.device)
        start = -1
        while True:
            m = int(mean + 6.0 * math.sqrt(mean) + 16)
            gaps = torch.empty(m, device=x.device, dtype=torch.float64).geometric_(
                q, generator=g)
            steps = start + torch.cumsum(gaps, 0).to(torch.int64)
            pos = torch.cat([pos, steps[steps < n]])
            if len(steps) == 0 or int(steps[-1]) >= n:
                break
            start = int(steps[-1])
        # P(k) for k = 1, 2, ... given k >= 1: P(k - 1/2 <= |N| < k + 1/2) / q
        ks = [k for k in range(1, 64) if math.erfc((k - 0.5) / (sigma * math.sqrt(2))) > 1e-15]
        tail = torch.tensor([math.erfc((k + 0.5) / (sigma * math.sqrt(2.0))) / q for k in ks],
                            device=x.device, dtype=torch.float64)
        u = torch.rand(len(pos), generator=g, device=x.device, dtype=torch.float64)
        value = 1 + (u[:, None] < tail[None, :]).sum(1)          # inverse CDF
        flat = x.reshape(-1)                     # x: __call__'s own copy
        flat.index_add_(0, pos, value.to(x.dtype))
        return x, y

    def _shift(self, t, x, y, g):
        B, T, C = x.shape
        k, p = t.get("k", 2), t.get("p", 1.0)
        s = torch.randint(-k, k + 1, (B,), generator=g, device=x.device)
        s = s * self._coin(g, p, B, x.device)
        src = torch.arange(C, device=x.device)[None, :] - s[:, None]       # (B, C)
        valid = (src >= 0) & (src < C)
        idx = src.clamp(0, C - 1)[:, None, :].expand(B, T, C)
        return torch.gather(x, 2, idx) * valid[:, None, :].to(x.dtype), y

    def _blend(self, t, x, y, g):
        B = x.shape[0]
        cls = y if y.ndim == 1 else y.argmax(1)
        same = (cls[:, None] == cls[None, :]) & ~torch.eye(B, dtype=torch.bool,
                                                           device=x.device)
        score = torch.rand((B, B), generator=g, device=x.device).masked_fill(~same, -1.0)
        partner = score.argmax(1)
        apply = self._coin(g, t.get("p", 0.5), B, x.device) & same.any(1)
        idx = apply.nonzero().flatten()
        if len(idx) == 0:
            return x, y
        pick = torch.rand((len(idx),) + tuple(x.shape[1:]), generator=g, device=x.device) < 0.5
        x[idx] = torch.where(pick, x[idx], x[partner[idx]])   # x: __call__'s own copy
        return x, y
