"""Compiled kernels of :mod:`alerts.matching` (private: the API and the semantics live there).

Everything here works in the population grid's *cell coordinates*: cell ``(r, c)`` is the
square ``[c, c+1] x [r, r+1]`` and polygon vertices are ``(col, row)`` floats. A polygon
*overlaps* a cell when they share a positive area, which holds exactly when an edge passes
through the cell's open interior or the cell's centre is inside the polygon.

The class grid is summarised once per footprint by :func:`block_extrema`: the highest and
lowest class of every ``BLOCK x BLOCK`` block and the highest of every ``SUB x SUB``
sub-block (small ``uint8`` grids, 1/256 and 1/16 of the class grid, read from cache). Every
question :func:`match_parts` asks is "the highest class among these cells, at most
``cap``": it is answered from the blocks and sub-blocks lying wholly inside the cells
asked about, and reads cells only in those whose maximum could still raise the answer. It
stops as soon as the answer reaches ``cap``, the best any block of the part's box holds.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 16
"""Side, in cells, of the blocks whose highest and lowest class :func:`block_extrema` keeps."""
SUB = 4
"""Side, in cells, of the sub-blocks (``BLOCK`` is a multiple) whose highest class is kept too."""
_CHUNK = 2048  # parts per parallel task; each task keeps its own scratch buffers


@njit(parallel=True, cache=True)
def block_extrema(cls):  # pragma: no cover - compiled
    """Highest and lowest class of each ``BLOCK`` block, and highest of each ``SUB`` block.

    Three ``uint8`` grids of ``ceil(H / size) x ceil(W / size)`` blocks of ``size`` cells
    a side, computed in one parallel read of ``cls``.
    """
    height, width = cls.shape
    n_brows, n_bcols = -(-height // BLOCK), -(-width // BLOCK)
    n_fcols = -(-width // SUB)
    hi = np.zeros((n_brows, n_bcols), dtype=np.uint8)
    lo = np.full((n_brows, n_bcols), 255, dtype=np.uint8)
    fine = np.zeros((-(-height // SUB), n_fcols), dtype=np.uint8)
    for br in prange(n_brows):
        col_hi = np.empty(n_fcols * SUB, dtype=np.uint8)  # per column, over SUB rows
        col_lo = np.empty(n_fcols * SUB, dtype=np.uint8)
        for fr in range(br * (BLOCK // SUB), min(-(-height // SUB), (br + 1) * (BLOCK // SUB))):
            col_hi[:] = 0
            col_lo[:] = 255
            for r in range(fr * SUB, min(height, (fr + 1) * SUB)):
                for c in range(width):  # contiguous: vectorised
                    col_hi[c] = max(col_hi[c], cls[r, c])
                    col_lo[c] = min(col_lo[c], cls[r, c])
            for c in range(width, n_fcols * SUB):  # a partial last block: neutral values
                col_hi[c], col_lo[c] = col_hi[width - 1], col_lo[width - 1]
            for fc in range(n_fcols):
                top, bottom = col_hi[fc * SUB], col_lo[fc * SUB]
                for c in range(fc * SUB + 1, (fc + 1) * SUB):
                    top = max(top, col_hi[c])
                    bottom = min(bottom, col_lo[c])
                fine[fr, fc] = top
                bc = fc * SUB // BLOCK
                hi[br, bc] = max(hi[br, bc], top)
                lo[br, bc] = min(lo[br, bc], bottom)
    return hi, lo, fine


@njit(parallel=True, cache=True)
def match_parts(cls, bmax, bmin, fmax, lo, boxes, clipped, rect, inner, coords,
                ring_offsets, part_rings, out):  # pragma: no cover - compiled
    """Highest class ``>= lo`` (else 0) each part overlaps, into ``out``; returns exact tests.

    Parts whose bounds (:func:`_part_bounds`) meet are decided; the others get the exact
    scan-line test, which stops once it reaches the upper bound.
    """
    n_parts = boxes.shape[0]
    n_chunks = -(-n_parts // _CHUNK)
    exact = np.zeros(n_chunks, dtype=np.int64)
    for chunk in prange(n_chunks):
        xs = np.empty(256, dtype=np.float64)
        sorted_xs = np.empty(256, dtype=np.float64)
        cross_rows = np.empty(256, dtype=np.int64)
        starts = np.empty(256, dtype=np.int64)
        for p in range(chunk * _CHUNK, min(n_parts, (chunk + 1) * _CHUNK)):
            r0, r1 = boxes[p, 0], boxes[p, 1]
            if r1 <= r0 or boxes[p, 3] <= boxes[p, 2]:
                continue
            best, cap = _part_bounds(cls, bmax, bmin, fmax, lo, boxes[p], clipped[p], rect[p],
                                     inner[p])
            if best < cap:
                exact[chunk] += 1
                ring0, ring1 = part_rings[p], part_rings[p + 1]
                n_cross = _count_crossings(coords, ring_offsets, ring0, ring1, cls.shape[0])
                if n_cross > xs.size:
                    xs = np.empty(2 * n_cross, dtype=np.float64)
                    sorted_xs = np.empty(2 * n_cross, dtype=np.float64)
                    cross_rows = np.empty(2 * n_cross, dtype=np.int64)
                if r1 - r0 + 2 > starts.size:
                    starts = np.empty(2 * (r1 - r0 + 2), dtype=np.int64)
                best = _polygon_max(cls, bmax, fmax, coords, ring_offsets, ring0, ring1, r0, r1,
                                    best, cap, xs, sorted_xs, cross_rows, starts)
            if best >= lo:
                out[p] = best
    return exact.sum()


@njit(cache=True)
def _part_bounds(cls, bmax, bmin, fmax, lo, box, clipped, rect, inner):  # pragma: no cover
    """Lower and upper bound of the highest class a part overlaps; equal once decided.

    The blocks of its box bound it from above (below ``lo``: no match) and, when the box
    lies on the grid, from below: every cell of the box is at least the blocks' lowest
    class and the part overlaps one of them. A rectangle is its box: the box's highest
    class. Otherwise the inner box (cells inside the part) raises the lower bound and the
    box's own highest class lowers the upper one.
    """
    r0, r1, c0, c1 = box[0], box[1], box[2], box[3]
    cap, floor_class = _block_bounds(bmax, bmin, r0, r1, c0, c1)
    if cap < lo:
        return cap, cap
    if rect:
        best = _box_max(cls, bmax, fmax, r0, r1, c0, c1, 0, cap)
        return best, best
    best = 0 if clipped else floor_class
    if best < cap and inner[1] > inner[0] and inner[3] > inner[2]:
        best = _box_max(cls, bmax, fmax, inner[0], inner[1], inner[2], inner[3], best, cap)
    if best < cap:
        cap = _box_max(cls, bmax, fmax, r0, r1, c0, c1, best, cap)
        if cap < lo:
            return cap, cap
    return best, cap


@njit(cache=True, inline="always")
def _block_bounds(bmax, bmin, r0, r1, c0, c1):  # pragma: no cover - compiled
    """Highest of the blocks' highest classes, lowest of their lowest, over a cell box."""
    top, bottom = 0, 255
    for br in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1):
        for bc in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1):
            top = max(top, bmax[br, bc])
            bottom = min(bottom, bmin[br, bc])
    return top, bottom


