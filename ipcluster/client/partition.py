"""Block partitioning of sequences over engines (scatter, map), pure functions."""

from __future__ import annotations

from typing import Any, Sequence


def block_bounds(n_items: int, n_parts: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of *n_parts* contiguous blocks covering ``range(n_items)``.

    Sizes differ by at most one; the first ``n_items % n_parts`` blocks get the extra item.
    """
    if n_parts < 1:
        raise ValueError(f"need at least one part, got {n_parts}")
    base, extra = divmod(n_items, n_parts)
    bounds = []
    start = 0
    for i in range(n_parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def as_sliceable(seq: Any) -> Any:
    """*seq* itself if it supports ``len`` and slicing (list, tuple, range, str, NumPy array), else a list."""
    if hasattr(seq, "__len__") and hasattr(seq, "__getitem__") and not isinstance(seq, dict):
        return seq
    return list(seq)


def partition(seq: Any, n_parts: int) -> list[Any]:
    """Split *seq* into *n_parts* contiguous blocks (NumPy arrays are split into views, no copy)."""
    seq = as_sliceable(seq)
    return [seq[a:b] for a, b in block_bounds(len(seq), n_parts)]


def partition_many(seqs: Sequence[Any], n_parts: int) -> list[tuple[Any, ...]]:
    """Partition several equally long sequences the same way: one tuple of blocks per part."""
    seqs = [as_sliceable(s) for s in seqs]
    lengths = {len(s) for s in seqs}
    if len(lengths) > 1:
        raise ValueError(f"sequences have different lengths: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    return [tuple(s[a:b] for s in seqs) for a, b in block_bounds(n, n_parts)]
