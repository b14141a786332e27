"""Compiled direct kernels of the integer-delay operator (``intdelay_kernels.c``).

    y[b, o, t] = sum_i w[o, i] * x[b, i, t - d[o, i]]        (x = 0 before t = 0)

Summed directly, one multiply-add per synapse and step (the flops of one dense layer
without delays), with the delayed windows read from zero-padded rows that stay in cache.
Forward, input gradient and weight gradient, float32 and float64. Why C: the sum is a
gather (every synapse reads its own delayed window), which no torch op computes without
materialising the window (conv1d: window x the flops) or going through the frequency
domain (:mod:`neurodelay.train.intdelay`'s FFT path, ~3x the flops plus the transforms).

Build (:mod:`neurodelay.cbuild`, shared with the other C files of the package): on first
use the C file is compiled with the system C compiler (``$CC``, else
``cc``/``gcc``/``clang``; ``-O3 -march=native``, falling back to plain ``-O3``) into
``<cache>/native/`` (``$NEURODELAY_CACHE``, else ``~/.cache/neurodelay``), named by a
hash of the source, compiler, flags and CPU, written atomically; later processes load it
(~1 s to build, nothing after). It is plain C (no Python or torch headers) loaded with
ctypes, which releases the GIL during a call: the batch (the output channels, for the
weight gradient) is split over ``torch.get_num_threads()`` threads.

Exactness and determinism: each output is summed over its inputs in ascending order by
one thread with fused multiply-adds (``fma``, one rounding each; built with
``-ffp-contract=off``), so results do not depend on the thread count, the vector width
or the machine. float32: the rounding of a plain ordered sum (like conv1d's); float64:
exact for integer-valued inputs and weights whose sums stay below 2**53.

The same library holds the multi-tap kernels of the learned-delay convolution
(``multitap_*``, used by :func:`neurodelay.train.dcls_conv.delay_conv`'s direct path):
the nonzero inputs as lists (:func:`spikes`), each synapse's used taps
(:func:`multitap_plan`, :func:`multitap_taps`), the forward over the nonzero inputs
(:func:`multitap_forward`, split over the batch) and the kernel gradient
(:func:`multitap_kernel_grad`, split over the output channels); same rules: fma, fixed
sum orders, thread-count-independent results.

Where there is no C compiler, or ``NEURODELAY_NATIVE=0`` is set, :func:`status` says
why and :func:`neurodelay.train.intdelay.integer_delay_conv` uses its frequency-domain
path instead (same results to float rounding, slower); nothing else changes.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from neurodelay import cbuild
from neurodelay.cbuild import COMMON_FLAGS, ENV_SWITCH, NativeStatus  # noqa: F401 (API)
from neurodelay.errors import KernelError

SOURCE = Path(__file__).with_name("intdelay_kernels.c")
ABI_VERSION = 3
FLAG_SETS = cbuild.FLAG_SETS               # tried in order (a test swaps in a plainer set)
TILE_WIDTHS = tuple(range(16, 129, 16))   # the tile widths the C kernels are built for

_LOCK = threading.Lock()
_STATE: dict = {}


def _declare(lib) -> None:
    P, I64, I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for sfx in ("f32", "f64"):
        cbuild.bind(lib, f"nd_gather_{sfx}", I32,
                    P, I64, I64, I64, I64, I64, P, P, I64, P, I64, I64, I64, I32, I64, I64)
        cbuild.bind(lib, f"nd_wgrad_{sfx}", I32,
                    P, I64, I64, I64, P, I64, I64, I64, I64, P, I64, P, I64, I64, I64, I32,
                    I64, I64)
        cbuild.bind(lib, f"nd_spikes_{sfx}", I32,
                    P, I64, I64, I64, I64, I64, P, P, P, I64, I64)
        cbuild.bind(lib, f"nd_mt_fwd_{sfx}", I32,
                    P, P, P, I64, I64, P, P, I64, I32, I64, P, I64, I64, I64)
        cbuild.bind(lib, f"nd_mt_kgrad_{sfx}", I32,
                    P, I64, I64, I64, P, P, P, I64, I64, P, I64, I32, I64, I64, P, I64,
                    I64, I64)
        cbuild.bind(lib, f"nd_mt_plan_{sfx}", I32, P, I64, ctypes.c_double, P, P, I64, I64)
        cbuild.bind(lib, f"nd_count_nonzero_{sfx}", I64, P, I64, I64, I64, I64, I64, I64)
        cbuild.bind(lib, f"nd_mt_taps_{sfx}", I32,
                    P, I64, I64, I64, P, P, I32, P, P, I64, I64)
    cbuild.bind(lib, "nd_mt_plan_stats", I32, P, P, I64, P)


def _build(source_file: Path = SOURCE, stem: str = "intdelay", abi: int = ABI_VERSION,
           declare=_declare) -> tuple[NativeStatus, object]:
    return cbuild.build(source_file, stem, abi, declare, FLAG_SETS)


def status() -> NativeStatus:
    """Build (once per process) or load the kernels; what is in use and why."""
    with _LOCK:
        if "status" not in _STATE:
            _STATE["status"], _STATE["lib"] = _build()
        return _STATE["status"]


def available() -> bool:
    """True when the compiled kernels are in use (see :func:`status`)."""
    return status().available


def _lib():
    st = status()
    if not st.available:
        raise KernelError(f"native kernels unavailable: {st.reason}; use method='fft'")
    return _STATE["lib"]


def tile_width(T: int) -> int:
    """The tile width for T steps: the smallest multiple of 16 covering T up to 128;
    beyond, the width in TILE_WIDTHS >= 64 that pads T least (the widest on ties)."""
    if T <= TILE_WIDTHS[-1]:
        return -(-T // 16) * 16
    return min((w for w in TILE_WIDTHS if w >= 64), key=lambda w: (-(-T // w) * w, -w))


def _run(fn, n_items: int, args_of) -> None:
    """Call fn(*args_of(lo, hi)) over [0, n_items) split into one range per torch thread."""
    cbuild.split_run(fn, n_items, args_of, torch.get_num_threads(),
                     what="native integer-delay kernel")


def _sfx(t: torch.Tensor) -> str:
    return {torch.float32: "f32", torch.float64: "f64"}[t.dtype]


def _span(delay: torch.Tensor, T: int) -> int:
    d = delay[delay < T]
    return int(d.max()) if d.numel() else 0


# ----------------------------------------------------------------------- multi-tap kernels
MULTITAP_WIDTHS = (8, 16, 32)  # taps per synapse the multi-tap kernels are built for


@dataclass(frozen=True)
class Spikes:
    """The nonzero values of an input x (B, n_in, T), per (b, i) in ascending steps:
    ``tim`` / ``val`` (B * n_in * T,) hold them at (b * n_in + i) * T + k, k < cnt[b, i]."""

    tim: torch.Tensor
    val: torch.Tensor
    cnt: torch.Tensor
    shape: tuple

    @property
    def nnz(self) -> int:
        return int(self.cnt.sum())


def spikes(x: torch.Tensor) -> Spikes:
    """The nonzero inputs of x (B, n_in, T) (any strides), as lists (:class:`Spikes`)."""
    lib = _lib()
    _check_cpu(x)
    B, n_in, T = x.shape
    tim = torch.empty(B * n_in * T, dtype=torch.int32)
    val = torch.empty(B * n_in * T, dtype=x.dtype)
    cnt = torch.empty(B, n_in, dtype=torch.int32)
    sb, si, st = x.stride()
    fn = getattr(lib, f"nd_spikes_{_sfx(x)}")
    _run(fn, B, lambda lo, hi: (x.data_ptr(), sb, si, st, n_in, T, tim.data_ptr(),
                                val.data_ptr(), cnt.data_ptr(), lo, hi))
    return Spikes(tim, val, cnt, (B, n_in, T))


def _mt_row_len(T: int, max_base: int, width: int) -> int:
    return -(-(T + max_base + width) // 16) * 16


def _check_cpu(t: torch.Tensor) -> None:
    if t.device.type != "cpu":
        raise KernelError(f"native kernels: tensors must be on the CPU, got {t.device}")


def _check_width(width: int) -> None:
    if width not in MULTITAP_WIDTHS:
        raise KernelError(f"multi-tap kernels: width must be one of {MULTITAP_WIDTHS}, "
                          f"got {width}")


def multitap_forward(sp: Spikes, kr: torch.Tensor, base: torch.Tensor,
                     max_base: int) -> torch.Tensor:
    """y (T, B, n_out) contiguous: y[t, b, o] = sum_i sum_m kr[i, o, m] *
    x[b, i, t - base[i, o] - m], x given by its nonzero values ``sp``; kr (n_in, n_out, W)
    contiguous of x's dtype, base (n_in, n_out) int32 (-1: a synapse without taps),
    ``max_base`` >= every base."""
    lib = _lib()
    B, n_in, T = sp.shape
    n_out, width = kr.shape[1], kr.shape[2]
    _check_width(width)
    y = torch.empty(T, B, n_out, dtype=kr.dtype)
    L = _mt_row_len(T, max_base, width)
    fn = getattr(lib, f"nd_mt_fwd_{_sfx(kr)}")
    _run(fn, B, lambda lo, hi: (sp.tim.data_ptr(), sp.val.data_ptr(), sp.cnt.data_ptr(),
                                n_in, T, kr.data_ptr(), base.data_ptr(), n_out, width, L,
                                y.data_ptr(), B, lo, hi))
    return y


def multitap_kernel_grad(gy: torch.Tensor, sp: Spikes, base: torch.Tensor, width: int,
                         max_base: int, window: int) -> torch.Tensor:
    """dL/dkernel (n_out, n_in, window) at the taps of delays d = base[o, i] + m (m < W,
    d < window; tap window - 1 - d): sum over b, s of x[b, i, s] * gy[b, o, s + d]; 0 at
    the other taps. gy (B, n_out, T), any strides; x given by ``sp``; base (n_out, n_in)
    int32."""
    lib = _lib()
    _check_cpu(gy)
    _check_width(width)
    B, n_in, T = sp.shape
    n_out = gy.shape[1]
    g = torch.empty(n_out, n_in, window, dtype=gy.dtype)
    L = _mt_row_len(T, max_base, width)
    gsb, gso, gst = gy.stride()
    fn = getattr(lib, f"nd_mt_kgrad_{_sfx(gy)}")
    _run(fn, n_out, lambda lo, hi: (gy.data_ptr(), gsb, gso, gst, sp.tim.data_ptr(),
                                    sp.val.data_ptr(), sp.cnt.data_ptr(), n_in, T,
                                    base.data_ptr(), n_out, width, window, L, g.data_ptr(),
                                    B, lo, hi))
    return g


def count_nonzero(x: torch.Tensor) -> int:
    """The number of nonzero values of x (B, n_in, T), any strides, as a Python int.
    (Counted here, not with torch.count_nonzero + int(): on the CPU the same number, and
    the training loop's code stays free of tensor-to-Python conversions, which are host
    syncs on a GPU and counted by tests/test_device.py.)"""
    lib = _lib()
    _check_cpu(x)
    sb, si, st = x.stride()
    return int(getattr(lib, f"nd_count_nonzero_{_sfx(x)}")(x.data_ptr(), sb, si, st,
                                                          *x.shape))


def multitap_plan(gauss: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor,
                                                              tuple[int, int, int]]:
    """(base, span, (max span, max base, sum of spans)): base and span (n_out, n_in)
    int32 of the Gaussians ``gauss`` (n_out, n_in, window): the smallest delay whose tap
    is used (> 0 and >= floor; -1: none) and the number of taps from the first to the
    last used one."""
    lib = _lib()
    _check_cpu(gauss)
    g = gauss.contiguous()
    n_out, n_in, window = g.shape
    base = torch.empty(n_out, n_in, dtype=torch.int32)
    span = torch.empty(n_out, n_in, dtype=torch.int32)
    fn = getattr(lib, f"nd_mt_plan_{_sfx(g)}")
    _run(fn, n_out * n_in, lambda lo, hi: (g.data_ptr(), window, float(floor),
                                           base.data_ptr(), span.data_ptr(), lo, hi))
    stats = (ctypes.c_int64 * 3)()
    lib.nd_mt_plan_stats(base.data_ptr(), span.data_ptr(), n_out * n_in, stats)
    return base, span, (stats[0], stats[1], stats[2])


def multitap_taps(kernel: torch.Tensor, base: torch.Tensor, span: torch.Tensor,
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kr (n_in, n_out, W), base (n_in, n_out)): the forward's layout of ``kernel``
    (n_out, n_in, window): kr[i, o, m] = kernel[o, i, window - 1 - base[o, i] - m] for
    m < span[o, i], else 0."""
    lib = _lib()
    _check_cpu(kernel)
    _check_width(width)
    k = kernel.detach().contiguous()
    n_out, n_in, window = k.shape
    kr = torch.empty(n_in, n_out, width, dtype=k.dtype)
    base_io = torch.empty(n_in, n_out, dtype=torch.int32)
    fn = getattr(lib, f"nd_mt_taps_{_sfx(k)}")
    _run(fn, n_in, lambda lo, hi: (k.data_ptr(), n_out, n_in, window, base.data_ptr(),
                                   span.data_ptr(), width, kr.data_ptr(),
                                   base_io.data_ptr(), lo, hi))
    return kr, base_io


