"""Spreading untagged spend over the tagged groups in proportion to their own spend, to the exact nano-USD."""

from __future__ import annotations

from collections.abc import Sequence


def proportional(amount: int, weights: Sequence[int]) -> list[int]:
    """Split ``amount`` nano-USD in proportion to ``weights`` so the parts add up to ``amount`` exactly.

    Largest-remainder method: each part gets the floor of its exact share, and the nanos left over go one each to
    the parts with the largest remainders (ties to the earlier part). All weights 0: nothing can be allocated.
    """
    total = sum(weights)
    if total <= 0 or amount == 0:
        return [0] * len(weights)
    floors = [amount * w // total for w in weights]
    remainders = [amount * w % total for w in weights]
    left = amount - sum(floors)
    for index in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        floors[index] += 1
    return floors
