"""The compiled time loop of the recurrent LIF layer (neurodelay/train/recurrent_kernels.c)
against the torch loop it replaces on the CPU (recurrent.py's ``method='torch'``, kept as
the reference and the fallback): spikes, and the gradients w.r.t. the input current, the
kernel itself, the recurrent weights and positions, for learned, fixed-random and one-step
delays at a small and a large sigma, in float64 (rounding-level agreement) and float32;
bit-equal results for every thread count (so every lane-block size and batch split);
float64 staying on the torch loop under ``auto``; the fallback where the C file cannot be
built or NEURODELAY_NATIVE=0 (fresh subprocesses); clear errors.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from compiled_checks import require_compiled

from neurodelay.errors import KernelError
from neurodelay.train import native, recurrent
from neurodelay.train.recurrent import RecurrentSynapses, lane_block, recurrent_lif

TAU, TH, ALPHA = 2.0, 1.0, 5.0


@pytest.fixture(autouse=True)
def compiled_loop():
    require_compiled(recurrent.native_status(), "the compiled recurrent loop")
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def layer_run(mode, sig, dtype, method, n=20, T=30, B=5, window=7, seed=0, scale=0.5):
    """(spikes, dL/dcur, dL/dweight, dL/dP or None) of sum(gs * spikes) through a
    RecurrentSynapses layer run by ``method``."""
    g = torch.Generator().manual_seed(seed)
    rec = RecurrentSynapses(n, window, mode, torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        rec.weight.mul_(scale)
    rec.set_sigma(sig)
    rec.method = method
    cur = (torch.randn(T, B, n, generator=g, dtype=dtype) * 0.7 + 0.4).requires_grad_()
    gs = torch.randn(T, B, n, generator=g, dtype=dtype)
    s = rec(cur, TAU, TH, ALPHA)
    (s * gs).sum().backward()
    return (s.detach(), cur.grad, rec.weight.grad,
            None if rec.P.grad is None else rec.P.grad)


def kernel_run(kernel, cur, gs, method, taps=None):
    """(spikes, dL/dcur, dL/dkernel) of sum(gs * spikes) of recurrent_lif."""
    k = kernel.clone().requires_grad_()
    c = cur.clone().requires_grad_()
    s = recurrent_lif(c, k, TAU, TH, ALPHA, taps=taps, method=method)
    (s * gs).sum().backward()
    return s.detach(), c.grad, k.grad


def assert_close(a, b, rtol, what):
    scale = float(b.abs().max()) + 1e-30
    err = float((a - b).abs().max()) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("mode", ["learned", "fixed-random", "one-step"])
@pytest.mark.parametrize("sig", [0.23, 5.0], ids=["sigma-min", "sigma-large"])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)],
                         ids=["float64", "float32"])
def test_layer_matches_the_torch_loop(mode, sig, dtype, rtol):
    ref = layer_run(mode, sig, dtype, "torch")
    new = layer_run(mode, sig, dtype, "native")
    rate = float(ref[0].mean())
    assert 0.05 < rate < 0.6, f"the test's layer should fire sometimes (rate {rate})"
    assert torch.equal(new[0], ref[0]), "spikes differ"
    for what, a, b in zip(("dL/dcur", "dL/dweight", "dL/dP"), new[1:], ref[1:]):
        if mode == "learned" or what != "dL/dP":
            assert a is not None and b is not None, what
            assert float(b.abs().max()) > 0, f"{what} of the reference is zero"
            assert_close(a, b, rtol, what)
        else:
            assert a is None and b is None, f"{what}: positions are not trained in {mode}"


@pytest.mark.parametrize("taps", [None, (2, 6)], ids=["taps-found", "taps-given"])
def test_kernel_gradient_of_every_tap_matches(taps):
    """The gradient w.r.t. the kernel itself, zero taps included (n = 37: a partial tile
    of kernel-gradient columns; B = 37: a partial forward group and lane block)."""
    g = torch.Generator().manual_seed(3)
    n, T, B, w = 37, 25, 37, 9
    kernel = torch.randn(n, n, w, generator=g, dtype=torch.float64) * 0.3
    kernel[:, :, :2] = 0.0                                   # unused taps (delays 9, 8)
    if taps:
        kernel[:, :, 6:] = 0.0                               # taps (2, 6): 6.. are zero
    kernel[:5, 3, 4] = 0.0                                   # a row with zeros
    kernel[:, 7, 3] = 0.0                                    # an all-zero row (tap 3, j 7)
    cur = torch.randn(T, B, n, generator=g, dtype=torch.float64) * 0.6 + 0.35
    gs = torch.randn(T, B, n, generator=g, dtype=torch.float64)
    ref = kernel_run(kernel, cur, gs, "torch", taps)
    new = kernel_run(kernel, cur, gs, "native", taps)
    assert torch.equal(new[0], ref[0])
    assert 0.05 < float(ref[0].mean()) < 0.6
    assert_close(new[1], ref[1], 1e-12, "dL/dcur")
    assert_close(new[2], ref[2], 1e-12, "dL/dkernel")
    lo, hi = taps or (2, w)
    assert float(new[2][:, :, lo:hi].abs().max()) > 0
    assert float(new[2][:, :, :lo].abs().max()) == 0.0       # taps left out: no gradient


def test_no_grad_forward_matches():
    g = torch.Generator().manual_seed(4)
    kernel = torch.randn(16, 16, 5, generator=g) * 0.4
    cur = torch.randn(40, 6, 16, generator=g) * 0.6 + 0.3
    with torch.no_grad():
        a = recurrent_lif(cur, kernel, TAU, TH, ALPHA, method="torch")
        b = recurrent_lif(cur, kernel, TAU, TH, ALPHA, method="native")
        c = recurrent_lif(cur, kernel, TAU, TH, ALPHA)                   # auto: native
    assert torch.equal(a, b) and torch.equal(b, c)
    assert float(a.mean()) > 0.05


def test_the_thread_count_does_not_change_a_bit():
    """1, 2, 3 and 5 threads: lane blocks of 64, 32 and 16 batch items (one, two, three
    blocks) and different splits of the batch and of the kernel-gradient neurons."""
    g = torch.Generator().manual_seed(5)
    n, T, B, w = 40, 30, 37, 8
    kernel = torch.randn(n, n, w, generator=g) * 0.3
    cur = torch.randn(T, B, n, generator=g) * 0.6 + 0.35
    gs = torch.randn(T, B, n, generator=g)
    runs, blocks = [], []
    for threads in (1, 2, 3, 5):
        torch.set_num_threads(threads)
        blocks.append(lane_block(B, torch.get_num_threads()))
        runs.append(kernel_run(kernel, cur, gs, "native"))
    assert blocks == [64, 32, 16, 16]
    for r in runs[1:]:
        for a, b in zip(r, runs[0]):
            assert torch.equal(a, b)


def test_auto_keeps_float64_and_other_devices_on_the_torch_loop(monkeypatch):
    """The discrete model's exact path (float64 sums) stays on the torch loop; float32
    on the CPU takes the compiled one."""
    calls = []
    real = recurrent._native_forward

    def spy(*a, **k):
        calls.append(a[0].dtype)
        return real(*a, **k)

    monkeypatch.setattr(recurrent, "_native_forward", spy)
    k64 = torch.randn(8, 8, 3, dtype=torch.float64) * 0.3
    cur64 = torch.randn(10, 2, 8, dtype=torch.float64) + 0.5
    recurrent_lif(cur64, k64, TAU, TH, ALPHA)
    assert calls == []
    recurrent_lif(cur64.float(), k64.float(), TAU, TH, ALPHA)
    assert calls == [torch.float32]
    recurrent_lif(cur64.float(), k64, TAU, TH, ALPHA)        # mixed dtypes: torch's loop
    assert calls == [torch.float32]


def test_the_unavailable_compiled_loop_falls_back(monkeypatch):
    st = native.NativeStatus(False, "no C compiler found (test)")
    monkeypatch.setattr(recurrent, "native_status", lambda: st)
    g = torch.Generator().manual_seed(6)
    kernel = torch.randn(10, 10, 4, generator=g) * 0.3
    cur = torch.randn(20, 3, 10, generator=g) * 0.6 + 0.35
    gs = torch.randn(20, 3, 10, generator=g)
    auto = kernel_run(kernel, cur, gs, "auto")
    ref = kernel_run(kernel, cur, gs, "torch")
    for a, b in zip(auto, ref):
        assert torch.equal(a, b)
    with pytest.raises(KernelError, match="no C compiler found"):
        recurrent_lif(cur, kernel, TAU, TH, ALPHA, method="native")


def test_bad_methods_say_what_to_do():
    k = torch.randn(4, 4, 3) * 0.3
    cur = torch.randn(5, 2, 4)
    with pytest.raises(KernelError, match="method must be one of auto, native, torch"):
        recurrent_lif(cur, k, TAU, TH, ALPHA, method="fast")
    with pytest.raises(KernelError, match="both float32 or both float64.*method='torch'"):
        recurrent_lif(cur, k.double(), TAU, TH, ALPHA, method="native")
    with pytest.raises(KernelError, match="both float32 or both float64"):
        recurrent_lif(cur.half(), k.half(), TAU, TH, ALPHA, method="native")


FALLBACK = """
    import torch
    from neurodelay.train import recurrent
    st = recurrent.native_status()
    print("STATUS", st.available, st.reason)
    g = torch.Generator().manual_seed(0)
    k = torch.randn(10, 10, 4, generator=g) * 0.3
    cur = (torch.randn(20, 3, 10, generator=g) * 0.6 + 0.35).requires_grad_()
    s = recurrent.recurrent_lif(cur, k, 2.0, 1.0, 5.0)
    s.sum().backward()
    ref = recurrent.recurrent_lif(cur.detach(), k, 2.0, 1.0, 5.0, method="torch")
    assert torch.equal(s.detach(), ref) and cur.grad is not None
    try:
        recurrent.recurrent_lif(cur, k, 2.0, 1.0, 5.0, method="native")
    except Exception as e:
        print("ERROR", type(e).__name__, e)
"""


@pytest.mark.parametrize("env,reason", [
    ({native.ENV_SWITCH: "0"}, "NEURODELAY_NATIVE=0 is set"),
    ({"CC": "/nonexistent/cc"}, "does not run"),
], ids=["switched-off", "no-compiler"])
def test_fallback_in_a_fresh_process_says_why(env, reason, tmp_path):
    full = {**os.environ, "NEURODELAY_CACHE": str(tmp_path), **env}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FALLBACK)],
                          capture_output=True, text=True, env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "STATUS False" in proc.stdout and reason in proc.stdout
    assert "ERROR KernelError the compiled recurrent loop is unavailable" in proc.stdout
