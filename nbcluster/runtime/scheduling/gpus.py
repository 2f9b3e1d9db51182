"""Which of a node's GPUs a worker gets, and how much of each, as Ray assigns them.

A request for a fraction of a GPU (``num_gpus=0.5``) is served from one device that still
has that much free, so two half-GPU tasks share device 0 (both see
``CUDA_VISIBLE_DEVICES=0``). Fractions are packed onto the device with the least room left
that fits them, which keeps whole devices free for whole-GPU requests. A request above one
GPU must be a whole number of them and takes that many entirely free devices.
"""

from __future__ import annotations

#: Amounts closer than this are equal (fractions add up in binary floating point).
EPS = 1e-9


def check_amount(amount: float) -> None:
    """Refuse a GPU request no node could ever serve the same way twice."""
    if amount < 0:
        raise ValueError(f"num_gpus must be a non-negative number, got {amount!r}")
    if amount > 1 and abs(amount - round(amount)) > EPS:
        raise ValueError(
            f"num_gpus above 1 must be a whole number of GPUs, got {amount!r} "
            "(fractions share one GPU: use a value below 1)"
        )


class GpuSlots:
    """The free fraction of each GPU of a node."""

    def __init__(self, count: int) -> None:
        self.free = [1.0] * count

    def fits(self, amount: float) -> bool:
        return self._pick(amount) is not None

    def take(self, amount: float) -> dict[int, float]:
        """Device id -> the fraction of it taken; empty for a request of no GPU."""
        picked = self._pick(amount)
        if picked is None:
            raise ValueError(f"no GPU has {amount} free: {self.free}")
        for gpu, part in picked.items():
            self.free[gpu] -= part
        return picked

    def give_back(self, taken: dict[int, float]) -> None:
        for gpu, part in taken.items():
            self.free[gpu] = min(1.0, self.free[gpu] + part)

    def _pick(self, amount: float) -> dict[int, float] | None:
        if amount <= EPS:
            return {}
        if amount <= 1 + EPS:  # one device: the fullest one that still fits
            fitting = [g for g, free in enumerate(self.free) if free >= amount - EPS]
            if not fitting:
                return None
            gpu = min(fitting, key=lambda g: (self.free[g], g))
            return {gpu: min(amount, 1.0)}
        whole = [g for g, free in enumerate(self.free) if free >= 1.0 - EPS]
        need = round(amount)
        return dict.fromkeys(whole[:need], 1.0) if len(whole) >= need else None
