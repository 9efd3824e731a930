"""Exact medians of positive floats fed chunk by chunk, in memory that does not grow with the number of values.

The evaluation streams videos (evaluation/video_stream.py), but three of its numbers are medians over a whole video:
the sequence normalisation of OPW (median over every pixel of every frame), the "median" alignment (median of GT
and of depth over all valid pixels) and the static mask (per-pixel temporal median of GT). `GroupedMedian` finds
them exactly, by radix selection on the floats' bits: for positive finite IEEE floats the unsigned integer with
the same bits orders exactly as the floats do, so the k-th smallest value is fixed digit by digit. Each pass over
the data histograms the next `digit_bits` bits of the values whose higher bits match the digits found so far; the
bucket holding rank k is the next digit. A float32 takes 32 bits (2 passes for one group, 16-bit digits), a float64
64. The result is the value `np.median` returns (the mean of the two middle values for an even count) bit for bit,
not an approximation; its memory is groups × 2^digit_bits bins (at most MAX_BINS: more groups take narrower
digits, so more passes), independent of the number of values. When each group's range is known (`bounds`, e.g.
from a pass that took per-pixel min and max), keys are taken relative to the group's minimum, so only the bits in
which its values can differ need passes: a few for values within a few percent of each other.
"""

from __future__ import annotations

import math

import numpy as np

from steadydepth.errors import InputError

MAX_BINS = 1 << 20  # histogram bins per pass over all groups (8 MiB of int64 counts): more groups, more passes
_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


