"""Elastic pretraining: under `torchrun --max-restarts 1` a rank killed with SIGKILL in the
middle of an epoch is restarted with the same command line; with --auto-resume the run
continues from the last finished epoch and ends with the weights of an uninterrupted run,
bit for bit (gloo, 2 processes, CPU). One restart is allowed, so the restart itself must work:
before uscl.utils.dist gave each attempt its own store keys, the restarted ranks often read the
dead ranks' gloo addresses and failed ("connectFullMesh ... connection refused")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from uscl.checkpoint import load_weights

LAUNCHER = textwrap.dedent('''
    """Runs `uscl` under torchrun; with KILL_AT_STEP set, rank 1 SIGKILLs itself at that
    step of its first attempt (the training loop is not changed: its step is wrapped here)."""
    import os, signal, sys
    import uscl.pretrain.loop as loop

    real_step, calls = loop.train_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if os.environ["RANK"] == "1" and first_attempt and calls[0] == int(os.environ.get("KILL_AT_STEP", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(*args, **kwargs)

    loop.train_step = step
    from uscl.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(launcher, store, out, kill_at=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "USCL_NO_PROGRESS": "1", "KILL_AT_STEP": str(kill_at)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--max-restarts=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", str(launcher),
           "pretrain", "--store", str(store), "--out", str(out), "--epochs", "3", "--batch-size", "4",
           "--image-size", "32", "--device", "cpu", "--valid-size", "0.25", "--auto-resume"]
    # its own process group, so that a hung run is ended whole (workers included) at the timeout
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_is_restarted_and_ends_bit_identical(make_store, tmp_path):
    store = make_store(n_videos=12, frames=4, size=32, labelled=0.5)
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    # 9 training videos, global batch 4: 2 steps per epoch; step 4 is the middle of epoch 2
    killed = torchrun(launcher, store, tmp_path / "killed", kill_at=4)
    assert killed.returncode == 0, killed.stdout[-3000:] + killed.stderr[-3000:]
    log = killed.stdout + killed.stderr
    assert "resuming" in log and "after epoch 1" in log, log[-3000:]
    straight = torchrun(launcher, store, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, meta_a = load_weights(tmp_path / "straight" / "last.safetensors")
    b, meta_b = load_weights(tmp_path / "killed" / "last.safetensors")
    assert meta_a["epoch"] == meta_b["epoch"] == 3
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # the same command on the finished run is refused, naming why; other settings are refused too
    again = torchrun(launcher, store, tmp_path / "killed")
    assert again.returncode != 0 and "holds a finished run" in again.stdout + again.stderr
