"""DDP on the CPU (gloo, 2 processes): loss and gradients equal a single process over the
same global batch; each global batch holds one video once, split between ranks."""

import torch
import torch.distributed as td
import torch.multiprocessing as mp
from torch import nn

from uscl.data import DistributedVideoSampler
from uscl.models import USCLModel
from uscl.pretrain.methods import StepInputs, compute_losses

WORLD = 2
LABELS = {
    "mixed": [0, -1, 2, 1, -1, -1, 0, 2],
    "none": [-1] * 8,
    "one_rank_only": [1, 0, -1, 2, -1, -1, -1, -1],  # rank 1 holds no labelled item
}


def tiny_model() -> nn.Module:
    """BN-free, so per-rank and global batches see the same function."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return USCLModel(backbone, 4, out_dim=8, num_classes=3)


def batch(kind):
    g = torch.Generator().manual_seed(7)
    v1 = torch.randn(8, 3, 8, 8, generator=g)
    v2 = v1 + 0.3 * torch.randn(8, 3, 8, 8, generator=g)
    return v1, v2, torch.tensor(LABELS[kind])


def step(model, v1, v2, labels, distributed):
    parts = compute_losses(model, v1, v2, labels, temperature=0.5, lambda_sup=0.2, supervised=True,
                           distributed=distributed)
    parts.total.backward()
    return parts


def _worker(rank, init_file, out_file, store, run_dir):
    td.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = {}
    try:
        for kind in LABELS:
            model = nn.parallel.DistributedDataParallel(tiny_model())
            v1, v2, labels = batch(kind)
            sl = slice(rank * 4, (rank + 1) * 4)
            parts = step(model, v1[sl], v2[sl], labels[sl], distributed=True)
            vals = torch.stack([parts.total.detach(), parts.contrastive.detach(), parts.supervised.detach()])
            td.all_reduce(vals)
            results[kind] = {"losses": vals / WORLD, "labelled": int(parts.labelled),
                             "grads": {n: p.grad.clone() for n, p in model.module.named_parameters()}}
        if rank == 0:
            torch.save(results, out_file)
        # the whole loop under DDP: ranks agree on the losses, only rank 0 writes
        from uscl.pretrain import PretrainConfig, pretrain
        from uscl.pretrain.config import DatasetConfig

        res = pretrain(PretrainConfig(store=store, out=run_dir, epochs=1, batch_size=4, device="cpu",
                                      dataset=DatasetConfig(image_size=32, valid_size=0.25)), log_stream=None)
        torch.save({"total": res.metrics[0]["total_loss"], "warnings": len(res.warnings)}, f"{out_file}.{rank}")
    finally:
        td.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path, make_store):
    out = tmp_path / "ddp.pt"
    store = make_store(n_videos=10, frames=4, size=32)
    run_dir = tmp_path / "run"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out), str(store), str(run_dir)), nprocs=WORLD, join=True)
    got = torch.load(out, weights_only=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]
    assert ranks[0]["total"] == ranks[1]["total"]  # epoch metrics are reduced over ranks
    for name in ("last.safetensors", "best.safetensors", "backbone.safetensors", "train_state.pt", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]
    for kind in LABELS:
        model = tiny_model()
        v1, v2, labels = batch(kind)
        parts = step(model, v1, v2, labels, distributed=False)
        want = torch.stack([parts.total.detach(), parts.contrastive.detach(), parts.supervised.detach()])
        assert torch.allclose(got[kind]["losses"], want, atol=1e-6), (kind, got[kind]["losses"], want)
        assert got[kind]["labelled"] == int(parts.labelled) == sum(v >= 0 for v in LABELS[kind])
        for name, p in model.named_parameters():
            assert torch.allclose(got[kind]["grads"][name], p.grad, atol=1e-6, rtol=1e-5), (kind, name)
        if kind == "none":
            assert want[2].item() == 0.0 and all(torch.isfinite(g).all() for g in got[kind]["grads"].values())
            assert torch.all(got[kind]["grads"]["classifier.weight"] == 0)


def test_each_global_batch_holds_each_video_once_split_between_ranks():
    n_videos, global_batch = 23, 8
    for epoch in (0, 1):
        ranks = []
        for r in range(WORLD):
            s = DistributedVideoSampler(n_videos, global_batch, world_size=WORLD, rank=r, shuffle=True, seed=5)
            s.set_epoch(epoch)
            idx = list(s)
            ranks.append([idx[i:i + global_batch // WORLD] for i in range(0, len(idx), global_batch // WORLD)])
        single = DistributedVideoSampler(n_videos, global_batch, shuffle=True, seed=5)
        single.set_epoch(epoch)
        flat = list(single)
        assert len(ranks[0]) == len(ranks[1]) == n_videos // global_batch
        for step_i, (a, b) in enumerate(zip(*ranks)):
            assert not set(a) & set(b) and len(set(a)) == len(a) == global_batch // WORLD
            assert a + b == flat[step_i * global_batch:(step_i + 1) * global_batch]


# -- MoCo under DDP: the queue holds the global batch's keys --------------------------------
def _moco_worker(rank, init_file, out_file):
    from uscl.pretrain.moco import MoCo

    td.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        model = tiny_model()
        method = MoCo(queue_size=12, momentum=0.9, seed=0, temperature=0.2)
        method.setup(model, torch.device("cpu"))
        ddp = nn.parallel.DistributedDataParallel(model)
        v1, v2, labels = batch("none")
        sl = slice(rank * 4, (rank + 1) * 4)
        parts = method.loss(ddp, StepInputs((v1[sl], v2[sl]), labels[sl]), distributed=True)
        parts.total.backward()
        loss = parts.total.detach().clone()
        td.all_reduce(loss)
        method.after_step(ddp)
        if rank == 0:
            torch.save({"loss": loss / WORLD,
                        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                        "queue": method.queue.clone(), "pointer": method.pointer}, out_file)
    finally:
        td.destroy_process_group()


def test_two_process_moco_equals_one_process_on_the_global_batch(tmp_path):
    from uscl.pretrain.moco import MoCo

    out = tmp_path / "moco.pt"
    mp.spawn(_moco_worker, args=(str(tmp_path / "init"), str(out)), nprocs=WORLD, join=True)
    got = torch.load(out, weights_only=True)
    model = tiny_model()
    method = MoCo(queue_size=12, momentum=0.9, seed=0, temperature=0.2)
    method.setup(model, torch.device("cpu"))
    v1, v2, labels = batch("none")
    parts = method.loss(model, StepInputs((v1, v2), labels))
    parts.total.backward()
    method.after_step(model)
    assert torch.allclose(got["loss"], parts.total.detach(), atol=1e-6)
    with_grad = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(with_grad) == set(got["grads"]) and "projection.0.weight" in with_grad
    for name, grad in with_grad.items():
        assert torch.allclose(got["grads"][name], grad, atol=1e-6, rtol=1e-5), name
    # both views' keys of all 8 items in global-batch order: the queue a single process holds
    assert got["pointer"] == method.pointer == 16 % 12
    assert torch.allclose(got["queue"], method.queue, atol=1e-6)
