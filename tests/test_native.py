"""neurodelay.train.native: the compiled direct kernels of the integer-delay operator.

Exactness (float64 integer data: bit-exact sums and gradients), every tile width and
lengths around them, strided inputs, thread-count independence (bit-equal), zero rows
and zero weights, float32 precision against conv1d's own, and the build's behaviour:
cache reuse, a fork, and the fallback to the frequency-domain path where there is no
working compiler or NEURODELAY_NATIVE=0 (each in a fresh subprocess).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compiled_checks import require_compiled

from neurodelay.errors import KernelError
from neurodelay.train import native
from neurodelay.train.intdelay import integer_delay_conv

ROOT = Path(__file__).resolve().parents[1]


def _require_kernels():
    require_compiled(native.status(), "the compiled kernels")


@pytest.fixture(autouse=True)
def kernels():
    _require_kernels()
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def run(x, w, d, gy, method):
    """y, dL/dx, dL/dw of sum(gy * y) in float64 by `method`. On integer data the
    one-matmul-per-delay path ("direct", checked against loops in test_intdelay.py) is
    exact too: every partial sum is an integer below 2**53."""
    xt = torch.from_numpy(x).double().requires_grad_(True)
    wt = torch.from_numpy(w).double().requires_grad_(True)
    y = integer_delay_conv(xt, wt, torch.from_numpy(d), method=method)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(gy).double())
    return y.detach().numpy(), gx.numpy(), gw.numpy()


def conv1d_ref(x, w, d):
    window = int(d.max()) + 1
    k = torch.zeros(*w.shape, window, dtype=w.dtype).scatter(
        2, (window - 1 - d).unsqueeze(-1), w.unsqueeze(-1))
    return F.conv1d(F.pad(x, (window - 1, 0)), k)


def integer_case(b, n_in, n_out, t, window, seed, density=0.3):
    g = np.random.default_rng(seed)
    x = (g.random((b, n_in, t)) < density) * g.integers(1, 5, (b, n_in, t))
    w = g.integers(-50, 51, (n_out, n_in))
    w[g.random(w.shape) < 0.2] = 0                               # pruned synapses
    d = g.integers(0, window, (n_out, n_in))
    x[:, ::5] = 0                                                # silent inputs
    gy = g.integers(-9, 10, (b, n_out, t))
    return x.astype(np.int64), w.astype(np.int64), d, gy.astype(np.int64)


@pytest.mark.parametrize("t", [1, 5, 15, 16, 17, 100, 112, 128, 129, 200, 300])
def test_float64_integer_sums_and_gradients_are_exact(t):
    """Every tile width (16..128) and the chunked lengths beyond: bit-exact integers."""
    x, w, d, gy = integer_case(3, 11, 7, t, window=min(40, t + 5), seed=t)
    for got, ref in zip(run(x, w, d, gy, "native"), run(x, w, d, gy, "direct")):
        assert np.array_equal(got, ref)


def test_delays_past_the_end_and_silent_batches():
    x, w, d, gy = integer_case(4, 9, 6, 20, window=30, seed=3)
    x[1] = 0                                                     # a silent sample
    gy[2] = 0                                                    # no gradient for one
    d[:, 0] = 25                                                 # never reach the output
    y, gx, gw = run(x, w, d, gy, "native")
    for got, ref in zip((y, gx, gw), run(x, w, d, gy, "direct")):
        assert np.array_equal(got, ref)
    assert not y[1].any() and not gx[2].any() and y.any()


def test_strided_inputs_give_the_same_bits():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 6, 22, generator=g)                   # (T, B, 2 * C): time-major
    w = torch.randn(9, 11, generator=g)
    d = torch.randint(0, 12, (9, 11), generator=g)
    x_tm = base[:, :, ::2].permute(1, 2, 0)                      # strided, time-major view
    x_c = x_tm.contiguous()
    y_c = integer_delay_conv(x_c, w, d, method="native")
    assert torch.equal(integer_delay_conv(x_tm, w, d, method="native"), y_c)
    gy = torch.randn(40, 6, 9, generator=g).permute(1, 2, 0)     # non-contiguous gradient
    grads = []
    for x in (x_c, x_tm):
        xi = x.detach().clone().requires_grad_(True) if x is x_c else \
            x.detach().requires_grad_(True)
        wi = w.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(integer_delay_conv(xi, wi, d, method="native"),
                                         (xi, wi), gy))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_thread_count_does_not_change_a_bit():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(7, 40, 100, generator=g) < 0.2).float()
    w = torch.randn(30, 40, generator=g)
    d = torch.randint(0, 25, (30, 40), generator=g)
    gy = torch.randn(7, 30, 100, generator=g)
    outs = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        xi = x.clone().requires_grad_(True)
        wi = w.clone().requires_grad_(True)
        y = integer_delay_conv(xi, wi, d, method="native")
        outs.append((y.detach(), *torch.autograd.grad(y, (xi, wi), gy)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


def test_float32_error_is_that_of_a_direct_sum():
    """At the SHD shape, float32 ordered sums: within ~2x conv1d's float32 error (which
    sums in blocks; measured 1.5-2.1x) and below the frequency-domain path's."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 256, 100, generator=g) < 0.1).float()
    w = (torch.rand(64, 256, generator=g) - 0.5) * 0.3
    d = torch.randint(0, 25, (64, 256), generator=g)
    truth = conv1d_ref(x.double(), w.double(), d)
    err_nat = float((integer_delay_conv(x, w, d, method="native").double() - truth)
                    .abs().max())
    err_c1d = float((conv1d_ref(x, w, d).double() - truth).abs().max())
    err_fft = float((integer_delay_conv(x, w, d, method="fft").double() - truth).abs().max())
    assert 0 < err_nat <= 2.5 * err_c1d
    assert err_nat < 0.75 * err_fft


