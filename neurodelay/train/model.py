"""DelaySNN: a feedforward spiking network whose every synapse has a weight and a delay.

The method is DCLS (Hammouamri et al. 2023): each synapse i<-j is a 1-D temporal kernel
over a window of ``Td`` steps holding one Gaussian, centred on a learnable position,
whose width sigma is shrunk by a schedule during training. At evaluation the Gaussian
collapses to one tap: the network becomes the paper's Eq. 6 with integer delays,

    I_i[t] = sum_j w_ij * S_j[t - d_ij].

Layout of one hidden block (as in the paper's reference code):
    delay synapses (dcls.Dcls1d, version 'gauss', causal left pad Td-1)
    -> BatchNorm1d (statistics over time x batch) -> LIF (spikingjelly) -> Dropout.
The readout is the same synapses into non-spiking leaky integrators (threshold 1e9);
its score is sum_t softmax(u[t]).

Position convention (dcls): kernel tap index n of the cross-correlation sees input
x[t - (Td - 1) + n], so tap n is delay Td-1-n. dcls centres its position parameter P
at Td//2, hence  delay = Td - 1 - (P + Td//2).  P is kept in [-(Td//2), Td-1-Td//2].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from DCLS.construct.modules import Dcls1d
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from neurodelay import options as O
from neurodelay.errors import OptionError
from neurodelay.train.dcls_conv import delay_conv
from neurodelay.train.intdelay import integer_delay_conv
from neurodelay.train.lif import lif_multistep
from neurodelay.train.recurrent import RecurrentSynapses

SIG_MIN = 0.23  # dcls adds 0.27 internally: effective minimum sigma 0.5 (the paper's)
DCLS_SIG_OFFSET = 0.27


@dataclass
class ModelConfig:
    """Every architectural setting of a DelaySNN (saved with each run)."""

    n_inputs: int = 140
    n_outputs: int = 20
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    max_delay_steps: int = 25          # Td: window size in steps (delays 0..Td-1)
    tau: float = 1.005                 # membrane time constant in steps (10.05 ms / 10 ms)
    threshold: float = 1.0
    dropout: float = 0.4
    surrogate_alpha: float = 5.0
    delays: str = "learned"            # learned | fixed-random | none
    connections: int | None = None     # K synapses per neuron (fixed random mask) or dense
    sigma_init: float | None = None    # dcls SIG at epoch 0 (default Td/2, the paper's)
    # recurrent synapses within every hidden layer (neurodelay.train.recurrent)
    recurrent: bool = False
    recurrent_delays: str = "learned"  # learned | fixed-random | one-step
    recurrent_max_delay_steps: int | None = None   # recurrent window (delays 1..N); None: Td

    def __post_init__(self):
        """Every field checked: OptionError (a ValueError) naming the field (and the CLI
        option it comes from), the value and the allowed range. Times are in steps here;
        ``api.make_configs`` checks the millisecond options first."""

        O.check_choice(self.delays, "--delays", ("learned", "fixed-random", "none"))
        self.n_inputs = O.check_int(self.n_inputs, "n_inputs",
                                    "the number of input channels (700 / --channel-bin)", lo=1)
        self.n_outputs = O.check_int(self.n_outputs, "n_outputs",
                                     "the number of classes (outputs)", lo=1)
        self.hidden = O.check_int_list(self.hidden, "--hidden",
                                       "every hidden layer size", lo=1,
                                       hint="Give sizes like --hidden 64,64")
        self.max_delay_steps = O.check_int(
            self.max_delay_steps, "max_delay_steps",
            "the delay window in steps (--max-delay / --dt)", lo=1)
        self.tau = O.check_float(self.tau, "tau", "the membrane time constant in steps "
                                 "(--tau / --dt)", lo=1.0, lo_open=True,
                                 hint="A LIF neuron needs tau longer than one time step")
        self.threshold = O.check_float(self.threshold, "--threshold",
                                       "the LIF firing threshold", lo=0.0, lo_open=True)
        self.dropout = O.check_float(self.dropout, "--dropout", "the dropout probability",
                                     lo=0.0, hi=1.0, hi_open=True)
        self.surrogate_alpha = O.check_float(self.surrogate_alpha, "surrogate_alpha",
                                             "the surrogate gradient sharpness", lo=0.0,
                                             lo_open=True)
        if self.connections is not None:
            self.connections = O.check_int(self.connections, "--connections",
                                           "the synapses per neuron of a sparse model", lo=1,
                                           hint="Omit it for a fully connected model")
        if self.sigma_init is not None:
            self.sigma_init = O.check_float(self.sigma_init, "sigma_init",
                                            "the initial Gaussian width (dcls SIG)", lo=0.0,
                                            lo_open=True)
        self.recurrent = bool(self.recurrent)
        O.check_choice(self.recurrent_delays, "--recurrent-delays",
                       ("learned", "fixed-random", "one-step"))
        if self.recurrent_max_delay_steps is not None:
            self.recurrent_max_delay_steps = O.check_int(
                self.recurrent_max_delay_steps, "recurrent_max_delay_steps",
                "the recurrent delay window in steps (--recurrent-max-delay / --dt)", lo=1)

    @property
    def window(self) -> int:
        """Kernel window in steps actually used (1 when the model has no delays)."""
        return 1 if self.delays == "none" else int(self.max_delay_steps)

    @property
    def rec_window(self) -> int:
        """Recurrent delay window in steps (delays 1..rec_window; 1 for one-step)."""
        if self.recurrent_delays == "one-step":
            return 1
        return int(self.recurrent_max_delay_steps or self.max_delay_steps)

    @property
    def rec_learned(self) -> bool:
        """Whether the model has recurrent synapses with learned delays."""
        return self.recurrent and self.recurrent_delays == "learned"

    @property
    def sigma0(self) -> float:
        if self.sigma_init is not None:
            return float(self.sigma_init)
        if self.delays != "learned" and self.rec_learned:
            return self.rec_window / 2.0
        return self.window / 2.0

    def to_dict(self) -> dict:
        return asdict(self)


class DelaySynapses(nn.Module):
    """All synapses of one projection: weight + Gaussian delay kernel per synapse (dcls).

    ``discrete_dtype``: the dtype the discrete (evaluation) model's synaptic sums are
    computed in (or the input's, if wider) before the cast back to the input's dtype.
    Precision policy (measurements in neurodelay.train.intdelay):

    * float32, the class default, is the FAST path: what training with fixed delays runs
      and what ``trainer.predict`` (per-epoch validation, ``neurodelay eval``) evaluates.
      Its rounding is that of a float32 ordered sum (native kernels; a few times that on
      the frequency-domain fallback), ~1e-6 of the largest input to a membrane, so a
      membrane within that of the threshold may spike differently; predictions are
      unchanged on the models tests/test_model.py checks (a trained tiny model, SSHD).
    * float64 is the EXACT path (sums exact to ~1e-15, cast to float32: never further from
      the true sum than a float32 direct sum). ``neurodelay verify`` evaluates its PyTorch
      reference this way (``DelaySNN.set_discrete_dtype(torch.float64)``), so the hidden
      spike flips it counts against floatsim measure floatsim's own float32 rounding.
    """

    discrete_dtype: torch.dtype = torch.float32

    def __init__(self, n_in: int, n_out: int, window: int, mode: str,
                 mask: torch.Tensor | None = None):
        super().__init__()

        self.n_in, self.n_out, self.window, self.mode = n_in, n_out, window, mode
        self.conv = Dcls1d(n_in, n_out, kernel_count=1, dilated_kernel_size=window,
                           bias=False, version="gauss")
        # paper: kaiming-uniform weights (relu gain)
        nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
        lo, hi = self.position_bounds
        with torch.no_grad():
            if mode == "none":
                self.conv.P.fill_(float(hi))  # delay 0 (window 1)
            else:  # positions uniform over the whole window
                self.conv.P.uniform_(lo, hi)
                if mode == "fixed-random":
                    self.conv.P.round_()
            self.conv.SIG.fill_(SIG_MIN)
        self.conv.SIG.requires_grad_(False)
        if mode != "learned":
            self.conv.P.requires_grad_(False)
        if mask is not None:
            self.register_buffer("mask", mask.to(torch.float32).reshape(n_out, n_in, 1))
            self.apply_mask()
        else:
            self.mask = None

    @property
    def position_bounds(self) -> tuple[float, float]:
        h = self.window // 2
        return -float(h), float(self.window - 1 - h)

    def set_sigma(self, sig: float) -> None:
        with torch.no_grad():
            self.conv.SIG.fill_(float(sig))

    @property
    def sigma(self) -> float:
        return float(self.conv.SIG.detach().reshape(-1)[0]) + DCLS_SIG_OFFSET

    def clamp_positions(self) -> None:
        lo, hi = self.position_bounds
        with torch.no_grad():
            self.conv.P.clamp_(lo, hi)

    def apply_mask(self) -> None:
        if self.mask is not None:
            with torch.no_grad():
                self.conv.weight.mul_(self.mask)

    def integer_delays(self) -> torch.Tensor:
        """(n_out, n_in) int64 delays of the discrete model (positions rounded)."""
        centre = torch.round(self.conv.P.detach().reshape(self.n_out, self.n_in)) + self.window // 2
        return (self.window - 1 - centre).to(torch.int64)

    def weight_matrix(self) -> torch.Tensor:
        w = self.conv.weight.detach().reshape(self.n_out, self.n_in)
        if self.mask is not None:
            w = w * self.mask.reshape(self.n_out, self.n_in)
        return w

    def discrete_kernel(self) -> torch.Tensor:
        """(n_out, n_in, window) kernel with exactly one tap per synapse (Eq. 7)."""
        tap = (self.window - 1 - self.integer_delays()).unsqueeze(-1)
        k = torch.zeros(self.n_out, self.n_in, self.window, dtype=self.conv.weight.dtype,
                        device=self.conv.weight.device)
        w = self.conv.weight.reshape(self.n_out, self.n_in, 1)
        if self.mask is not None:
            w = w * self.mask
        return k.scatter(2, tap, w)

    def forward(self, x: torch.Tensor, discrete: bool = False,
                reference: bool = False) -> torch.Tensor:
        """x (B, n_in, T) -> (B, n_out, T), causal.

        Learned delays train through :func:`neurodelay.train.dcls_conv.delay_conv`: the same
        Gaussian kernel as dcls' Dcls1d (version 'gauss') and the same linear convolution,
        computed in the frequency domain with hand-written backward passes
        (benchmarks/bench.py checks loss and gradients against the dcls formulation).
        One integer delay per synapse (the discrete model, fixed-random and no delays)
        goes through :func:`neurodelay.train.intdelay.integer_delay_conv`; the discrete
        model computes in ``discrete_dtype`` (float32, the fast path; float64, the exact
        one, for ``verify``) and casts back to x's dtype.
        ``reference=True`` runs the paper's formulation: dcls itself, and F.conv1d over the
        whole window with the one-tap kernel for the discrete / fixed-delay model.
        """
        if reference:
            if discrete or self.mode != "learned":
                return F.conv1d(F.pad(x, (self.window - 1, 0)), self.discrete_kernel())
            return self.conv(F.pad(x, (self.window - 1, 0)))
        if discrete or self.mode != "learned":
            w = self.conv.weight.reshape(self.n_out, self.n_in)
            if self.mask is not None:
                w = w * self.mask.reshape(self.n_out, self.n_in)
            d = self.integer_delays()
            dt = torch.promote_types(self.discrete_dtype, x.dtype) if discrete else x.dtype
            if dt != x.dtype:
                return integer_delay_conv(x.to(dt), w.to(dt), d).to(x.dtype)
            return integer_delay_conv(x, w.to(dt), d)
        return delay_conv(x, self.conv.weight, self.conv.P, self.conv.SIG, self.window)


def _lif(tau: float, threshold: float, alpha: float):
    return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=threshold, v_reset=0.0,
                          surrogate_function=surrogate.ATan(alpha=alpha), detach_reset=True,
                          step_mode="m", store_v_seq=True)


class DelaySNN(nn.Module):
    """Feedforward delay SNN (see module docstring). Input (B, T, n_inputs) counts."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()

        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed + 7919)  # masks: fixed per seed
        sizes = [cfg.n_inputs, *cfg.hidden]
        self.synapses = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.neurons = nn.ModuleList()
        self.drops = nn.ModuleList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            self.synapses.append(DelaySynapses(n_in, n_out, cfg.window, cfg.delays,
                                               self._mask(n_out, n_in, gen)))
            self.norms.append(nn.BatchNorm1d(n_out))
            self.neurons.append(_lif(cfg.tau, cfg.threshold, cfg.surrogate_alpha))
            self.drops.append(layer.Dropout(cfg.dropout, step_mode="m"))
        self.readout_synapses = DelaySynapses(sizes[-1], cfg.n_outputs, cfg.window, cfg.delays,
                                              self._mask(cfg.n_outputs, sizes[-1], gen))
        self.readout = _lif(cfg.tau, 1e9, cfg.surrogate_alpha)
        # recurrent synapses: their own generator (seed-determined), so the feed-forward
        # part starts from the same network as the same seed's feed-forward model
        self.recurrent = None
        if cfg.recurrent:
            rgen = torch.Generator().manual_seed(seed + 104729)
            self.recurrent = nn.ModuleList(
                RecurrentSynapses(n, cfg.rec_window, cfg.recurrent_delays, rgen)
                for n in cfg.hidden)

    def _mask(self, n_out: int, n_in: int, gen: torch.Generator) -> torch.Tensor | None:
        k = self.cfg.connections
        if k is None or k >= n_in:
            return None
        scores = torch.rand(n_out, n_in, generator=gen)
        idx = scores.argsort(dim=1)[:, :k]
        return torch.zeros(n_out, n_in).scatter_(1, idx, 1.0)

    # --- parameter groups -------------------------------------------------------
    def all_synapses(self) -> list[DelaySynapses]:
        return [*self.synapses, self.readout_synapses]

    def recurrent_synapses(self) -> list[RecurrentSynapses]:
        """The hidden layers' recurrent synapses (empty for a feed-forward model)."""
        return list(self.recurrent) if self.recurrent is not None else []

    def weight_params(self) -> list[nn.Parameter]:
        return ([s.conv.weight for s in self.all_synapses()]
                + [r.weight for r in self.recurrent_synapses()])

    def position_params(self) -> list[nn.Parameter]:
        return ([s.conv.P for s in self.all_synapses()]
                + [r.P for r in self.recurrent_synapses()])

    def bn_params(self) -> list[nn.Parameter]:
        return [p for n in self.norms for p in n.parameters()]

    def set_sigma(self, sig: float) -> None:
        for s in [*self.all_synapses(), *self.recurrent_synapses()]:
            if s.mode == "learned":
                s.set_sigma(sig)

    def set_discrete_dtype(self, dtype: torch.dtype) -> "DelaySNN":
        """Set ``discrete_dtype`` on every synapse: torch.float32 (the fast path, the
        default) or torch.float64 (the exact path ``verify`` uses); returns the model."""
        if dtype not in (torch.float32, torch.float64):
            raise OptionError(f"discrete dtype must be torch.float32 or torch.float64, "
                             f"got {dtype}")
        for s in [*self.all_synapses(), *self.recurrent_synapses()]:
            s.discrete_dtype = dtype
        return self

    def after_step(self) -> None:
        """Clamp positions to the window and re-apply masks (after every optimizer step)."""
        for s in self.all_synapses():
            s.clamp_positions()
            s.apply_mask()
        for r in self.recurrent_synapses():
            r.clamp_positions()

    def count_parameters(self) -> dict:
        """Trainable synaptic parameters as the paper counts them (masked weights only)."""
        n_w = sum(int(s.mask.sum()) if s.mask is not None else s.n_in * s.n_out
                  for s in self.all_synapses())
        n_p = n_w if self.cfg.delays == "learned" else 0
        n_r = sum(r.weight.numel() for r in self.recurrent_synapses())
        n_rp = n_r if self.cfg.rec_learned else 0
        n_bn = sum(p.numel() for p in self.bn_params())
        out = {"weights": n_w + n_r, "delays": n_p + n_rp, "batchnorm": n_bn,
               "total": n_w + n_p + n_r + n_rp + n_bn}
        if self.cfg.recurrent:
            out["recurrent_weights"], out["recurrent_delays"] = n_r, n_rp
        return out

    # --- forward ---------------------------------------------------------------
    def _reset_state(self) -> None:
        functional.reset_net(self)

    def _exact_recurrent_layer(self, h, syn, bn, rec, lif) -> torch.Tensor:
        """A recurrent hidden layer of the discrete model on the exact path
        (``set_discrete_dtype(torch.float64)``, eval mode) computed wholly in float64: the
        feed-forward sums, BatchNorm (its running statistics), the recurrent sums and the
        LIF recursion. A recurrent layer feeds a rounding-level spike flip back into
        itself (one flip becomes many), so its reference keeps float32 rounding out of
        the membrane too; spikes (T, B, C) float64."""
        f64 = torch.float64
        cur = syn(h.to(f64), discrete=True).permute(2, 0, 1)       # float64 sums
        t, b, c = cur.shape
        cur = F.batch_norm(cur.reshape(t * b, c), bn.running_mean.to(f64),
                           bn.running_var.to(f64), bn.weight.to(f64), bn.bias.to(f64),
                           False, 0.0, bn.eps).reshape(t, b, c)
        return rec(cur, lif.tau, lif.v_threshold, self.cfg.surrogate_alpha, discrete=True)

    def forward(self, x: torch.Tensor, discrete: bool | None = None,
                record: bool = False, reference: bool = False):
        """x (B, T, n_in) -> readout membrane (B, T, n_outputs) [, hidden spikes list].

        ``discrete`` defaults to ``not self.training``: evaluation always uses the
        discrete (integer-delay, one tap per synapse) model. ``reference=True`` uses dcls
        and spikingjelly's LIFNode directly (the paper's formulation) instead of the
        equivalent fast kernels of :mod:`neurodelay.train.dcls_conv` and :mod:`neurodelay.train.lif`.
        """
        if discrete is None:
            discrete = not self.training
        self._reset_state()
        b, t, _ = x.shape
        h = x.transpose(1, 2)  # (B, C, T)
        spikes = []
        recs = self.recurrent_synapses() or [None] * len(self.synapses)
        for syn, bn, lif, drop, rec in zip(self.synapses, self.norms, self.neurons,
                                           self.drops, recs):
            if rec is not None and discrete and not self.training \
                    and rec.discrete_dtype == torch.float64:
                s = self._exact_recurrent_layer(h, syn, bn, rec, lif).to(x.dtype)
            elif rec is not None:  # no BatchNorm on the recurrent current
                cur = syn(h, discrete=discrete, reference=reference).permute(2, 0, 1)
                c = cur.shape[-1]
                cur = bn(cur.reshape(t * b, c)).reshape(t, b, c)
                s = rec(cur, lif.tau, lif.v_threshold, self.cfg.surrogate_alpha,
                        discrete=discrete)
            else:
                cur = syn(h, discrete=discrete, reference=reference)  # (B, C, T)
                cur = cur.permute(2, 0, 1)                            # (T, B, C)
                c = cur.shape[-1]
                cur = bn(cur.reshape(t * b, c)).reshape(t, b, c)
                s = lif(cur) if reference else lif_multistep(     # (T, B, C)
                    cur, lif.tau, lif.v_threshold, self.cfg.surrogate_alpha)
            if record:
                spikes.append(s.detach().permute(1, 0, 2))
            s = drop(s)
            h = s.permute(1, 2, 0)                                # (B, C, T)
        cur = self.readout_synapses(h, discrete=discrete, reference=reference).permute(2, 0, 1)
        if reference:
            self.readout(cur)
            v = self.readout.v_seq
        else:
            _, v = lif_multistep(cur, self.readout.tau, self.readout.v_threshold,
                                 self.cfg.surrogate_alpha, return_v=True)
        u = v.permute(1, 0, 2)                                    # (B, T, n_out)
        return (u, spikes) if record else u


