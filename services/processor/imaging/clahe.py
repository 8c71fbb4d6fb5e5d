"""Contrast Limited Adaptive Histogram Equalisation (Zuiderveld, Graphics Gems IV, 1994) in any
number of dimensions, in bounded memory.

The maths is scikit-image's ``equalize_adapthist`` (0.26), step for step, so that the result is
the same to the last quantisation level:

1. values in 0..1 become uint16 levels ``rint(65535 u)``, then 2**14 grey levels by a linear
   stretch of their own min..max (rounded half to even), then ``nbins`` bins of
   ``1 + 2**14 // nbins`` levels each;
2. the contextual regions are the tiles of ``kernel`` voxels starting at index 0 of every axis;
   the last tile of an axis reaches past its end into the axis mirrored without repeating the
   edge voxel (numpy's "reflect");
3. each region's histogram is clipped at ``max(1, int(clip_limit * voxels))`` (no clipping for
   ``clip_limit <= 0``) and the excess handed back: evenly, then one by one over the bins below
   the limit at a stride that spreads it over the histogram, sweep after sweep;
4. each map is the cumulative histogram times ``(2**14 - 1) / voxels``, at most 2**14 - 1,
   truncated to an integer;
5. a voxel at ``i`` along an axis lies ``(i + k // 2) % k`` voxels into the cell between the
   regions ``(i + k // 2) // k - 1`` and ``(i + k // 2) // k`` (clamped to the first and last):
   its level is the sum over the 2**ndim corner regions of map value x weight, the weight being
   the product of the per-axis weights ``c / k`` or ``1 - c / k`` multiplied from the last axis
   to the first in float64, each term rounded to float32 and summed in float32 in corner order,
   the sum truncated to an integer;
6. the levels are stretched from their min..max onto 0..1.

The structure is ours: the whole volume is never padded or copied in float64; the quantised bins
are one uint8 (or uint16) array, the histograms are counted one row of regions at a time with one
``bincount`` over ``region * nbins + bin``, the clipping is done on all histograms of a row at
once, the maps are uint16, and the interpolation runs over slabs of the first axis into the
float32 result. Peak memory: the float32 result, the bins, and a few slabs of working arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import pairwise, product

import numpy as np

GREY_LEVELS = 2**14  # levels of the maps (scikit-image's NR_OF_GRAY)
UINT16_TOP = 65535
# Voxels per slab of every pass (float64 working arrays of 4 MiB).
SLAB_VALUES = 1 << 19


def kernel_shape(shape: Sequence[int], kernel_size: int | Sequence[int] | None) -> tuple[int, ...]:
    """The contextual region's side per axis: 1/8 of each axis (at least 1) by default, an int for
    every axis, or one value per axis."""
    if kernel_size is None:
        return tuple(max(n // 8, 1) for n in shape)
    if isinstance(kernel_size, (int, np.integer)):
        sizes: tuple[int, ...] = (int(kernel_size),) * len(shape)
    else:
        sizes = tuple(int(k) for k in kernel_size)
        if len(sizes) != len(shape):
            raise ValueError(f"kernel_size needs one value per axis ({len(shape)}), got {len(sizes)}")
    if min(sizes, default=1) < 1:
        raise ValueError("kernel_size must be at least 1 along every axis")
    return sizes


def _row_slabs(start: int, stop: int, row_values: int, total: int) -> Iterator[tuple[int, int]]:
    """[start, stop) of the first axis in runs of at most SLAB_VALUES values and 1/16 of the
    `total` (at least one row): the working arrays stay small beside the image, however small."""
    step = max(1, min(SLAB_VALUES, total // 16) // max(row_values, 1))
    for a in range(start, stop, step):
        yield a, min(a + step, stop)


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """Min and max of the finite values (None when there are none), slab by slab: no copy."""
    lo, hi = math.inf, -math.inf
    row = math.prod(values.shape[1:])
    for a, b in _row_slabs(0, values.shape[0], row, values.size):
        part = values[a:b]
        if part.dtype.kind == "f":
            finite = np.isfinite(part)
            if not finite.all():
                part = part[finite]
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    return None if lo > hi else (lo, hi)


def unit_uint16(values: np.ndarray, lo: float = 0.0, span: float = 0.0) -> np.ndarray:
    """uint16 ``rint(65535 u)`` of ``u = (x - lo) / span`` (``x - lo`` when span is 0) computed in
    float64 slab by slab, NaN and -inf as 0, +inf as 1: the grey image mapped onto 0..1 and then
    converted to uint16 as scikit-image converts a float image. With lo 0 and span 0, values
    already in 0..1 are converted as they are."""
    out = np.empty(values.shape, np.uint16)
    row = math.prod(values.shape[1:])
    buffer = np.empty(max(row, min(SLAB_VALUES, values.size // 16)), np.float64)
    for a, b in _row_slabs(0, values.shape[0], row, values.size):
        x = buffer[: (b - a) * row].reshape((b - a,) + values.shape[1:])
        x[...] = values[a:b]
        x -= lo
        if span > 0:
            x /= span
        np.nan_to_num(x, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        x *= float(UINT16_TOP)
        np.rint(x, out=x)
        np.clip(x, 0.0, float(UINT16_TOP), out=x)
        out[a:b] = x
    return out


def bin_table(u_min: int, u_max: int, nbins: int) -> np.ndarray:
    """The histogram bin of every uint16 level: stretched from u_min..u_max onto 0..2**14 - 1 in
    float64, rounded half to even, then divided (integer) by the bin width."""
    u = np.arange(UINT16_TOP + 1, dtype=np.float64)
    if u_max > u_min:
        np.clip(u, u_min, u_max, out=u)
        levels = (u - u_min) / (u_max - u_min) * float(GREY_LEVELS - 1)
    else:  # one level only: kept as it is, within the range
        levels = np.clip(u, 0.0, float(GREY_LEVELS - 1))
    levels = np.round(levels).astype(np.int64)
    width = 1 + GREY_LEVELS // nbins
    return (levels // width).astype(np.uint8 if nbins <= 256 else np.uint16)


def bins_of(levels: np.ndarray, nbins: int) -> np.ndarray:
    """The histogram bin of every voxel of a uint16 image (a new C-ordered array)."""
    table = bin_table(int(levels.min()), int(levels.max()), nbins)
    out = np.empty(levels.shape, table.dtype)
    row = math.prod(levels.shape[1:])
    for a, b in _row_slabs(0, levels.shape[0], row, levels.size):
        np.take(table, levels[a:b], out=out[a:b])
    return out


def region_count(length: int, kernel: int) -> int:
    """Contextual regions along an axis: whole tiles covering it."""
    return -(-length // kernel)


def tile_sources(length: int, kernel: int) -> np.ndarray:
    """For every position of the tiles covering an axis (0 .. regions * kernel - 1), the index it
    reads: itself inside the axis, mirrored past its end (numpy's "reflect" padding, laid as
    scikit-image lays it: half a kernel before, the rest after)."""
    regions = region_count(length, kernel)
    before = kernel // 2
    after = (kernel - length % kernel) % kernel + -(-kernel // 2)
    padded = np.pad(np.arange(length), (before, after), mode="reflect")
    return padded[before : before + regions * kernel]


def clip_histograms(hist: np.ndarray, limit: int) -> np.ndarray:
    """Histograms (one per row, int64) clipped at ``limit`` with their excess handed back, in place.

    The excess is first spread evenly (``excess // bins`` to each bin that stays under the limit,
    bins it would push over it filled to the limit); what remains goes one count at a time to bins
    under the limit, at a stride of (bins under the limit) // (remaining excess) from each start
    bin in turn, until none remains or a whole sweep hands out nothing."""
    nbins = hist.shape[1]
    excess = np.maximum(hist - limit, 0).sum(axis=1)
    np.minimum(hist, limit, out=hist)
    even = excess // nbins
    upper = (limit - even)[:, None]
    low = hist < upper
    excess -= low.sum(axis=1) * even
    hist += low * even[:, None]
    filled = (hist >= upper) & (hist < limit)
    excess -= np.where(filled, limit - hist, 0).sum(axis=1)
    hist[filled] = limit
    _hand_out_remainder(hist, excess, limit)
    return hist


def _hand_out_remainder(hist: np.ndarray, excess: np.ndarray, limit: int) -> None:
    """The last step of `clip_histograms`, on every histogram with excess left at once: the sweeps
    run in step, each histogram leaving as soon as its excess is gone."""
    nbins = hist.shape[1]
    position = np.arange(nbins)
    pending = np.flatnonzero(excess > 0)
    while pending.size:
        at_start = excess.copy()
        sweeping = pending
        for start in range(nbins):
            rows = hist[sweeping]
            under = rows < limit
            stride = np.maximum(1, under.sum(axis=1) // excess[sweeping])[:, None]
            offset = position - start
            hit = under & (offset >= 0) & (offset % stride == 0)
            rows += hit
            hist[sweeping] = rows
            excess[sweeping] -= hit.sum(axis=1)
            sweeping = sweeping[excess[sweeping] > 0]
            if not sweeping.size:
                break
        pending = sweeping[excess[sweeping] != at_start[sweeping]]


def maps_of(hist: np.ndarray, voxels: int) -> np.ndarray:
    """Each clipped histogram's map onto 0..2**14 - 1: cumulative count x (2**14 - 1) / voxels in
    float64, capped, truncated; uint16."""
    cumulative = np.cumsum(hist, axis=1).astype(np.float64)
    cumulative *= (GREY_LEVELS - 1) / voxels
    np.minimum(cumulative, float(GREY_LEVELS - 1), out=cumulative)
    return cumulative.astype(np.uint16)


def region_maps(bins: np.ndarray, kernel: Sequence[int], clip_limit: float, nbins: int) -> np.ndarray:
    """The map of every contextual region, uint16 of shape (regions along axis 0, regions along
    the other axes x nbins), the other axes' regions in C order. Counted one row of regions (along
    axis 0) at a time: a slab of the tiles' voxels (mirrored past the ends) at once, one
    ``bincount`` of region x nbins + bin."""
    shape = bins.shape
    regions = [region_count(n, k) for n, k in zip(shape, kernel, strict=True)]
    sources = [tile_sources(n, k) for n, k in zip(shape, kernel, strict=True)]
    rest_regions = math.prod(regions[1:])
    # region x nbins of every position of the tiles along the other axes (C order)
    rest_key = np.zeros([len(s) for s in sources[1:]], np.intp)
    for axis, (count, k) in enumerate(zip(regions[1:], kernel[1:], strict=True)):
        along = np.arange(count * k) // k
        rest_key *= count
        rest_key += along.reshape([-1 if a == axis else 1 for a in range(len(shape) - 1)])
    rest_key *= nbins
    voxels = math.prod(kernel)
    limit = max(1, int(clip_limit * voxels)) if clip_limit > 0 else voxels
    maps = np.empty((regions[0], rest_regions * nbins), np.uint16)
    row_values = rest_key.size
    for r0 in range(regions[0]):
        counts = np.zeros(rest_regions * nbins, np.int64)
        for a, b in _row_slabs(r0 * kernel[0], (r0 + 1) * kernel[0], row_values, bins.size):
            tiles = bins[sources[0][a:b]]
            for axis, source in enumerate(sources[1:], start=1):
                if len(source) != shape[axis]:  # the last tile reaches past the end
                    tiles = np.take(tiles, source, axis=axis)
            keys = np.add(tiles, rest_key, dtype=np.intp)
            counts += np.bincount(keys.reshape(-1), minlength=counts.size)
        hist = clip_histograms(counts.reshape(rest_regions, nbins), limit)
        maps[r0] = maps_of(hist, voxels).reshape(-1)
    return maps


def _axis_cells(length: int, kernel: int, regions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every index along an axis: its cell, the lower and upper neighbouring regions and their
    weights (1 - c/k and c/k, float64)."""
    shifted = np.arange(length) + kernel // 2
    cell = shifted // kernel
    upper_weight = (shifted % kernel) / kernel
    lower = np.clip(cell - 1, 0, regions - 1)
    upper = np.clip(cell, 0, regions - 1)
    return cell, np.stack([lower, upper]), np.stack([1 - upper_weight, upper_weight])