def gather(src: torch.Tensor, weight: torch.Tensor, off: torch.Tensor, shift: int,
           span: int) -> torch.Tensor:
    """(T, B, n_dst) contiguous: y[t, b, o] = sum_c weight[o, c] * row_c[off[o, c] + t],
    row_c = src[b, c, :] placed at ``shift`` in a zero row of tile_width-padded length."""
    lib = _lib()
    if src.device.type != "cpu":
        raise KernelError(f"native integer-delay kernel: tensors must be on the CPU, "
                         f"got {src.device}")
    B, C, T = src.shape
    n_dst = weight.shape[0]
    w = weight.contiguous()
    y = torch.empty(T, B, n_dst, dtype=src.dtype)
    sb, sc, st = src.stride()
    fn = getattr(lib, f"nd_gather_{_sfx(src)}")
    tc = tile_width(T)
    _run(fn, B, lambda lo, hi: (src.data_ptr(), sb, sc, st, C, shift, w.data_ptr(),
                                off.data_ptr(), n_dst, y.data_ptr(), B, T, span, tc, lo, hi))
    return y


def _row_len(T: int, span: int) -> int:
    """Length of a zero-padded row: T rounded up to whole tiles, plus the span."""
    tc = tile_width(T)
    return tc * -(-T // tc) + span


def _offsets(valid: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """int32 read offsets into the rows, -1 where a pair contributes nothing."""
    if start.numel() and int(start.max()) >= 2**31:

        raise KernelError(f"native integer-delay kernel: {int(start.max())} padded values "
                            f"per batch item exceed its 32-bit offsets; use method='fft', "
                            f"or fewer channels or steps")
    return torch.where(valid, start, -1).to(torch.int32).contiguous()


def forward(x: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor,
            span: int | None = None) -> torch.Tensor:
    """y (T, B, n_out) contiguous for x (B, n_in, T), weight (n_out, n_in) of x's dtype,
    delay (n_out, n_in) integers >= 0 (delays >= T contribute nothing; zero weights are
    skipped). ``span``: the largest delay < T if the caller knows it (else computed)."""
    T = x.shape[2]
    span = _span(delay, T) if span is None else span
    L = _row_len(T, span)
    d = delay.to(torch.int64)
    cols = torch.arange(d.shape[1], dtype=torch.int64).unsqueeze(0)
    off = _offsets((d < T) & (weight != 0), cols * L + span - d)
    return gather(x, weight, off, span, span)


def input_grad(gy: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor,
               span: int | None = None) -> torch.Tensor:
    """dL/dx (T, B, n_in) contiguous for dL/dy gy (B, n_out, T):
    gx[b, i, s] = sum_o weight[o, i] * gy[b, o, s + delay[o, i]]."""
    T = gy.shape[2]
    span = _span(delay, T) if span is None else span
    L = _row_len(T, span)
    d = delay.to(torch.int64).t()                                    # (n_in, n_out)
    rows = torch.arange(d.shape[1], dtype=torch.int64).unsqueeze(0)
    off = _offsets((d < T) & (weight.t() != 0), rows * L + d)
    return gather(gy, weight.t(), off, 0, span)


def weight_grad(gy: torch.Tensor, x: torch.Tensor, delay: torch.Tensor,
                span: int | None = None) -> torch.Tensor:
    """dL/dweight (n_out, n_in): sum over b, t of gy[b, o, t] * x[b, i, t - delay[o, i]]."""
    lib = _lib()
    B, n_in, T = x.shape
    n_out = gy.shape[1]
    span = _span(delay, T) if span is None else span
    tc = tile_width(T)
    L = _row_len(T, span)
    d = delay.to(torch.int64)
    cols = torch.arange(n_in, dtype=torch.int64).unsqueeze(0)
    off = _offsets(d < T, cols * L + span - d)
    g = torch.empty(n_out, n_in, dtype=x.dtype)
    fn = getattr(lib, f"nd_wgrad_{_sfx(x)}")
    gsb, gso, gst = gy.stride()
    xsb, xsi, xst = x.stride()
    _run(fn, n_out, lambda lo, hi: (gy.data_ptr(), gsb, gso, gst, x.data_ptr(), xsb, xsi, xst,
                                    n_in, off.data_ptr(), n_out, g.data_ptr(), B, T, span, tc,
                                    lo, hi))
    return g


def load_library(source: Path, stem: str, abi: int, declare) -> tuple[NativeStatus, object]:
    """Another plain C file of the package built and loaded as the integer-delay kernels
    are (:mod:`neurodelay.cbuild`: same compiler, flags, cache, ``NEURODELAY_NATIVE``
    switch; its ``nd_abi_version()`` must return ``abi``; ``declare(lib)`` sets the
    argument types), once per process: (status, library or None)."""
    key = f"extra:{stem}"
    with _LOCK:
        if key not in _STATE:
            _STATE[key] = cbuild.build(Path(source), stem, abi, declare, FLAG_SETS)
        return _STATE[key]


def split_run(fn, n_items: int, args_of) -> None:
    """Call the compiled fn(*args_of(lo, hi)) over [0, n_items) split into one range per
    torch thread, on the shared pool (return codes: 0 fine, -1 out of memory, others
    refused arguments)."""
    cbuild.split_run(fn, n_items, args_of, torch.get_num_threads())
