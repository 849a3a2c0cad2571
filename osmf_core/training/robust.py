"""Group-robust weights of Group-DPO's loss (its `robust` option, osmf_core.training.dpo): exponentiated-gradient
weights over (product, group) keys, so that the groups with the highest loss count more in the next batches."""
from __future__ import annotations

import numpy as np
import torch


class GroupWeights:
    """Exponentiated-gradient weights over groups: alpha_g <- alpha_g exp(eta * loss_g), normalised."""

    def __init__(self, keys, eta: float):
        self.keys = {k: i for i, k in enumerate(sorted(set(keys)))}
        self.log_alpha = np.zeros(len(self.keys))
        self.eta = eta
        self.pending = []  # (keys, losses on their way to the CPU, the event after their copy)

    def batch_weights(self, keys) -> np.ndarray:
        """Weights of a batch's rows (sum 1): each row carries its group's alpha, every observed batch counted."""
        self.settle()
        a = np.exp(self.log_alpha[[self.keys[k] for k in keys]])
        return a / a.sum()

    def observe(self, keys, losses: torch.Tensor) -> None:
        """A batch's per-row losses, for the update before the next weights are read. From a GPU they are copied
        to pinned memory without waiting: reading them now would hold the CPU until the forward pass ends, before
        it could queue the backward pass; by the next batch's weights they have long arrived."""
        losses = losses.detach()
        if losses.device.type != "cuda":
            self.pending.append((list(keys), losses.clone(), None))
            return
        host = torch.empty(losses.shape, dtype=losses.dtype, pin_memory=True)
        host.copy_(losses, non_blocking=True)
        arrived = torch.cuda.Event()
        arrived.record()
        self.pending.append((list(keys), host, arrived))

    def settle(self) -> None:
        """Apply the observed batches' losses, in the order observed."""
        for keys, losses, arrived in self.pending:
            if arrived is not None:
                arrived.synchronize()
            self.update(keys, losses.float().numpy())
        self.pending.clear()

    def update(self, keys, losses: np.ndarray) -> None:
        idx = np.array([self.keys[k] for k in keys])
        for g in np.unique(idx):
            self.log_alpha[g] += self.eta * float(losses[idx == g].mean())
        self.log_alpha -= self.log_alpha.max()

    def alpha(self) -> np.ndarray:
        self.settle()
        a = np.exp(self.log_alpha)
        return a / a.sum()
