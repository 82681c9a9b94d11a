"""``RNGState``: the random state of every generator (torch, numpy, python; CUDA when present) at
the moment a checkpoint is written, restored when a fit resumes from it.

Masking, the shuffled data order and dropout all draw from these, so a run resumed from an
end-of-epoch checkpoint draws exactly what the uninterrupted run drew. (Lightning restores weights,
optimiser, schedulers and loop counters, but not random state.) Under DDP every rank draws its own
masks and dropout, so the checkpoint holds every rank's state and each rank gets its own back.
Every ``BertTask`` adds it (``configure_callbacks``), so it lives with the models, below the callbacks;
``lightning_ssb.callbacks.resume`` and ``lightning_ssb.callbacks`` re-export it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RNGState(Callback):
    """Save the random state of every process with every checkpoint; restore each process's own when a fit
    resumes from one."""

    def state_dict(self) -> dict:
        # Lightning's own helpers (lightning.fabric.utilities.seed), the ones its process launcher uses;
        # numpy's key array travels as a tensor, so the checkpoint still loads with weights_only=True
        states = _collect_rng_states(include_cuda=True)
        name, key, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss)
        per_rank = [states]
        if _distributed():
            # every rank builds the checkpoint (rank 0 writes it), so this gather is collective like the save
            per_rank = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, states)
        return {"rng": per_rank[0], "rng_per_rank": per_rank}

    def load_state_dict(self, state_dict: dict) -> None:
        # restored at once: a resumed fit creates the training data loader's iterator (which draws its
        # worker base seed) before on_train_start, while the uninterrupted run does so after the
        # checkpoint; between loading and that point nothing else draws (tests/test_end_to_end.py)
        per_rank = state_dict.get("rng_per_rank") or [state_dict.get("rng")]  # older checkpoints: rank 0's only
        rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
        if len(per_rank) != world:
            rank_zero_warn(f"RNGState: the checkpoint holds the random state of {len(per_rank)} process(es), this "
                           f"fit runs {world}: masks, data order and dropout will not repeat the uninterrupted run")
        states = per_rank[rank] if rank < len(per_rank) else per_rank[0]
        if states is not None:
            name, key, pos, has_gauss, gauss = states["numpy"]
            _set_rng_states({**states, "numpy": (name, key.numpy().astype(np.uint32), pos, has_gauss, gauss)})