def test_rows_beyond_32_bit_offsets_are_refused_with_the_fix():
    with pytest.raises(KernelError, match="method='fft'"):
        native._offsets(torch.tensor([True, True]), torch.tensor([5, 2**31]))
    off = native._offsets(torch.tensor([True, False]), torch.tensor([5, 2**31 - 1]))
    assert off.dtype == torch.int32 and off.tolist() == [5, -1]


def test_tile_width_choice():
    assert [native.tile_width(t) for t in (1, 16, 17, 100, 128)] == [16, 16, 32, 112, 128]
    assert native.tile_width(129) == 80          # 2 x 80 = 160 pads least (2 x 128 = 256)
    assert native.tile_width(256) == 128
    for t in range(129, 600, 7):
        w = native.tile_width(t)
        assert w in native.TILE_WIDTHS and w >= 64


# ----------------------------------------------------------------------------- the build
def _python(code: str, env_extra: dict, tmp_path: Path,
            timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEURODELAY_CACHE": str(tmp_path / "cache"), **env_extra}
    if native.ENV_SWITCH not in env_extra:
        env.pop(native.ENV_SWITCH, None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


FALLBACK = """
    import torch
    from neurodelay.train import native
    from neurodelay.errors import KernelError
    from neurodelay.train.intdelay import integer_delay_conv
    st = native.status()
    assert not st.available, st
    print("REASON", st.reason)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 30, dtype=torch.float64, generator=g)
    w = torch.randn(4, 5, dtype=torch.float64, generator=g)
    d = torch.randint(0, 9, (4, 5), generator=g)
    y = integer_delay_conv(x, w, d)                      # auto: the FFT path
    for o in range(4):
        acc = torch.zeros(2, 30, dtype=torch.float64)
        for i in range(5):
            k = int(d[o, i])
            acc[:, k:] += w[o, i] * x[:, i, :30 - k]
        assert float((y[:, o] - acc).abs().max()) < 1e-10
    try:
        integer_delay_conv(x, w, d, method="native")
    except KernelError as e:
        print("ERROR", e)
    else:
        raise SystemExit("method='native' did not refuse")
"""


@pytest.mark.parametrize("env,reason", [
    ({native.ENV_SWITCH: "0"}, "NEURODELAY_NATIVE=0 is set"),
    ({"CC": "/nonexistent/cc"}, "does not run"),
    ({"CC": "/bin/false"}, "compiling the kernels failed"),
], ids=["switched-off", "no-compiler", "compiler-fails"])
def test_fallback_to_the_fft_path_says_why(env, reason, tmp_path):
    proc = _python(FALLBACK, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reason in proc.stdout
    assert "the compiled kernels are unavailable" in proc.stdout


def test_library_is_built_once_and_reused(tmp_path):
    code = """
        import os
        from neurodelay.train import native
        st = native.status()
        assert st.available, st
        print("LIB", st.library, os.stat(st.library).st_mtime_ns)
    """
    first = _python(code, {}, tmp_path)
    second = _python(code, {}, tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    lib1 = [ln for ln in first.stdout.splitlines() if ln.startswith("LIB")]
    lib2 = [ln for ln in second.stdout.splitlines() if ln.startswith("LIB")]
    assert lib1 and lib1 == lib2                      # same file, not rewritten
    assert str(tmp_path / "cache" / "native") in lib1[0]
    assert [p.name for p in (tmp_path / "cache" / "native").iterdir()] == \
        [Path(lib1[0].split()[1]).name]               # no temporary files left behind


def test_a_build_without_march_native_gives_the_same_bits(tmp_path):
    """The kernels' arithmetic (fma, fixed order, -ffp-contract=off) does not depend on
    the instruction set: a plain -O3 build (SSE2 on x86-64) and this process's build
    give bit-equal outputs and gradients."""
    code = """
        import torch
        from neurodelay.train import native
        native.FLAG_SETS = (("-O3",),)
        assert native.status().flags == ("-O3",), native.status()
        torch.set_num_threads(2)
        g = torch.Generator().manual_seed(9)
        x = (torch.rand(5, 30, 100, generator=g) < 0.2).float().requires_grad_(True)
        w = torch.randn(20, 30, generator=g).requires_grad_(True)
        d = torch.randint(0, 25, (20, 30), generator=g)
        gy = torch.randn(5, 20, 100, generator=g)
        from neurodelay.train.intdelay import integer_delay_conv
        y = integer_delay_conv(x, w, d, method="native")
        gx, gw = torch.autograd.grad(y, (x, w), gy)
        torch.save([y.detach(), gx, gw, x.detach(), w.detach(), d, gy], "%s")
    """ % (tmp_path / "plain.pt")
    proc = _python(code, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    y0, gx0, gw0, x, w, d, gy = torch.load(tmp_path / "plain.pt")
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = integer_delay_conv(x, w, d, method="native")
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    assert native.status().flags != ("-O3",)          # this process: the -march build
    for a, b in zip((y.detach(), gx, gw), (y0, gx0, gw0)):
        assert torch.equal(a, b)


def test_an_unwritable_cache_builds_in_a_temporary_folder(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    code = """
        from neurodelay.train import native
        st = native.status()
        assert st.available, st
        print("LIB", st.library)
    """
    proc = _python(code, {}, tmp_path)              # NEURODELAY_CACHE = tmp_path / "cache"
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib = proc.stdout.split("LIB ", 1)[1].strip()
    assert "neurodelay-native-" in lib and not lib.startswith(str(blocker))


def test_a_forked_child_gets_its_own_threads(tmp_path):
    code = """
        import os, torch
        from neurodelay.train.intdelay import integer_delay_conv
        torch.set_num_threads(2)
        x = torch.rand(4, 8, 30)
        w = torch.randn(5, 8)
        d = torch.randint(0, 9, (5, 8))
        y = integer_delay_conv(x, w, d, method="native")
        pid = os.fork()
        if pid == 0:
            ok = torch.equal(integer_delay_conv(x, w, d, method="native"), y)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status))
    """
    proc = _python(code, {}, tmp_path, timeout=90)     # a child stuck on the parent's pool
    assert proc.returncode == 0, proc.stderr[-3000:]     # hangs: the timeout fails the test
    assert "CHILD 0" in proc.stdout


def test_training_says_when_it_runs_on_the_fallback(files, tmp_path, monkeypatch):
    from neurodelay import api

    monkeypatch.setattr(native, "status",
                        lambda: native.NativeStatus(False, "no C compiler found (test)"))
    lines = []
    api.train_run(str(tmp_path / "run"), preset="tiny", hidden=[8, 8], epochs=1,
                  batch_size=64, seed=0, progress=False, log=lines.append, **files)
    notes = [ln for ln in lines if "integer-delay operator" in ln]
    assert notes == ["note: integer-delay operator on its frequency-domain fallback: "
                     "no C compiler found (test)"]
