"""Numbers drawn from an example's key (its id, or its cluster's), never from its position.

The same example gets the same block, the same bootstrap subset and the same resampling weights
in every run, every row order and every split of the rows into shards or partitions: what a
worker draws for its own rows is what one pass over all rows draws for them.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment: 2^64 over the golden ratio
_TO_UNIT = 2.0 ** -53


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def key_hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each key (whole numbers or text), the same in every process."""
    if keys.dtype.kind in "iub":
        with np.errstate(over="ignore"):
            return _mix(keys.astype(np.uint64) + GOLDEN)
    import pandas as pd  # a fixed-key hash of any object; only for text keys

    return pd.util.hash_array(np.asarray(keys, dtype=object))


def salt(*stream: int) -> np.uint64:
    """One 64-bit value for a stream of draws, from a few small numbers (seed, subset, ...)."""
    z = np.zeros(1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for number in stream:
            z = _mix(z + np.uint64(number % (1 << 64)) + GOLDEN)
    return z[0]


def counter_uniforms(hashes: np.ndarray, stream: np.uint64, first: int, count: int
                     ) -> np.ndarray:
    """Uniforms on [0, 1): row r, column i is draw first + r of key i in this stream.

    Each key's draws are splitmix64's sequence started at (key hash XOR stream): draw d is a
    function of (stream, key, d) alone, a counter-based generator, so any subset of the keys
    in any order gets the same numbers."""
    start = hashes ^ stream
    counters = (np.arange(first, first + count, dtype=np.uint64) + np.uint64(1)) * GOLDEN
    with np.errstate(over="ignore"):
        z = _mix(counters[:, None] + start[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the `count` smallest values, in increasing order of position. With
    values drawn per key, it picks the same keys whatever their order; the smallest of a
    partition's own candidates merge into the smallest of all."""
    if count >= len(values):
        return np.arange(len(values))
    return np.sort(np.argpartition(values, count - 1)[:count])


def pair_sum(keys: np.ndarray, values: np.ndarray, stream: np.uint64) -> int:
    """The sum, modulo 2^64, of a 64-bit hash of each (key, whole-number value) pair in this
    stream: the same for the same pairs in any order, the sums of a set's parts add up to
    the set's, and two sets of pairs that differ get the same sum by chance about once in
    2^64."""
    z = key_hash(keys) ^ stream
    with np.errstate(over="ignore"):
        z = _mix(_mix(z) + np.asarray(values).astype(np.uint64))
    return int(z.sum(dtype=np.uint64))
