"""Numba kernels behind :func:`geo.access.access_under_hazard` (private to :mod:`geo.access`).

:func:`dirty_cells` marks the blocked cells and their descendants in the baseline's
shortest-path tree; :func:`repair_dirty` recomputes only those with a Dijkstra search over a
binary heap held in two arrays, seeded from their clean neighbours' baseline times and using
MCP's step cost in MCP's order of operations, so the result equals a full recompute bit for
bit (see :mod:`geo.access` for why that is exact). They live apart from the public functions
to keep :mod:`geo.access` small; being compiled (``cache=True``), they are excluded from
coverage, and the tests of :mod:`geo.access` check them against full recomputes.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def dirty_cells(predecessor: np.ndarray, blocked: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Blocked cells and every descendant of one in the shortest-path tree."""
    n = predecessor.size
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        if predecessor[i] >= 0:
            start[predecessor[i] + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    children = np.empty(start[n], dtype=np.int64)
    for i in range(n):
        p = predecessor[i]
        if p >= 0:
            children[fill[p]] = i
            fill[p] += 1
    dirty = blocked.copy()
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for i in range(n):
        if blocked[i]:
            stack[top] = i
            top += 1
    while top > 0:
        top -= 1
        u = stack[top]
        for j in range(start[u], start[u + 1]):
            child = children[j]
            if not dirty[child]:
                dirty[child] = True
                stack[top] = child
                top += 1
    return dirty


@numba.njit(cache=True)
def _heap_push(keys, values, size, key, value):  # pragma: no cover
    """Push onto a binary min-heap held in two arrays; grows them when full."""
    if size == keys.size:
        keys = np.concatenate((keys, np.empty(keys.size, dtype=keys.dtype)))
        values = np.concatenate((values, np.empty(values.size, dtype=values.dtype)))
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if keys[parent] <= key:
            break
        keys[i] = keys[parent]
        values[i] = values[parent]
        i = parent
    keys[i] = key
    values[i] = value
    return keys, values, size + 1


@numba.njit(cache=True)
def _heap_pop(keys, values, size):  # pragma: no cover
    """Pop the smallest key of a binary min-heap; returns (key, value, new size)."""
    key, value = keys[0], values[0]
    size -= 1
    last_key, last_value = keys[size], values[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= last_key:
            break
        keys[i] = keys[child]
        values[i] = values[child]
        i = child
    if size > 0:
        keys[i] = last_key
        values[i] = last_value
    return key, value, size


@numba.njit(cache=True)
def repair_dirty(
    times0, cost, dirty, blocked, height, width, off_r, off_c, lengths
):  # pragma: no cover
    """Dijkstra over the dirty cells, seeded from their clean neighbours' baseline times."""
    out, keys, values, size = _seed_dirty(
        times0, cost, dirty, blocked, height, width, off_r, off_c, lengths
    )
    done = np.zeros(out.size, dtype=np.bool_)
    while size > 0:
        t, u, size = _heap_pop(keys, values, size)
        if done[u] or t > out[u]:
            continue  # a stale heap entry: u was pushed again with a lower time
        done[u] = True
        r, c = u // width, u % width
        for k in range(8):
            rr, cc = r + off_r[k], c + off_c[k]
            if rr < 0 or rr >= height or cc < 0 or cc >= width:
                continue
            v = rr * width + cc
            if not dirty[v] or blocked[v] or done[v]:
                continue
            # MCP's step cost, same operation order: length * 0.5 * (from + to).
            candidate = t + lengths[k] * 0.5 * (cost[u] + cost[v])
            if candidate < out[v]:
                out[v] = candidate
                keys, values, size = _heap_push(keys, values, size, candidate, v)
    return out


@numba.njit(cache=True)
def _seed_dirty(
    times0, cost, dirty, blocked, height, width, off_r, off_c, lengths
):  # pragma: no cover
    """Dirty cells reset to their best entry from a clean neighbour, and a heap of them."""
    out = times0.copy()
    n_dirty = 0
    for i in range(out.size):
        if dirty[i]:
            out[i] = np.inf
            n_dirty += 1
    keys = np.empty(max(16, n_dirty), dtype=np.float64)
    values = np.empty(max(16, n_dirty), dtype=np.int64)
    size = 0
    for i in range(out.size):
        if not dirty[i] or blocked[i]:
            continue
        r, c = i // width, i % width
        best = np.inf
        for k in range(8):
            rr, cc = r + off_r[k], c + off_c[k]
            if rr < 0 or rr >= height or cc < 0 or cc >= width:
                continue
            j = rr * width + cc
            if dirty[j] or times0[j] == np.inf:
                continue
            candidate = times0[j] + lengths[k] * 0.5 * (cost[j] + cost[i])
            if candidate < best:
                best = candidate
        if best < np.inf:
            out[i] = best
            keys, values, size = _heap_push(keys, values, size, best, i)
    return out, keys, values, size
