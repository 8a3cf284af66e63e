"""MoCo v2 as a method: a momentum key encoder and a queue of negatives (the paper's other
baseline), with one frame per video (``moco``) or with USCL's sample pairs, mixup and
supervised term (``moco-spg``: "USCL + many negatives").

The loss is symmetric (each view queries the other's key) and both views' keys are
enqueued. Under DDP the keys of the whole global batch are gathered and enqueued in global
batch order, so every rank holds the queue a single process would; the key encoder starts as a copy of the model
and follows it by ``momentum`` after each step. Encoder, queue and pointer are the
method's state: saved with the training state and restored exactly on resume.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from uscl.checkpoint import unwrap_model
from uscl.losses import enqueue, masked_cross_entropy, moco_infonce
from uscl.pretrain.methods import PretrainMethod, StepInputs, StepLosses, register_method
from uscl.utils import dist
from uscl.utils.seed import derive_seed, make_generator


@register_method
class MoCo(PretrainMethod):
    name = "moco"
    summary = "MoCo v2: momentum key encoder + a queue of negatives, one frame per video"
    sampling_mode = "simclr"
    mixes = False
    # MoCo v2's: RandomResizedCrop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8 (our jitter
    # strength s = 0.5). Its grayscale (p = 0.2) does nothing to grey ultrasound; its Gaussian blur is not here.
    augment_defaults = {"scale": (0.2, 1.0), "jitter_s": 0.5, "jitter_p": 0.8}

    def __init__(self, *, queue_size: int = 1024, momentum: float = 0.99, seed: int = 0, **kw):
        super().__init__(**kw)
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.seed = int(seed)
        self.key_encoder: nn.Module | None = None
        self.queue: torch.Tensor | None = None
        self.pointer = 0
        self._keys: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's keys, enqueued after it

    @classmethod
    def from_config(cls, cfg: Any, *, supervised: bool) -> "MoCo":
        return cls(queue_size=cfg.moco.queue_size, momentum=cfg.moco.momentum, seed=cfg.seed,
                   temperature=cfg.moco.temperature, cosine=True, lambda_sup=cfg.loss.lambda_sup,
                   mixup=cfg.mixup, supervised=supervised)

    def describe(self) -> str:
        return f"{self.name} (queue {self.queue_size}, momentum {self.momentum}, temperature {self.temperature})"

    def setup(self, model: nn.Module, device: torch.device) -> None:
        model = unwrap_model(model)
        self.key_encoder = copy.deepcopy(model).to(device)
        for p in self.key_encoder.parameters():
            p.requires_grad_(False)
        g = make_generator(derive_seed(self.seed, "moco-queue"))
        queue = torch.randn(self.queue_size, model.out_dim, generator=g)
        self.queue = nn.functional.normalize(queue, dim=1).to(device)
        self.pointer = 0

    def loss(self, model: nn.Module, inputs: StepInputs, *, distributed: bool = False) -> StepLosses:
        view1, view2, labels = inputs.view1, inputs.view2, inputs.labels
        n = view1.shape[0]
        _, q, logits = model(torch.cat([view1, view2], 0))
        with torch.no_grad():
            self.key_encoder.train(model.training)
            _, k, _ = self.key_encoder(torch.cat([view1, view2], 0))
        contrastive = 0.5 * (moco_infonce(q[:n], k[n:], self.queue, self.temperature)
                             + moco_infonce(q[n:], k[:n], self.queue, self.temperature))
        self._keys = (k[:n].detach(), k[n:].detach())
        labelled = torch.zeros((), dtype=torch.int64, device=view1.device)
        sup = torch.zeros((), device=contrastive.device)
        if self.supervised and logits is not None:
            ce1, labelled = masked_cross_entropy(logits[:n], labels, distributed=distributed)
            ce2, _ = masked_cross_entropy(logits[n:], labels, distributed=distributed)
            sup = self.lambda_sup * (ce1 + ce2)
        return StepLosses(contrastive + sup, contrastive, sup, labelled)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """Momentum update of the key encoder, then the global batch's keys into the queue."""
        online = unwrap_model(model)
        for pk, pq in zip(self.key_encoder.parameters(), online.parameters()):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)
        for bk, bq in zip(self.key_encoder.buffers(), online.buffers()):
            bk.copy_(bq)
        if self._keys is not None:  # global batch order: every item's first-view key, then the second's
            keys = torch.cat([dist.all_gather_cat(k) for k in self._keys], 0)
            self.pointer = enqueue(self.queue, self.pointer, keys)
            self._keys = None

    def validation_loss(self, model: nn.Module, inputs: StepInputs) -> torch.Tensor:
        """InfoNCE of each view's query against the other's key and the current queue."""
        view1, view2 = inputs.view1, inputs.view2
        n = view1.shape[0]
        _, q, _ = model(torch.cat([view1, view2], 0))
        self.key_encoder.eval()
        _, k, _ = self.key_encoder(torch.cat([view1, view2], 0))
        return 0.5 * (moco_infonce(q[:n], k[n:], self.queue, self.temperature)
                      + moco_infonce(q[n:], k[:n], self.queue, self.temperature))

    def state_dict(self) -> dict[str, Any]:
        return {"key_encoder": self.key_encoder.state_dict(), "queue": self.queue.clone(),
                "pointer": torch.tensor(self.pointer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.key_encoder.load_state_dict(state["key_encoder"])
        self.queue.copy_(state["queue"])
        self.pointer = int(state["pointer"])


@register_method
class MoCoSPG(MoCo):
    name = "moco-spg"
    summary = "MoCo v2 on USCL's sample pairs: SPG + mixup views, supervised term, a queue of negatives"
    sampling_mode = "spg"
    mixes = True
    wants_labels = True
    augment_defaults = {}  # USCL's augmentation: the row measures what the queue adds to USCL