def scores_from_membrane(u: torch.Tensor) -> torch.Tensor:
    """Paper's output rule: y = sum_t softmax(u[t]) -> (B, n_out)."""
    return F.softmax(u, dim=-1).sum(dim=1)


def loss_fn(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the summed softmax scores (as the reference does)."""
    return F.cross_entropy(scores_from_membrane(u), y)


def sigma_schedule(epoch: int, epochs: int, sigma0: float, kind: str = "decreasing") -> float:
    """dcls SIG value for ``epoch`` (0-based).

    decreasing: exponential decay from sigma0 to SIG_MIN over the first quarter of the
    epochs (alpha = (SIG_MIN/sigma0)^(1/(epochs//4))), then SIG_MIN.
    constant: SIG_MIN throughout (narrow kernels from the start).
    Effective Gaussian std = SIG + 0.27 (dcls' internal offset).
    """
    if kind == "constant":
        return SIG_MIN
    if kind != "decreasing":
        raise OptionError(f"--sigma {kind!r}: the sigma schedule must be decreasing or "
                          f"constant")
    final = max(1, epochs // 4)
    if sigma0 <= SIG_MIN or epoch >= final:
        return SIG_MIN
    alpha = (SIG_MIN / sigma0) ** (1.0 / final)
    return max(SIG_MIN, sigma0 * alpha ** epoch)


def count_parameters(cfg: ModelConfig) -> int:
    """Total trainable parameters of a model built from ``cfg`` (without building it):
    feed-forward weights (+ delays when learned), recurrent weights (+ delays when
    learned) and BatchNorm."""
    sizes = [cfg.n_inputs, *cfg.hidden, cfg.n_outputs]
    n_w = sum((min(cfg.connections, a) if cfg.connections else a) * b
              for a, b in zip(sizes[:-1], sizes[1:]))
    n_p = n_w if cfg.delays == "learned" else 0
    n_r = sum(h * h for h in cfg.hidden) if cfg.recurrent else 0
    n_rp = n_r if cfg.rec_learned else 0
    return n_w + n_p + n_r + n_rp + 2 * sum(cfg.hidden)


def widen_for_parameter_parity(cfg: ModelConfig, reference: ModelConfig) -> list[int]:
    """Smallest uniform widening of ``cfg``'s hidden layers reaching ``reference``'s count."""
    target = count_parameters(reference)
    scale = 1.0
    while True:
        hidden = [max(1, int(math.ceil(h * scale))) for h in reference.hidden]
        if count_parameters(ModelConfig(**{**cfg.to_dict(), "hidden": hidden})) >= target:
            return hidden
        scale *= 1.01


def narrow_for_parameter_parity(cfg: ModelConfig, reference: ModelConfig) -> list[int]:
    """The uniform narrowing of ``reference``'s hidden layers whose count with ``cfg``'s
    other settings (e.g. recurrent synapses) is closest to ``reference``'s count (never
    wider than ``reference``)."""
    target = count_parameters(reference)

    def count(hidden):
        return count_parameters(ModelConfig(**{**cfg.to_dict(), "hidden": hidden}))

    best = list(reference.hidden)
    if count(best) <= target:
        return best
    scale = 1.0
    while True:
        scale *= 0.995
        hidden = [max(1, int(math.floor(h * scale))) for h in reference.hidden]
        if count(hidden) <= target or max(hidden) == 1:
            return min((best, hidden), key=lambda h: abs(count(h) - target))
        best = hidden