def interpolate(bins: np.ndarray, maps: np.ndarray, kernel: Sequence[int], nbins: int) -> np.ndarray:
    """The CLAHE level of every voxel (float32 holding integers 0..2**14 - 1): the maps of the
    2**ndim regions around it weighted by its place between them, slab by slab along axis 0."""
    shape, ndim = bins.shape, bins.ndim
    regions = [region_count(n, k) for n, k in zip(shape, kernel, strict=True)]
    cells, sides, weights = [], [], []
    for n, k, r in zip(shape, kernel, regions, strict=True):
        cell, side, weight = _axis_cells(n, k, r)
        cells.append(cell)
        sides.append(side)
        weights.append(weight)
    rest_shape = shape[1:]
    rest_corners = list(product((0, 1), repeat=ndim - 1))
    rest_key: dict[tuple[int, ...], np.ndarray] = {}
    rest_weight: dict[tuple[int, ...], np.ndarray] = {}
    for corner in rest_corners:
        key = np.zeros(rest_shape, np.intp)
        for axis, e in enumerate(corner, start=1):
            key *= regions[axis]
            key += sides[axis][e].reshape([-1 if a == axis else 1 for a in range(1, ndim)])
        rest_key[corner] = key * nbins
        weight: np.ndarray | float = 1.0
        for axis in range(ndim - 1, 0, -1):  # from the last axis to the second, as the reference
            along = weights[axis][corner[axis - 1]].reshape([-1 if a == axis else 1 for a in range(1, ndim)])
            weight = along if axis == ndim - 1 else weight * along
        rest_weight[corner] = np.asarray(weight, np.float64)
    flat_maps = maps.reshape(-1)
    out = np.empty(shape, np.float32)
    row = math.prod(rest_shape)
    edges = [0, *(np.flatnonzero(np.diff(cells[0])) + 1).tolist(), shape[0]]  # cells along axis 0
    slabs = [slab for start, stop in pairwise(edges) for slab in _row_slabs(start, stop, row, bins.size)]
    size = max(b - a for a, b in slabs) * row  # working arrays for the largest slab, reused
    index, taken = np.empty(size, np.intp), np.empty(size, np.uint16)
    weighted, term = np.empty(size, np.float64), np.empty(size, np.float32)
    for a, b in slabs:  # each within one cell along axis 0: one pair of regions there
        part = (b - a,) + rest_shape
        acc = out[a:b]
        for n, corner in enumerate(product((0, 1), repeat=ndim)):
            e0, rest = corner[0], corner[1:]
            slab_index, slab_taken = index[: acc.size].reshape(part), taken[: acc.size].reshape(part)
            slab_weight, slab_term = weighted[: acc.size].reshape(part), term[: acc.size].reshape(part)
            np.add(bins[a:b], rest_key[rest] + int(sides[0][e0][a]) * maps.shape[1], out=slab_index)
            np.take(flat_maps, slab_index, out=slab_taken)
            # the weight multiplied as the reference does: the other axes' product, then axis 0's
            np.multiply(rest_weight[rest], weights[0][e0][a:b].reshape((b - a,) + (1,) * (ndim - 1)),
                        out=slab_weight)
            np.multiply(slab_taken, slab_weight, out=slab_term, casting="unsafe")  # float64, rounded
            if n == 0:
                acc[...] = slab_term
            else:
                acc += slab_term  # summed in float32
        np.trunc(acc, out=acc)
    return out


