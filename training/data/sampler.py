"""Modality-balanced, DDP-aware, reproducible epoch sampler.

Each epoch draws N_s samples from every modality (see :func:`samples_per_modality`) (without replacement while the
modality has enough, with whole extra permutations when it has fewer), shuffles
them together, pads to a multiple of the number of ranks and gives rank r every
``world``-th sample starting at r, so the ranks' shares are disjoint and
together cover the epoch.  The draw depends only on (seed, epoch).
"""
from __future__ import annotations

import numpy as np


def samples_per_modality(sizes: dict[str, int], policy: str | int = "min") -> dict[str, int]:
    """Samples drawn per modality and epoch.

    'min': N_s = the smallest modality's size for every modality (default);
    'tenth': max(N_m / 10, smallest size) for modality m (large modalities get more);
    a number: that many for every modality.
    """
    smallest = min(sizes.values())
    if isinstance(policy, int) or str(policy).isdigit():
        return {m: int(policy) for m in sizes}
    if policy == "min":
        return {m: smallest for m in sizes}
    if policy == "tenth":
        return {m: max(n // 10, smallest) for m, n in sizes.items()}
    raise ValueError(f"unknown N_s policy {policy!r} (min, tenth, or a number)")


class BalancedSampler:
    def __init__(self, groups: dict[str, np.ndarray], counts: dict[str, int], seed: int = 0,
                 rank: int = 0, world: int = 1):
        if not groups or any(len(v) == 0 for v in groups.values()):
            raise ValueError("every modality needs at least one sample")
        self.groups = {k: np.asarray(v, np.int64) for k, v in sorted(groups.items())}
        self.counts = {k: int(counts[k]) for k in self.groups}
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_samples(self) -> np.ndarray:
        """The whole epoch (all ranks), before sharding."""
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = []
        for name, ids in self.groups.items():
            n = self.counts[name]
            reps = -(-n // len(ids))
            pool = np.concatenate([rng.permutation(ids) for _ in range(reps)])
            drawn.append(pool[:n])
        epoch = rng.permutation(np.concatenate(drawn))
        pad = (-len(epoch)) % self.world
        return np.concatenate([epoch, epoch[:pad]])

    def __iter__(self):
        return iter(self.epoch_samples()[self.rank::self.world].tolist())

    def __len__(self) -> int:
        total = sum(self.counts.values())
        return -(-total // self.world)
