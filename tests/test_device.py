"""Devices (issue 20): the --device option and its errors, what runs record, the precision
policy, device-independent checkpoints, the torch integer-delay path CUDA takes (run here
on the CPU against the C kernels), no host-device sync per training step, resume on
another device. Tests marked ``cuda`` run where torch sees a GPU (benchmarks/gpu_check.sh)
and are skipped elsewhere with the reason "no CUDA device" (tests/conftest.py)."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodelay import api, devices
from neurodelay.errors import OptionError
from neurodelay.runs import load_checkpoint
from neurodelay.train import intdelay, native
from neurodelay.train import loop as L
from neurodelay.train import trainer as T
from neurodelay.train.loaders import load_model

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda m: None)


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _fake_gpus(monkeypatch, n):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


# ----------------------------------------------------------------------------- option
@pytest.mark.parametrize("spec, norm", [(None, "auto"), ("auto", "auto"), ("CPU", "cpu"),
                                        (" cuda ", "cuda"), ("cuda:3", "cuda:3"),
                                        (torch.device("cpu"), "cpu")])
def test_device_spellings(spec, norm):
    assert devices.check_device_spec(spec) == norm


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:0", "cuda:-1", "auto:1", "", "cuda0"])
def test_malformed_devices_are_refused_naming_the_forms(bad):
    with pytest.raises(OptionError, match=r"--device .*not a device; give auto, cpu, cuda "
                                          r"or cuda:N"):
        devices.resolve_device(bad)


def test_auto_is_the_cpu_without_cuda_and_cuda_with_it(monkeypatch):
    _no_cuda(monkeypatch)
    assert devices.resolve_device("auto") == torch.device("cpu")
    _fake_gpus(monkeypatch, 2)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cuda_without_cuda_says_what_torch_reports_and_how_to_fix(monkeypatch):
    _no_cuda(monkeypatch)
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(OptionError) as e:
            devices.resolve_device(spec)
        msg = str(e.value)
        assert msg.startswith(f"--device {spec}: no CUDA device")
        assert ("CPU-only build" in msg) or ("is_available() is False" in msg)
        assert "--device cpu" in msg and "CUDA build of torch" in msg


def test_a_device_index_beyond_the_devices_is_refused(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    with pytest.raises(OptionError, match=r"--device cuda:7: CUDA device 7 does not exist;"
                                          r" torch sees 2 CUDA devices \(cuda:0\.\.cuda:1;"):
        devices.resolve_device("cuda:7")


def test_under_torchrun_every_process_takes_its_local_rank(monkeypatch):
    _fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert devices.resolve_device("cuda") == torch.device("cuda", 2)
    assert devices.resolve_device("auto") == torch.device("cuda", 2)
    with pytest.raises(OptionError, match="LOCAL_RANK"):
        devices.resolve_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(OptionError, match="more processes per node than there are GPUs"):
        devices.resolve_device("cuda")


def test_the_cli_refuses_a_missing_gpu_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    for spec, pattern in (("cuda:99", r"Error: --device cuda:99: "),
                          ("tpu", r"Error: --device 'tpu': not a device")):
        for cmd in (["train", "--out", str(out), "--epochs", "1"], ["eval", str(tmp_path)],
                    ["finetune", str(tmp_path), "--out", str(out)]):
            p = subprocess.run([sys.executable, "-m", "neurodelay", *cmd, "--device", spec],
                               capture_output=True, text=True, cwd=tmp_path,
                               env={**os.environ, "NEURODELAY_CACHE": str(tmp_path / "c")})
            assert p.returncode == 1, (cmd, p.stderr)
            assert re.search(pattern, p.stderr), (cmd, p.stderr)
            assert "Traceback" not in p.stderr
            assert not out.exists()


def test_every_pytorch_command_has_the_device_option():
    from click.testing import CliRunner

    from neurodelay.cli import main

    for cmd in ("train", "finetune", "eval", "ablate", "sweep-bits", "demo"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0
        assert "--device" in res.output and "auto" in res.output, cmd
    assert "--tf32" in CliRunner().invoke(main, ["train", "--help"]).output


# ----------------------------------------------------------------------------- policy
def test_precision_sets_tf32_from_the_option_and_restores_everything(monkeypatch):
    monkeypatch.delenv(devices.CUBLAS_ENV, raising=False)
    m, c = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (m.allow_tf32, c.allow_tf32, c.deterministic, c.benchmark,
              torch.are_deterministic_algorithms_enabled())
    m.allow_tf32 = c.allow_tf32 = True          # what a user's notebook may have set
    try:
        with devices.precision("cpu", tf32=False):
            assert not m.allow_tf32 and not c.allow_tf32
            assert not torch.are_deterministic_algorithms_enabled()   # CPU: untouched
        assert m.allow_tf32 and c.allow_tf32
        with devices.precision(torch.device("cuda", 0), tf32=True):
            assert m.allow_tf32 and c.allow_tf32
            assert c.deterministic and not c.benchmark
            assert torch.are_deterministic_algorithms_enabled()
            assert os.environ[devices.CUBLAS_ENV] == ":4096:8"
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        m.allow_tf32, c.allow_tf32, c.deterministic, c.benchmark = before[:4]
        torch.use_deterministic_algorithms(before[4])


def test_describe_device_names_the_cpu():
    info = devices.describe_device("cpu")
    assert info["device"] == "cpu" and info["name"] and info["name"] != "unknown CPU"
    assert devices.device_line(info).startswith("device: cpu (")


# ----------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from neurodelay.data import make_synthetic

    d = tmp_path_factory.mktemp("dev")
    f = make_synthetic(d / "syn", sizes={"train": 128, "valid": 32, "test": 32})
    return dict(train_file=str(f["train"]), valid_file=str(f["valid"]),
                test_file=str(f["test"]), cache_dir=str(d / "cache"))


SMALL = dict(preset="tiny", hidden=[8], batch_size=32, seed=2)


def test_config_and_result_record_the_device(tmp_path, task):
    lines = []
    api.train_run(tmp_path / "r", epochs=1, device="cpu", progress=False, log=lines.append,
                  **SMALL, **task)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    for rec in (cfg, res):
        assert rec["device"]["device"] == "cpu"
        assert rec["device"]["name"] == devices.cpu_model()
        assert rec["tf32"] is False
    assert any(m.startswith("device: cpu (") for m in lines)


def test_resume_on_another_device_string_continues_the_run(tmp_path, task):
    """`auto` (the CPU here) resumes a run trained with `cpu`: the device is not a setting
    of the run (not refused as a changed option) and the numbers are the uninterrupted
    run's."""
    full = api.train_run(tmp_path / "full", epochs=2, device="cpu", **QUIET, **SMALL, **task)
    dc = api.resolve_data(**task)
    mc, tc = api.make_configs(dc, n_classes=10, epochs=2, log=lambda m: None, **SMALL)
    first = T.train(tmp_path / "part", mc, tc, dc, device="cpu", stop_after_epoch=1, **QUIET)
    assert first == {"finished": False, "epoch": 1}
    part = tmp_path / "part"
    assert json.loads((part / "config.json").read_text())["device"]["device"] == "cpu"
    res = api.train_run(part, resume=True, device="auto", epochs=2, **QUIET)
    assert res["finished"]
    m_full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    m_part = (part / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in m_full]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "seconds"}
                     for x in m_part]
    assert res["test_accuracy"] == full["test_accuracy"]