def stretch_to_unit(levels: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """The levels mapped linearly from their min..max onto 0..1 (one level only: clipped to 0..1),
    float32 in place, or a new float64 array."""
    lo, hi = float(levels.min()), float(levels.max())
    out = levels if dtype == levels.dtype else levels.astype(dtype)
    if hi > lo:
        out -= lo
        out /= hi - lo
    else:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def equalize(values: np.ndarray, kernel_size: int | Sequence[int] | None = None, clip_limit: float = 0.01,
             nbins: int = 256, dtype: type = np.float32) -> np.ndarray:
    """CLAHE of ``values`` already in 0..1 (any float type), as scikit-image's
    ``equalize_adapthist(values, kernel_size, clip_limit, nbins)``: float32 by default (float64
    with ``dtype=np.float64``)."""
    kernel = kernel_shape(values.shape, kernel_size)
    bins = bins_of(unit_uint16(values), nbins)
    return _equalize_bins(bins, kernel, clip_limit, nbins, dtype)


def equalize_range(values: np.ndarray, kernel_size: int | Sequence[int] | None = None,
                   clip_limit: float = 0.01, nbins: int = 256, dtype: type = np.float32) -> np.ndarray:
    """CLAHE of a grey image or volume of any units: its finite min..max mapped onto 0..1 first
    (float64; NaN as the minimum, +inf as the maximum), then `equalize`."""
    kernel = kernel_shape(values.shape, kernel_size)
    found = finite_range(values)
    if found is None:  # nothing finite: every value becomes 0
        levels = np.zeros(values.shape, np.uint16)
    else:
        levels = unit_uint16(values, found[0], found[1] - found[0])
    bins = bins_of(levels, nbins)
    del levels
    return _equalize_bins(bins, kernel, clip_limit, nbins, dtype)


def _equalize_bins(bins: np.ndarray, kernel: Sequence[int], clip_limit: float, nbins: int,
                   dtype: type) -> np.ndarray:
    maps = region_maps(bins, kernel, clip_limit, nbins)
    return stretch_to_unit(interpolate(bins, maps, kernel, nbins), dtype)
