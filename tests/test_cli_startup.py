"""`neurodelay --help` stays fast: the CLI imports its stages lazily (issue #27).

Importing the command modules must not import torch, Lava or matplotlib (seconds each);
each command imports what it runs. A module-level import of a heavy layer in
``neurodelay/cli/`` fails this test.
"""
import subprocess
import sys

HEAVY = ("torch", "lava", "matplotlib", "nir", "h5py", "DCLS", "spikingjelly", "submitit",
         "tensorboard", "wandb")


def test_cli_import_loads_no_heavy_library():
    code = ("import sys, neurodelay.cli; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"imported at CLI start-up: {p.stdout.strip()}"