class GroupedMedian:
    """Exact median of each of `n_groups` groups of positive finite values, over several passes of the same data.

    Per pass: `add(values, groups)` for every chunk, then `end_pass()`, which says whether another pass is needed
    (the same values, in any order and chunking). Then `median()` and, with `abs_deviation=True`,
    `mean_abs_deviation()` (mean |x − median| per group, from per-bucket sums: no extra pass). The first chunk's
    dtype sets the precision: float32 values take 32-bit keys, anything else is compared as float64. bounds:
    (min, max) of each group's values, (G,) arrays, if known; every value must lie within its group's bounds.
    """

    def __init__(
        self, n_groups: int, *, abs_deviation: bool = False, bounds: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        if n_groups < 1:
            raise InputError(f"GroupedMedian needs at least one group, not {n_groups}")
        self.n_groups = int(n_groups)
        self.dtype: np.dtype | None = None  # set by the first chunk
        self.digit_bits = max(1, min(16, int(math.log2(MAX_BINS / self.n_groups))))
        self.bits_total = self.high_bit = 64  # the current digit is bits [low_bit, high_bit) of the key
        self.prefix = np.zeros((2, self.n_groups), dtype=np.uint64)  # digits found so far: lower, upper middle
        self.rank: np.ndarray | None = None  # (2, G) rank of each middle value among the values matching prefix
        self.count: np.ndarray | None = None  # (G,) values per group (known after the first pass)
        self.abs_deviation = abs_deviation
        # values below / at / above the lower middle value: counts and sums (for the mean absolute deviation)
        self.below_count, self.below_sum = np.zeros(self.n_groups), np.zeros(self.n_groups)
        self.above_count, self.above_sum = np.zeros(self.n_groups), np.zeros(self.n_groups)
        self.equal_count = np.zeros(self.n_groups)
        self.done = False
        self._bounds = bounds
        self._base: np.ndarray | None = None  # (G,) key of each group's minimum, with bounds
        self._start_pass()

    @property
    def low_bit(self) -> int:
        return max(0, self.high_bit - self.digit_bits)

    def _start_pass(self) -> None:
        bins = self.n_groups << (self.high_bit - self.low_bit)
        self._hist = np.zeros((2, bins), dtype=np.int64)
        self._sums = np.zeros(bins) if self.abs_deviation else None

    def add(self, values: np.ndarray, groups: np.ndarray | None = None) -> None:
        """One chunk of the current pass: values (any shape, positive and finite) and their group ids (same
        shape, 0..n_groups−1; None: all group 0)."""
        if self.done:
            raise InputError("GroupedMedian is complete; read median() instead of adding more values")
        values = np.asarray(values)
        if self.dtype is None:
            self._set_dtype(values.dtype)
        elif self.dtype == np.float32 and values.dtype != np.float32:
            raise InputError(f"GroupedMedian of float32 values got {values.dtype} values; pass one dtype throughout")
        x = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        g = np.zeros(x.shape, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
        keys = self._keys(x)
        if self._base is not None:
            keys -= self._base[g]
        width = self.high_bit - self.low_bit
        digit = ((keys >> np.uint64(self.low_bit)) & np.uint64((1 << width) - 1)).astype(np.int64)
        bins = g * (1 << width) + digit
        match = self._matching(keys, g, 0)
        counts = np.bincount(bins[match], minlength=self._hist.shape[1])
        self._hist[0] += counts
        if self._sums is not None:
            self._sums += np.bincount(bins[match], weights=x[match].astype(np.float64), minlength=len(self._sums))
        if self.rank is not None and not np.array_equal(self.prefix[0], self.prefix[1]):
            counts = np.bincount(bins[self._matching(keys, g, 1)], minlength=self._hist.shape[1])
        self._hist[1] += counts  # while both middle values share their digits, one histogram serves both

    def _keys(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=self.dtype).view(_UINT[self.dtype]).astype(np.uint64)

    def _set_dtype(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(np.float32 if dtype == np.float32 else np.float64)
        self.bits_total = 8 * self.dtype.itemsize
        if self._bounds is not None:
            low, high = (self._keys(np.asarray(b)) for b in self._bounds)
            self._base = low
            self.bits_total = max(1, int((high - low).max(initial=0)).bit_length())
        self.high_bit = self.bits_total
        self._start_pass()  # nothing counted yet: the first digit may be narrower now

    def _matching(self, keys: np.ndarray, g: np.ndarray, j: int) -> np.ndarray:
        """Which values have the digits found so far for middle value j (all of them in the first pass)."""
        if self.high_bit == self.bits_total:
            return np.ones(keys.shape, dtype=bool)
        return (keys >> np.uint64(self.high_bit)) == self.prefix[j][g]

    def end_pass(self) -> bool:
        """Fix the next digit of each middle value; True when the medians are complete."""
        if self.dtype is None:  # no values at all: every group is empty
            self._set_dtype(np.dtype(np.float64))
        width = self.high_bit - self.low_bit
        hist = self._hist.reshape(2, self.n_groups, 1 << width)
        if self.rank is None:
            self.count = hist[0].sum(axis=1)
            self.rank = np.stack([(self.count - 1) // 2, self.count // 2]).clip(min=0)
        sums = None if self._sums is None else self._sums.reshape(self.n_groups, 1 << width)
        for j in (0, 1):
            cum = np.cumsum(hist[j], axis=1)
            bucket = np.minimum((cum <= self.rank[j][:, None]).sum(axis=1), (1 << width) - 1)
            rows = np.arange(self.n_groups)
            before = cum[rows, bucket] - hist[j][rows, bucket]
            if j == 0:
                self._tally(hist[0], sums, bucket)
            self.rank[j] -= before
            self.prefix[j] = (self.prefix[j] << np.uint64(width)) | bucket.astype(np.uint64)
        self.high_bit = self.low_bit
        self.done = self.high_bit == 0
        if not self.done:
            self._start_pass()
        return self.done

    def _tally(self, hist: np.ndarray, sums: np.ndarray | None, bucket: np.ndarray) -> None:
        """Count (and sum) the values below and above the lower middle value's bucket: they are settled."""
        idx = np.arange(hist.shape[1])[None, :]
        lower, upper = idx < bucket[:, None], idx > bucket[:, None]
        self.below_count += (hist * lower).sum(axis=1)
        self.above_count += (hist * upper).sum(axis=1)
        if sums is not None:
            self.below_sum += (sums * lower).sum(axis=1)
            self.above_sum += (sums * upper).sum(axis=1)
        if self.low_bit == 0:  # the last digit: the bucket holds copies of the lower middle value only
            self.equal_count = hist[np.arange(len(bucket)), bucket].astype(np.float64)

    def _values(self, j: int) -> np.ndarray:
        keys = self.prefix[j] if self._base is None else self.prefix[j] + self._base
        return keys.astype(_UINT[self.dtype]).view(self.dtype).astype(np.float64)

    def median(self) -> np.ndarray:
        """(G,) float64 medians; NaN for a group without values."""
        if not self.done:
            raise InputError("GroupedMedian needs more passes: call end_pass() until it returns True")
        med = (self._values(0) + self._values(1)) / 2  # as np.median: the mean of the two middle values
        return np.where(self.count > 0, med, np.nan)

    def mean_abs_deviation(self) -> np.ndarray:
        """(G,) mean |x − median| per group (constructed with abs_deviation=True); NaN for an empty group."""
        if not self.abs_deviation:
            raise InputError("GroupedMedian was made without abs_deviation=True")
        med, low = self.median(), self._values(0)
        # below the lower middle value: med − x; at it: med − low (>= 0); above it all values are >= med: x − med
        below = self.below_count * med - self.below_sum
        above = self.above_sum - self.above_count * med
        total = below + self.equal_count * (med - low) + above
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, total / np.maximum(self.count, 1), np.nan)
