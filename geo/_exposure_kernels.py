"""Numba kernels behind :func:`geo.exposure.accumulate` (private to :mod:`geo.exposure`).

:func:`_sum_index_kernel` adds every layer into a ``(layer, zone, class)`` table by walking
the zone runs: per run, one vectorised pass (:func:`_window_pass`) gives the sums of the
first cell's class and its two neighbours and the run's class range, and a class outside
those takes one more masked pass. :func:`_sum_shares_kernel` splits each cell's value
between classes by share. Both split the runs into blocks handled in parallel, each with
its own accumulator, and add nothing when an index is out of range (they return the count
of bad cells). They live apart from the public functions to keep :mod:`geo.exposure`
small; compiled with ``cache=True``, and checked by the tests of :mod:`geo.exposure`
against a ``bincount`` reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Fast-math without "nnan"/"ninf": NaN checks must survive; reassociation lets LLVM
# vectorise the run sums.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

# Run kernels: ``layers`` and ``cls`` are flat (row-major) arrays; run ``i`` is the cells
# ``starts[i]:starts[i + 1]``. Indices are uint64 throughout: numba then emits no
# negative-index wraparound, which would stop LLVM vectorising the loops over a run.


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _window_pass(layer, cls, j, e, k0):
    """Class range of run ``j:e`` and the layer's sums in classes ``k0 - 1, k0, k0 + 1``."""
    below_k = np.uint8(np.int64(k0) - 1)  # wraps to 255 for k0 = 0: never a valid class
    above_k = np.uint8(np.int64(k0) + 1)
    below = 0.0
    centre = 0.0
    above = 0.0
    lo = k0
    hi = k0
    for q in range(j, e):
        v = np.float64(layer[q])
        v = v if v == v else 0.0
        x = cls[q]
        below += v if x == below_k else 0.0
        centre += v if x == k0 else 0.0
        above += v if x == above_k else 0.0
        lo = min(lo, x)
        hi = max(hi, x)
    return lo, hi, below, centre, above


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _run_sum(layer, j, e):
    s = 0.0
    for q in range(j, e):
        v = np.float64(layer[q])
        s += v if v == v else 0.0
    return s


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _masked_sum(layer, cls, j, e, k):
    s = 0.0
    for q in range(j, e):
        v = np.float64(layer[q])
        s += v if (v == v and cls[q] == k) else 0.0
    return s


@njit(nogil=True, cache=True)
def _count_above(cls, j, e, n_classes):
    n = 0
    for q in range(j, e):
        n += cls[q] > n_classes
    return n


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _add_run(row, layer, cls, j, e, k0, lo, hi, below, centre, above):
    """Add one run's class sums to ``row``: the window around ``k0``, then the other classes."""
    k = np.int64(k0)
    row[k] += centre
    if lo < k0:
        row[k - 1] += below
    if hi > k0:
        row[k + 1] += above
    for c in range(np.int64(lo), k - 1):
        row[c] += _masked_sum(layer, cls, j, e, np.uint8(c))
    for c in range(k + 2, np.int64(hi) + 1):
        row[c] += _masked_sum(layer, cls, j, e, np.uint8(c))


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def _sum_index_kernel(starts, run_zone, cls, layers, n_zones, n_classes, blocks, out):
    """Per run: the first layer's pass gives the class range; other layers follow."""
    n_blocks = blocks.size - 1
    n_layers = len(layers)
    acc = np.zeros((n_blocks, n_layers, n_zones + 1, n_classes + 1))
    bad = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        for i in range(blocks[b], blocks[b + 1]):
            j = starts[i]
            e = starts[i + 1]
            z = run_zone[i]
            if z < -1 or z >= n_zones:
                bad[b] += np.int64(e - j)
                continue
            zi = n_zones if z == -1 else z
            k0 = cls[j]
            lo, hi, below, centre, above = _window_pass(layers[0], cls, j, e, k0)
            if hi > n_classes:
                bad[b] += _count_above(cls, j, e, n_classes)
                continue
            for li in range(n_layers):
                if li > 0 and lo == hi:
                    below, centre, above = 0.0, _run_sum(layers[li], j, e), 0.0
                elif li > 0:
                    _, _, below, centre, above = _window_pass(layers[li], cls, j, e, k0)
                _add_run(acc[b, li, zi], layers[li], cls, j, e, k0, lo, hi, below, centre,
                         above)
    n_bad = bad.sum()
    if n_bad == 0:
        for b in range(n_blocks):
            out += acc[b]
    return n_bad


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def _sum_shares_kernel(starts, run_zone, shares, layers, n_zones, blocks, longest, out):
    """Each cell's value split between classes 1..K by share, class 0 taking the rest."""
    n_classes = shares.shape[0]
    n_blocks = blocks.size - 1
    n_layers = len(layers)
    acc = np.zeros((n_blocks, n_layers, n_zones + 1, n_classes + 1))
    bad = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        rest = np.empty(longest, np.float64)  # class 0's share of each cell of a run
        for i in range(blocks[b], blocks[b + 1]):
            j = starts[i]
            e = starts[i + 1]
            z = run_zone[i]
            if z < -1 or z >= n_zones:
                bad[b] += np.int64(e - j)
                continue
            zi = n_zones if z == -1 else z
            m = e - j
            rest[:m] = 1.0
            for k in range(n_classes):
                share = shares[k]
                for q in range(j, e):
                    rest[q - j] -= share[q]
            for li in range(n_layers):
                layer = layers[li]
                s = 0.0
                for q in range(j, e):
                    v = np.float64(layer[q])
                    s += v * max(rest[q - j], 0.0) if v == v else 0.0
                acc[b, li, zi, 0] += s
                for k in range(n_classes):
                    share = shares[k]
                    s = 0.0
                    for q in range(j, e):
                        v = np.float64(layer[q])
                        s += v * share[q] if v == v else 0.0
                    acc[b, li, zi, k + 1] += s
    n_bad = bad.sum()
    if n_bad == 0:
        for b in range(n_blocks):
            out += acc[b]
    return n_bad
