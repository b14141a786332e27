"""Where PyTorch runs: the ``--device`` option, what the device is, the precision policy.

``--device`` (every command that runs PyTorch: train, finetune, eval, ablate,
sweep-bits, demo) takes

    auto     CUDA when torch sees a CUDA device, else the CPU (the default)
    cpu      the CPU
    cuda     the first CUDA device (under torchrun: cuda:LOCAL_RANK, one GPU per process)
    cuda:N   CUDA device N (0-based)

:func:`resolve_device` turns it into a ``torch.device`` or an OptionError that says
what torch reports (a CPU-only build, no visible device, fewer devices than asked) and
how to fix it. :func:`describe_device` is what runs record (config.json, result.json,
the log): the device and the GPU's name, or the CPU's model.

Precision policy (:func:`precision`): float32 everywhere, with TF32 (the 10-bit-mantissa
tensor-core mode of NVIDIA GPUs since Ampere) OFF unless ``--tf32`` is given, so a CUDA
run and a CPU run agree to float32 rounding; hardware-exact fine-tuning computes in
float64 on every device (exact integers). ``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` are set explicitly from the option for the length
of one library call and restored afterwards. No bf16/fp16 autocast: it has not been
measured to keep accuracy, so it is not offered.

Determinism: on CUDA the call also sets ``torch.backends.cudnn.deterministic`` (and
turns cuDNN's autotuner off) and ``torch.use_deterministic_algorithms(True,
warn_only=True)``; cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment
for that, which is set when absent before CUDA is first used. So a seed fixes a run on
one kind of GPU as it does on the CPU. A run resumed on another device continues
correctly, but not bit for bit as on its own device (other kernels, other random
streams for dropout).
"""
from __future__ import annotations

import contextlib
import os
import platform
import re

import torch

from neurodelay.errors import OptionError

CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"


def _local_rank() -> int | None:
    """LOCAL_RANK under torchrun with more than one process, else None."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def cuda_report() -> str:
    """What torch says about CUDA, in words (for error messages and logs)."""
    built = torch.version.cuda
    if built is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build "
                f"(torch.version.cuda is None)")
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f"; CUDA_VISIBLE_DEVICES={vis!r}" if vis is not None else ""
    try:
        n = torch.cuda.device_count()
    except Exception as e:  # noqa: BLE001 - a broken driver reports itself this way
        return f"torch {torch.__version__} (CUDA {built}) cannot query devices: {e}{seen}"
    if n == 0 or not torch.cuda.is_available():
        return (f"torch {torch.__version__} is built for CUDA {built}, but "
                f"torch.cuda.is_available() is False: no NVIDIA driver or no visible "
                f"GPU{seen}")
    return f"torch {torch.__version__} (CUDA {built}) sees {n} CUDA device{'s' * (n != 1)}"


def check_device_spec(spec, option: str = "--device") -> str:
    """The normalised spelling of ``spec`` (None -> "auto"), or an OptionError for a
    malformed value. Needs no CUDA (used before anything runs)."""
    if spec is None:
        return "auto"
    if isinstance(spec, torch.device):
        spec = str(spec)
    s = str(spec).strip().lower()
    m = _SPEC.match(s)
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise OptionError(f"{option} {spec!r}: not a device; give {CHOICES} (N a CUDA "
                          f"device index: 0, 1, ...)")
    return s


def resolve_device(spec="auto", option: str = "--device") -> torch.device:
    """``torch.device`` for ``spec`` (module docstring), or an OptionError saying what
    torch reports and how to fix it."""
    s = check_device_spec(spec, option)
    if s == "cpu":
        return torch.device("cpu")
    rank = _local_rank()
    if s == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        s = "cuda"
    if not torch.cuda.is_available():
        raise OptionError(f"{option} {spec}: no CUDA device: {cuda_report()}. Install a "
                          f"CUDA build of torch for this machine's driver (see "
                          f"https://pytorch.org/get-started/locally/), make a GPU visible "
                          f"(CUDA_VISIBLE_DEVICES), or use --device cpu (or auto: CUDA "
                          f"when available, else the CPU)")
    n = torch.cuda.device_count()
    if s == "cuda":
        index = 0 if rank is None else rank
    else:
        index = int(s.split(":")[1])
        if rank is not None and index != rank:
            raise OptionError(f"{option} {spec}: under torchrun every process takes the "
                              f"GPU of its LOCAL_RANK (this one: cuda:{rank}); give "
                              f"--device cuda (or auto) and choose GPUs with "
                              f"CUDA_VISIBLE_DEVICES")
    if index >= n:
        raise OptionError(f"{option} {spec}: CUDA device {index} does not exist; torch "
                          f"sees {n} CUDA device{'s' * (n != 1)} (cuda:0..cuda:{n - 1}; "
                          f"CUDA_VISIBLE_DEVICES renumbers them from 0)"
                          + ("; torchrun started more processes per node than there "
                             "are GPUs" if rank is not None else ""))
    return torch.device("cuda", index)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else platform's description."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device) -> dict:
    """What a run records of its device: {"device": "cuda:0", "name": "<GPU>", ...}."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(index)
        return {"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index),
                "memory_gib": round(p.total_memory / 2**30, 1),
                "torch": torch.__version__, "cuda": torch.version.cuda}
    return {"device": str(device), "name": cpu_model(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def device_line(info: dict) -> str:
    """One log line for :func:`describe_device`'s dict."""
    extra = (f", {info['memory_gib']} GiB" if "memory_gib" in info
             else f", {info.get('threads')} threads" if "threads" in info else "")
    return f"device: {info['device']} ({info['name']}{extra})"


@contextlib.contextmanager
def precision(device, tf32: bool = False):
    """The precision and determinism policy (module docstring) for the enclosed call;
    every global switch it sets is restored on exit."""
    device = torch.device(device)
    cuda_m, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (cuda_m.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    cuda_m.allow_tf32 = bool(tf32)
    cudnn.allow_tf32 = bool(tf32)
    if device.type == "cuda":
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC)
        cudnn.deterministic, cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield device
    finally:
        cuda_m.allow_tf32, cudnn.allow_tf32 = before[0], before[1]
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]
        torch.use_deterministic_algorithms(before[4], warn_only=before[5])


def synchronize(device) -> None:
    """Wait for the device's queued work (timing); nothing on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device) -> float | None:
    """Peak memory torch's CUDA allocator handed out on ``device`` (MiB); None on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
