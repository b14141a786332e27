"""A real single-node Slurm cluster for the tests (no mock): munged + slurmctld + slurmd.

``start(folder)`` writes a munge key and a ``slurm.conf`` under ``folder`` (one node: this
host's short name with 2 CPUs; ``proctrack/linuxproc``, ``task/none``,
``select/cons_tres``, no accounting), starts the three daemons in the foreground as
child processes (so they are stopped by the PIDs started here, never by name), waits
until the node is idle and returns a :class:`Cluster`. Clients (sbatch, squeue, scontrol,
and the jobs themselves) find it through ``SLURM_CONF`` (:meth:`Cluster.env`).

Needs root (slurmd starts jobs as their user) and Debian's ``slurm-wlm`` and ``munge``
packages (``.ci/run`` installs them). ``python tests/slurm_cluster.py DIR`` starts one by
hand and keeps it up until Ctrl-C.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why no cluster can be started here (None when it can)."""
    lacking = [d for d in DAEMONS if shutil.which(d) is None]
    if lacking:
        return (f"{', '.join(lacking)} not installed (Debian: apt-get install slurm-wlm munge; "
                f".ci/run installs them)")
    if os.geteuid() != 0:
        return "a single-node Slurm for the tests needs root (slurmd starts the jobs)"
    return None


def _die_with_parent() -> None:
    """preexec_fn: the daemon gets SIGTERM when the process that started it dies (a test
    run killed hard leaves no cluster behind)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)   # PR_SET_PDEATHSIG, SIGTERM
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line(host: str) -> str:
    """This machine's node line (``slurmd -C``) with CPUs=2: RealMemory etc. as detected."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    mem = re.search(r"RealMemory=(\d+)", out)
    real = int(mem[1]) if mem else 1000
    return f"NodeName={host} CPUs=2 RealMemory={real} State=UNKNOWN"


@dataclass
class Cluster:
    folder: Path
    conf: Path
    host: str
    procs: dict = field(default_factory=dict)        # name -> Popen

    def env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> str:
        r = subprocess.run(list(cmd), capture_output=True, text=True,
                           env={**os.environ, **self.env()}, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def logs(self) -> str:
        """The tail of every daemon's log (for a failure message)."""
        out = []
        for name in DAEMONS:
            p = self.folder / f"{name}.log"
            if p.exists():
                out.append(f"--- {p}\n" + "\n".join(p.read_text(errors="replace")
                                                     .splitlines()[-15:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel the cluster's jobs (so no job step outlives slurmd), then stop the
        daemons started here by their PIDs: slurmd, slurmctld, munged."""
        if all(self.procs.get(n) is not None and self.procs[n].poll() is None
               for n in DAEMONS):
            try:
                self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 20 and self.run(
                        "squeue", "-h", "-t", "PD,R,CG,CF,S,RQ", check=False).strip():
                    time.sleep(0.5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for name in reversed(DAEMONS):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def start(folder, timeout: float = 60.0) -> Cluster:
    """Start munged, slurmctld and slurmd under ``folder`` (module docstring)."""
    why = missing()
    if why:
        raise RuntimeError(why)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(exist_ok=True)
        os.chmod(folder / sub, 0o700)
    key = folder / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    sock = folder / "munge" / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=neurodelay-test",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/builtin",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        "KillWait=1",            # scancel: SIGKILL 1 s after SIGTERM (submitit ignores SIGTERM)
        "MinJobAge=600",         # finished jobs stay visible to squeue/scontrol
        "InactiveLimit=0",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        _node_line(host),
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    cluster = Cluster(folder, conf, host)
    env = {**os.environ, **cluster.env()}
    try:
        cluster.procs["munged"] = subprocess.Popen(
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={folder / 'munge' / 'munged.pid'}",
             f"--log-file={folder / 'munged.log'}",
             f"--seed-file={folder / 'munge' / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_die_with_parent)
        _wait(lambda: sock.exists(), timeout, "munged's socket", cluster)
        for name in ("slurmctld", "slurmd"):
            cluster.procs[name] = subprocess.Popen(
                [name, "-D", "-f", str(conf)] + (["-i"] if name == "slurmctld" else []),
                stdout=open(folder / f"{name}.out", "w"), stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent)
        _wait(lambda: _node_idle(cluster), timeout, "the node to be idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_idle(cluster: Cluster) -> bool:
    for name, p in cluster.procs.items():
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited with status {p.returncode}\n{cluster.logs()}")
    try:
        out = cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False)
    except subprocess.TimeoutExpired:
        return False
    return out.strip().startswith("idle")


def _wait(ok, timeout: float, what: str, cluster: Cluster) -> None:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                               f"{cluster.logs()}")
        time.sleep(0.2)


if __name__ == "__main__":
    c = start(sys.argv[1] if len(sys.argv) > 1 else "/tmp/neurodelay-slurm")
    print(f"cluster up: export SLURM_CONF={c.conf}   (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        c.stop()