@njit(cache=True)
def _box_max(cls, bmax, fmax, r0, r1, c0, c1, best, cap):  # pragma: no cover
    """``max(best, highest class in rows r0:r1, cols c0:c1)``, stopping once it is ``cap``.

    The blocks wholly inside the box first (their maximum is the answer for their cells),
    then the blocks on the box's border whose maximum is still higher, through their
    sub-blocks (:func:`_sub_box_max`).
    """
    height, width = cls.shape
    br0, br1, bc0, bc1 = _whole_blocks(r0, r1, c0, c1, BLOCK, height, width)
    for br in range(br0, br1):
        for bc in range(bc0, bc1):
            best = max(best, bmax[br, bc])
    if best >= cap:
        return best
    for br in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1):
        ra, rb = max(r0, br * BLOCK), min(r1, (br + 1) * BLOCK)
        inside_rows = br0 <= br < br1
        for bc in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1):
            if bmax[br, bc] <= best or (inside_rows and bc0 <= bc < bc1):
                continue
            best = _sub_box_max(cls, fmax, ra, rb, max(c0, bc * BLOCK),
                                min(c1, (bc + 1) * BLOCK), best)
            if best >= cap:
                return best
    return best


@njit(cache=True)
def _sub_box_max(cls, fmax, r0, r1, c0, c1, best):  # pragma: no cover - compiled
    """``max(best, highest class in rows r0:r1, cols c0:c1)`` through the ``SUB`` blocks."""
    height, width = cls.shape
    fr0, fr1, fc0, fc1 = _whole_blocks(r0, r1, c0, c1, SUB, height, width)
    for fr in range(r0 // SUB, (r1 - 1) // SUB + 1):
        inside_rows = fr0 <= fr < fr1
        for fc in range(c0 // SUB, (c1 - 1) // SUB + 1):
            top = fmax[fr, fc]
            if top <= best:
                continue
            if inside_rows and fc0 <= fc < fc1:
                best = top
                continue
            for r in range(max(r0, fr * SUB), min(r1, (fr + 1) * SUB)):
                for c in range(max(c0, fc * SUB), min(c1, (fc + 1) * SUB)):
                    best = max(best, cls[r, c])
    return best


@njit(cache=True, inline="always")
def _whole_blocks(r0, r1, c0, c1, size, height, width):  # pragma: no cover - compiled
    """Block rows ``[0]:[1]`` and columns ``[2]:[3]`` wholly inside the cell box."""
    br1 = -(-height // size) if r1 == height else r1 // size
    bc1 = -(-width // size) if c1 == width else c1 // size
    return -(-r0 // size), br1, -(-c0 // size), bc1


@njit(cache=True, inline="always")
def _row_max(cls, bmax, fmax, r, ca, cb, best):  # pragma: no cover - compiled
    """``max(best, highest class in row r, cols ca..cb)`` (inclusive), block by block."""
    br, fr = r // BLOCK, r // SUB
    for bc in range(ca // BLOCK, cb // BLOCK + 1):
        if bmax[br, bc] > best:
            for fc in range(max(ca, bc * BLOCK) // SUB, min(cb, bc * BLOCK + BLOCK - 1) // SUB + 1):
                if fmax[fr, fc] > best:
                    for c in range(max(ca, fc * SUB), min(cb + 1, (fc + 1) * SUB)):
                        best = max(best, cls[r, c])
    return best


@njit(cache=True, inline="always")
def _edge_cells_in_row(x0, y0, x1, y1, r, width):  # pragma: no cover - compiled
    """Columns of row ``r`` whose cell interior the edge crosses (``first > last``: none)."""
    if y0 == y1:
        if not (r < y0 < r + 1):
            return 0, -1
        xa, xb = min(x0, x1), max(x0, x1)
    else:
        ya, yb = max(r, min(y0, y1)), min(r + 1.0, max(y0, y1))
        if ya >= yb:
            return 0, -1
        xa = x0 + (ya - y0) * (x1 - x0) / (y1 - y0)
        xb = x0 + (yb - y0) * (x1 - x0) / (y1 - y0)
        xa, xb = min(xa, xb), max(xa, xb)
    if xa == xb:  # vertical: only a cell whose open interior holds x
        ca = int(np.floor(xa))
        cb = ca if ca != xa else ca - 1
    else:
        ca, cb = int(np.floor(xa)), int(np.ceil(xb)) - 1
    return max(ca, 0), min(cb, width - 1)


@njit(cache=True)
def _count_crossings(coords, ring_offsets, ring0, ring1, height):  # pragma: no cover
    """Upper bound of the row centre lines the part's edges cross (scratch size)."""
    n = 0
    for ring in range(ring0, ring1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            y0, y1 = coords[v, 1], coords[v + 1, 1]
            top = min(float(height), np.ceil(max(y0, y1)))
            n += max(0, int(top - max(0.0, np.floor(min(y0, y1)))))
    return n


@njit(cache=True)
def _polygon_max(cls, bmax, fmax, coords, ring_offsets, ring0, ring1, row0, row1, best, cap,
                 xs, sorted_xs, cross_rows, starts):  # pragma: no cover - compiled
    """``max(best, highest class among the cells the polygon overlaps)``, stopping at ``cap``.

    First the cells each edge passes through, row by row, collecting where the edges cross
    each row's centre line; then, per row, the runs of cells whose centres lie between
    paired crossings (even-odd rule, half-open so a vertex counts once).
    """
    best, n = _edge_cells_max(cls, bmax, fmax, coords, ring_offsets, ring0, ring1, row0, row1,
                              best, cap, xs, cross_rows)
    if best >= cap:
        return best
    _sort_by_row(xs, cross_rows, n, row0, row1 - row0, sorted_xs, starts)
    width = cls.shape[1]
    for i in range(row1 - row0):  # starts[i]..starts[i + 1]: the crossings of row row0 + i
        for j in range(starts[i], starts[i + 1] - 1, 2):  # an odd last one is skipped
            ca = max(0, int(np.ceil(sorted_xs[j] - 0.5)))
            cb = min(width - 1, int(np.floor(sorted_xs[j + 1] - 0.5)))
            if ca <= cb:
                best = _row_max(cls, bmax, fmax, row0 + i, ca, cb, best)
                if best >= cap:
                    return best
    return best


@njit(cache=True)
def _edge_cells_max(cls, bmax, fmax, coords, ring_offsets, ring0, ring1, row0, row1, best, cap,
                    xs, cross_rows):  # pragma: no cover - compiled
    """Highest class of the cells the edges pass through; centre-line crossings into ``xs``.

    Returns ``(best, crossings)``, early (crossings incomplete) once ``best`` reaches ``cap``.
    """
    width = cls.shape[1]
    n = 0
    for ring in range(ring0, ring1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            x0, y0 = coords[v, 0], coords[v, 1]
            x1, y1 = coords[v + 1, 0], coords[v + 1, 1]
            ra = max(row0, int(np.floor(min(y0, y1))))
            rb = min(row1, int(np.ceil(max(y0, y1))))
            for r in range(ra, rb):
                ca, cb = _edge_cells_in_row(x0, y0, x1, y1, r, width)
                if ca <= cb:
                    best = _row_max(cls, bmax, fmax, r, ca, cb, best)
                    if best >= cap:
                        return best, n
                yc = r + 0.5
                if min(y0, y1) <= yc < max(y0, y1):
                    xc = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
                    xs[n] = min(max(xc, -1.0), width + 1.0)
                    cross_rows[n] = r
                    n += 1
    return best, n


@njit(cache=True)
def _sort_by_row(xs, rows, n, row0, n_rows, out, starts):  # pragma: no cover - compiled
    """The first ``n`` crossings sorted by row, then by x, into ``out``.

    Row ``row0 + i`` is ``out[starts[i]:starts[i + 1]]``: a counting sort by row, then an
    insertion sort of each row's few crossings.
    """
    starts[: n_rows + 2] = 0
    for i in range(n):
        starts[rows[i] - row0 + 2] += 1
    for i in range(2, n_rows + 2):
        starts[i] += starts[i - 1]
    for i in range(n):
        slot = rows[i] - row0 + 1
        out[starts[slot]] = xs[i]
        starts[slot] += 1
    for i in range(n_rows):
        for j in range(starts[i] + 1, starts[i + 1]):
            x, k = out[j], j - 1
            while k >= starts[i] and out[k] > x:
                out[k + 1] = out[k]
                k -= 1
            out[k + 1] = x


@njit(parallel=True, cache=True)
def inner_boxes(coords, ring_offsets, part_rings, px, py, height, width,
                out):  # pragma: no cover - compiled
    """A box inside each part: its widths through an interior point, shrunk until clear."""
    for p in prange(len(px)):
        r0, r1 = part_rings[p], part_rings[p + 1]
        xl, xr = _nearest_crossings(coords, ring_offsets, r0, r1, px[p], py[p], 0)
        yb, yt = _nearest_crossings(coords, ring_offsets, r0, r1, px[p], py[p], 1)
        if not (xl < px[p] < xr and yb < py[p] < yt):
            continue
        for scale in (0.9, 0.7, 0.5, 0.3):
            bx0, bx1 = px[p] - scale * (px[p] - xl), px[p] + scale * (xr - px[p])
            by0, by1 = py[p] - scale * (py[p] - yb), py[p] + scale * (yt - py[p])
            if not _edges_meet_box(coords, ring_offsets, r0, r1, bx0, by0, bx1, by1):
                out[p, 0] = min(max(int(np.floor(by0)), 0), height)
                out[p, 1] = min(max(int(np.ceil(by1)), 0), height)
                out[p, 2] = min(max(int(np.floor(bx0)), 0), width)
                out[p, 3] = min(max(int(np.ceil(bx1)), 0), width)
                break


@njit(cache=True)
def _nearest_crossings(coords, ring_offsets, r0, r1, px, py, axis):  # pragma: no cover
    """Nearest boundary crossings either side of the point, along x (axis 0) or y (1)."""
    other = 1 - axis
    at, pos = (py, px) if axis == 0 else (px, py)
    below, above = -np.inf, np.inf
    for ring in range(r0, r1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            a0, a1 = coords[v, other], coords[v + 1, other]
            if min(a0, a1) <= at < max(a0, a1):
                b0, b1 = coords[v, axis], coords[v + 1, axis]
                b = b0 + (at - a0) * (b1 - b0) / (a1 - a0)
                if b < pos:
                    below = max(below, b)
                elif b > pos:
                    above = min(above, b)
                else:  # the point is on the boundary
                    return np.inf, -np.inf
    return below, above


@njit(cache=True)
def _edges_meet_box(coords, ring_offsets, r0, r1, bx0, by0, bx1, by1):  # pragma: no cover
    """True when an edge has a point in the closed box (Liang-Barsky clipping)."""
    for ring in range(r0, r1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            x0, y0 = coords[v, 0], coords[v, 1]
            dx, dy = coords[v + 1, 0] - x0, coords[v + 1, 1] - y0
            t0, t1 = 0.0, 1.0
            meets = True
            # Constraints p * t <= q for x >= bx0, x <= bx1, y >= by0, y <= by1.
            for q, p in ((x0 - bx0, -dx), (bx1 - x0, dx), (y0 - by0, -dy), (by1 - y0, dy)):
                if p == 0.0:
                    if q < 0.0:
                        meets = False
                        break
                    continue
                if p < 0.0:
                    t0 = max(t0, q / p)
                else:
                    t1 = min(t1, q / p)
                if t0 > t1:
                    meets = False
                    break
            if meets:
                return True
    return False


@njit(parallel=True, cache=True)
def zone_max_class(zone, cls, lo, n_zones):  # pragma: no cover - compiled
    """Highest class ``>= lo`` in each zone (0 when none), from per-row-block tables."""
    height, width = cls.shape
    n_blocks = 64
    tables = np.zeros((n_blocks, n_zones + 1), dtype=np.uint8)
    step = -(-height // n_blocks)
    for b in prange(n_blocks):
        for r in range(b * step, min(height, (b + 1) * step)):
            for c in range(width):
                v = cls[r, c]
                z = zone[r, c]
                if v >= lo and z >= 0 and v > tables[b, z]:
                    tables[b, z] = v
    out = np.zeros(n_zones, dtype=np.uint8)
    for b in range(n_blocks):
        for z in range(n_zones):
            out[z] = max(out[z], tables[b, z])
    return out
