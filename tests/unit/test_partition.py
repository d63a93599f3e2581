"""Block partitioning used by scatter and map."""

import numpy as np
import pytest

from ipcluster.client.partition import block_bounds, partition, partition_many


@pytest.mark.parametrize("n,parts", [(0, 1), (1, 3), (10, 3), (7, 7), (100, 8), (5, 2)])
def test_block_bounds_cover_range_with_balanced_sizes(n, parts):
    bounds = block_bounds(n, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_block_bounds_rejects_zero_parts():
    with pytest.raises(ValueError, match="at least one part"):
        block_bounds(3, 0)


def test_partition_list_and_generator():
    assert partition([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert partition((x for x in range(4)), 2) == [[0, 1], [2, 3]]
    assert partition(range(3), 2) == [range(0, 2), range(2, 3)]


def test_partition_numpy_gives_views_not_copies():
    a = np.arange(10.0)
    parts = partition(a, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert all(np.shares_memory(p, a) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), a)


def test_partition_many_same_split_and_length_check():
    assert partition_many([[1, 2, 3], "abc"], 2) == [([1, 2], "ab"), ([3], "c")]
    with pytest.raises(ValueError, match="different lengths"):
        partition_many([[1, 2], [1]], 2)