# ----------------------------------------------------------------------------- checkpoints
def _save_as_if_on_cuda(obj, path, monkeypatch):
    """torch.save with every storage's location recorded as cuda:0 (what a checkpoint
    written from GPU tensors holds; no GPU needed to write one)."""
    import torch.serialization as S

    monkeypatch.setattr(S, "location_tag", lambda storage: "cuda:0")
    try:
        torch.save(obj, path)
    finally:
        monkeypatch.undo()


def test_a_checkpoint_written_on_cuda_loads_on_the_cpu(tmp_path, task, monkeypatch):
    run = tmp_path / "r"
    api.train_run(run, epochs=1, device="cpu", **QUIET, **SMALL, **task)
    ck = torch.load(run / "best.pt", weights_only=True, map_location="cpu")
    before = load_model(run)
    _save_as_if_on_cuda(ck, run / "best.pt", monkeypatch)
    if not torch.cuda.is_available():   # the file really says cuda: plain torch.load fails
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(run / "best.pt", weights_only=True)
    back = load_checkpoint(run / "best.pt")
    assert all(t.device.type == "cpu" for t in back["model"].values())
    after = load_model(run)
    for (k, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.equal(a, b), k
    assert api.evaluate_run(run, device="cpu").n == 32


def test_every_torch_load_in_the_package_maps_to_a_device():
    """Every torch.load call in the package names a map_location (a GPU-written file then
    loads on a CPU-only machine)."""
    import ast

    files = {f.resolve() for d in ("neurodelay", "exporters") for f in (ROOT / d).rglob("*.py")}
    calls = []
    for f in sorted(files):
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                calls.append((f.name, node.lineno, [k.arg for k in node.keywords]))
    assert calls, "no torch.load found: the scan is broken"
    assert all("map_location" in kw for _, _, kw in calls), calls


def test_saved_checkpoints_hold_cpu_tensors_only(tmp_path):
    """save_torch moves every tensor to the CPU (checked with a stand-in for a GPU
    tensor: its .cpu() is what save_torch must call)."""
    moved = []

    class OnDevice(torch.Tensor):
        @property
        def device(self):
            return torch.device("cuda", 0)

        def cpu(self, *a, **k):
            moved.append(1)
            return torch.Tensor(self.as_subclass(torch.Tensor).clone())

    t = torch.arange(4.0).as_subclass(OnDevice)
    obj = {"model": {"w": t, "plain": torch.ones(2)}, "list": [t, (t, 3)], "n": 1}
    out = L.on_cpu(obj)
    assert len(moved) == 3
    assert type(out["model"]["w"]) is torch.Tensor and out["n"] == 1
    assert out["model"]["plain"] is obj["model"]["plain"]     # CPU tensors: not copied
    L.save_torch(obj, tmp_path / "c.pt")
    assert len(moved) == 6


# ----------------------------------------------------------------------------- kernels
def test_auto_takes_the_torch_path_off_the_cpu(monkeypatch):
    assert intdelay.general_method("cuda:0") == intdelay.DEVICE_METHOD
    assert intdelay.general_method("cuda:0") in ("fft", "conv1d")
    monkeypatch.setattr(intdelay, "DEVICE_METHOD", "conv1d")
    assert intdelay.general_method(torch.device("cuda", 1)) == "conv1d"
    assert intdelay.general_method("cpu") == ("native" if native.available() else "fft")


@pytest.mark.skipif(not native.available(), reason="the C kernels are not built here")
@pytest.mark.parametrize("method", ["fft", "conv1d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_torch_integer_delay_paths_equal_the_c_kernels(method, dtype):
    """What CUDA runs (method forced, on the CPU) against the C kernels: forward, dL/dx,
    dL/dweight; delays past T included; float64 with integer values bit-exact after
    rounding (what hardware-exact fine-tuning relies on)."""
    g = torch.Generator().manual_seed(5)
    for (B, n_in, n_out, steps, dmax) in ((4, 12, 9, 30, 40), (3, 40, 17, 25, 25)):
        x = torch.poisson(torch.full((B, n_in, steps), 0.7), generator=g).to(dtype)
        w = torch.randn(n_out, n_in, generator=g).to(dtype)
        d = torch.randint(0, dmax, (n_out, n_in), generator=g)
        gy = torch.randn(B, n_out, steps, generator=g).to(dtype)
        res = {}
        for m in ("native", method):
            xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
            y = intdelay.integer_delay_conv(xx, ww, d, method=m)
            (y * gy).sum().backward()
            res[m] = (y.detach(), xx.grad, ww.grad)
        tol = 2e-5 if dtype == torch.float32 else 1e-10
        for a, b in zip(res[method], res["native"]):
            scale = float(b.abs().max())
            assert float((a - b).abs().max()) <= tol * max(scale, 1.0)
        wi = torch.randint(-50, 51, (n_out, n_in), generator=g).to(torch.float64)
        xi = x.to(torch.float64)
        a = intdelay.integer_delay_conv(xi, wi, d, method=method)
        b = intdelay.integer_delay_conv(xi, wi, d, method="native")
        assert torch.equal(torch.round(a), b)


# ----------------------------------------------------------------------------- host syncs
SYNCS = ("item", "tolist", "numpy", "__int__", "__float__", "__bool__", "__index__")


def _count_syncs(monkeypatch, run, task, batch_size):
    """Calls of the tensor -> Python conversions (each a host-device sync on a GPU) made
    by neurodelay's own code while the training epochs run."""
    counts = {"n": 0}
    inside = {"on": False}
    pkg = os.sep + "neurodelay" + os.sep

    def wrap(name):
        orig = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            if inside["on"] and pkg in sys._getframe(1).f_code.co_filename:
                counts["n"] += 1
            return orig(self, *a, **k)
        return f

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    epoch = L._train_one_epoch

    def counted(*a, **k):
        inside["on"] = True
        try:
            return epoch(*a, **k)
        finally:
            inside["on"] = False

    monkeypatch.setattr(L, "_train_one_epoch", counted)
    api.train_run(run, epochs=1, device="cpu", **QUIET,
                  **{**SMALL, "batch_size": batch_size}, **task)
    monkeypatch.undo()
    return counts["n"]


def test_no_host_sync_per_training_step(tmp_path, task, monkeypatch):
    """The training loop sums loss and correct counts on the device: the syncs per epoch
    do not grow with the number of steps (2 at the end of the epoch; before, 2 per
    step)."""
    few = _count_syncs(monkeypatch, tmp_path / "a", task, 64)     # 2 steps
    many = _count_syncs(monkeypatch, tmp_path / "b", task, 8)     # 16 steps
    assert few == many <= 2, (few, many)


# ----------------------------------------------------------------------------- distributed
def test_nccl_on_cuda_gloo_on_the_cpu(monkeypatch):
    import torch.distributed as dist

    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: seen.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.append(str(d)))
    assert T.distributed_context(torch.device("cpu")) == (1, 2)
    assert T.distributed_context(torch.device("cuda", 1)) == (1, 2)
    assert seen == ["gloo", "cuda:1", "nccl"]


# ----------------------------------------------------------------------------- CUDA
def _loss_grads_spikes(model, x, y):
    from neurodelay.train.model import loss_fn

    model.zero_grad(set_to_none=True)
    u, spikes = model(x, record=True)
    loss = loss_fn(u, y)
    loss.backward()
    return (float(loss.detach()), [p.grad.detach().cpu() for p in model.parameters()
                          if p.grad is not None], [s.cpu() for s in spikes])


@pytest.mark.cuda
@pytest.mark.parametrize("delays", ["learned", "fixed-random"])
def test_cuda_forward_and_gradients_equal_the_cpu_to_float32_rounding(delays):
    """float64: CPU and CUDA agree to 1e-9 (same model, other kernels); float32: the loss
    to float32 rounding, and the gradients too unless a membrane within rounding of the
    threshold spiked on one device only."""
    from neurodelay.train.model import DelaySNN, ModelConfig

    torch.manual_seed(0)
    cpu = DelaySNN(ModelConfig(n_inputs=20, n_outputs=5, hidden=[32, 32],
                               max_delay_steps=12, delays=delays, dropout=0.0), seed=0)
    cpu.set_sigma(2.0)
    x = torch.poisson(torch.full((8, 40, 20), 0.4))
    y = torch.randint(0, 5, (8,))
    with devices.precision("cuda"):
        for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
            a = copy.deepcopy(cpu).to(dtype)
            b = copy.deepcopy(cpu).to(dtype).to("cuda")
            la, ga, sa = _loss_grads_spikes(a, x.to(dtype), y)
            lb, gb, sb = _loss_grads_spikes(b, x.to(dtype).cuda(), y.cuda())
            assert abs(la - lb) <= rtol * abs(la) + 1e-7, (dtype, la, lb)
            same_spikes = all(torch.equal(p, q) for p, q in zip(sa, sb))
            assert same_spikes or dtype == torch.float32
            if same_spikes:
                for p, q in zip(ga, gb):
                    assert float((p - q).abs().max()) <= rtol * 10 * max(
                        float(p.abs().max()), 1e-6), dtype


@pytest.mark.cuda
def test_cuda_hardware_exact_model_equals_bitsim():
    sys.path.insert(0, str(ROOT / "tests"))
    from test_hwmodel import counts, quantized, random_net, reference

    from neurodelay.train.hwmodel import HwSNN

    for bits, dbits in ((8, 6), (4, 3), (2, 6)):
        net = random_net(20 + bits)
        x = counts(bits)
        qnet = quantized(net, bits, dbits, x)
        model = HwSNN(qnet, bits).to("cuda")
        u_ref, s_ref = reference(qnet, x)
        with torch.no_grad(), devices.precision("cuda"):
            u, spikes = model(torch.from_numpy(x).cuda(), record=True)
        assert np.array_equal(u.cpu().numpy(), u_ref)
        for a, b in zip(spikes, s_ref):
            assert np.array_equal(a.cpu().numpy().astype(bool), b)


@pytest.mark.cuda
def test_cuda_trained_run_loads_evaluates_on_the_cpu(tmp_path, task):
    run = tmp_path / "g"
    res = api.train_run(run, epochs=1, device="cuda", **QUIET, **SMALL, **task)
    assert res["device"]["device"].startswith("cuda")
    ck = torch.load(run / "checkpoint.pt", weights_only=True)   # no map_location needed
    assert all(t.device.type == "cpu" for t in ck["model"].values())
    on_cpu = api.evaluate_run(run, device="cpu")
    on_gpu = api.evaluate_run(run, device="cuda")
    assert on_cpu.n == on_gpu.n and abs(on_cpu.accuracy - on_gpu.accuracy) <= 1 / on_cpu.n
    r2 = api.train_run(run, resume=True, device="cpu", epochs=1, **QUIET)
    assert r2["finished"]
