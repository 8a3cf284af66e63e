"""Seeding: one call for the global RNGs, worker seeding, and explicit generators.

Anything that must be reproducible (frame draws, shuffling, augmentation)
takes an explicit seed or ``torch.Generator`` rather than relying on global
state, so results do not depend on the number of loader workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and all CUDA devices) global RNGs."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: derive NumPy/Python seeds from the worker's torch seed.

    torch already gives each worker ``base_seed + worker_id`` (base_seed drawn
    from the loader's generator); without this, NumPy's global RNG would be a
    copy of the parent's in every forked worker.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_generator(seed: int, device: str | torch.device | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    gen.manual_seed(int(seed) % 2**64)
    return gen


def derive_seed(seed: int, purpose: str, *ids: int | str) -> int:
    """The seed for one use of a run's ``seed``: ``derive_seed(seed, "val-draws")``,
    ``derive_seed(seed, "augment", epoch, rank)``, ``derive_seed(seed, "fold", k)``.

    Every derived stream comes from here, so two purposes never share a stream by an
    accident of arithmetic (``seed + 1`` of one run is not ``seed`` of another's
    fold). A keyed hash (BLAKE2b, 8 bytes) of the seed, the purpose name and the
    ids; the same arguments give the same value on every machine and Python.
    Returns an int in [0, 2**63).
    """
    if not purpose or not isinstance(purpose, str):
        raise ValueError(f"derive_seed: purpose must be a non-empty string, got {purpose!r}")
    text = "\x1f".join([str(int(seed)), purpose, *(str(i) for i in ids)])
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=b"uscl-seed").digest()
    return int.from_bytes(digest, "little") >> 1


def derive_rng(seed: int, purpose: str, *ids: int | str) -> np.random.Generator:
    """A NumPy generator seeded with :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(seed, purpose, *ids))


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, NumPy, Python) as plain tensors and numbers, so a
    training state holding them loads with ``torch.load(weights_only=True)``."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (the CUDA states where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])
