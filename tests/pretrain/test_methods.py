"""A method is a plug-in: one defined here, in the test, trains, saves its state and resumes
through the unchanged loop, and becomes a --method choice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from uscl.checkpoint import load_train_state, load_weights
from uscl.cli import build_parser
from uscl.errors import ConfigError
from uscl.pretrain import (PretrainConfig, PretrainMethod, StepLosses, pretrain, register_method, resume_config,
                           unregister_method, validate_config)
from uscl.pretrain.config import DatasetConfig


class Killed(Exception):
    pass


class CosinePairs(PretrainMethod):
    """Toy: pull the two views' projections together (1 - cosine), count its steps as state."""

    name = "toy-cosine"
    sampling_mode = "simclr"
    mixes = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.steps = torch.zeros((), dtype=torch.int64)

    def loss(self, model, inputs, *, distributed=False):
        n = inputs.view1.shape[0]
        _, z, _ = model(torch.cat(inputs.views, 0))
        loss = 1 - F.cosine_similarity(z[:n], z[n:]).mean()
        zero = torch.zeros((), device=loss.device)
        return StepLosses(loss, loss, zero, torch.zeros((), dtype=torch.int64))

    def after_step(self, model):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps.clone()}

    def load_state_dict(self, state):
        self.steps = state["steps"].clone()


@pytest.fixture
def toy_method():
    register_method(CosinePairs)
    yield CosinePairs
    unregister_method(CosinePairs.name)


def cfg(store, out, **kw):
    base = dict(store=str(store), out=str(out), method="toy-cosine", epochs=2, batch_size=4, device="cpu",
                dataset=DatasetConfig(image_size=32, valid_size=0.25))
    return PretrainConfig(**{**base, **kw})


def test_a_method_defined_in_a_test_trains_and_resumes_without_touching_the_loop(toy_method, make_store, tmp_path):
    store = make_store(n_videos=8, frames=4, size=32)
    straight = pretrain(cfg(store, tmp_path / "straight"))
    assert [r["epoch"] for r in straight.metrics] == [1, 2]
    state = load_train_state(straight.run_dir / "train_state.pt")
    steps_per_epoch = 1  # 6 training videos, batch 4, drop_last
    assert int(state["method_state"]["steps"]) == 2 * steps_per_epoch
    assert validate_config(cfg(store, tmp_path / "x", mixup=True)).mixup is False  # the method does not mix

    def kill_after_first(row):
        if row["epoch"] == 1:
            raise Killed()

    with pytest.raises(Killed):
        pretrain(cfg(store, tmp_path / "killed"), on_epoch_end=kill_after_first)
    resumed = pretrain(resume_config(tmp_path / "killed"))
    assert int(load_train_state(resumed.run_dir / "train_state.pt")["method_state"]["steps"]) == 2
    a, _ = load_weights(straight.last_path)
    b, _ = load_weights(resumed.last_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_registered_methods_are_the_cli_choices(toy_method):
    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "pretrain" in a.choices)
    method = next(a for a in sub.choices["pretrain"]._actions if a.dest == "method")
    assert "toy-cosine" in method.choices and "uscl" in method.choices


def test_an_unknown_method_is_named():
    with pytest.raises(ConfigError, match="method: .byol. is not one of uscl, uscl-selfsup, uscl-multi, simclr, simclr-frames, moco, moco-spg"):
        validate_config(PretrainConfig(method="byol"))
