"""torchrun-style multi-process training (gloo on CPU, loopback): parameters stay identical."""
import json
import os
import socket
import subprocess
import sys

import torch

from neurodelay.data import make_synthetic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_keep_identical_parameters(tmp_path):
    files = make_synthetic(tmp_path / "syn", sizes={"train": 96, "valid": 32, "test": 32})
    port = _free_port()
    script = tmp_path / "rank.py"
    script.write_text(
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "import neurodelay.train.trainer as T\n"
        "from neurodelay import api\n"
        "created = []\n"
        "class Capture(T.DelaySNN):\n"
        "    def __init__(self, *a, **k):\n"
        "        super().__init__(*a, **k)\n"
        "        created.append(self)\n"
        "T.DelaySNN = Capture  # keep a handle on this rank's live training model\n"
        "out = sys.argv[1]\n"
        f"api.train_run(out, preset='tiny', hidden=[8], epochs=2, batch_size=32, seed=0,\n"
        f"              progress=False, log=lambda m: None, cache_dir={str(tmp_path / 'c')!r},\n"
        f"              train_file={str(files['train'])!r}, valid_file={str(files['valid'])!r},\n"
        f"              test_file={str(files['test'])!r})\n"
        "import torch.distributed as dist\n"
        "live = created[0]\n"
        "flat = torch.cat([p.detach().reshape(-1) for p in live.parameters()])\n"
        "torch.save(flat, out + f'/params_rank{dist.get_rank()}.pt')\n"
        "dist.destroy_process_group()\n")
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["world_size"] == 2
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2  # written once (rank 0), not once per rank
    # each rank saved its own live parameters after 2 epochs of different data shards
    p0 = torch.load(tmp_path / "run" / "params_rank0.pt")
    p1 = torch.load(tmp_path / "run" / "params_rank1.pt")
    assert torch.equal(p0, p1)
    init = torch.cat([p.detach().reshape(-1) for p in _init_params()])
    assert not torch.equal(p0, init)  # they did train


def _init_params():
    from neurodelay.train.model import DelaySNN, ModelConfig
    torch.manual_seed(0)
    return DelaySNN(ModelConfig(n_inputs=140, n_outputs=10, hidden=[8], max_delay_steps=11,
                                dropout=0.1), seed=0).parameters()
