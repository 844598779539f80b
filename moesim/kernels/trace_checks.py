"""A screening pass for repeated expert ids, sixteen bits at a time (SWAR).

Validating a trace must confirm that no token repeats an expert within its top-k list at any
layer. Comparing every pair of slots with numpy costs k(k-1)/2 strided passes and temporaries;
here the ids (int16) are read as 64-bit words of four lanes, and lanes are compared a whole word
at a time: XOR with another word and a carry-free zero-lane test. When rows are whole words
(k = 4, 8, 12, ...) each word is compared with its own rotations and with the other words of its
row; k = 2 packs two rows per word; any other k compares lane ``x`` with lane ``x + d`` for
d = 1..k-1 through a word shifted by d lanes, masked to pairs inside one row. Each loop is a small
function indexed from 0 so LLVM vectorises it: for k = 4 the pass costs about as much as reading
the ids once.

The kernel only answers "is there any repeat?"; the caller locates the first one with the exact
(slow) search when the answer is yes, so error messages do not depend on this code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_LANE_SIGN = np.uint64(0x8000_8000_8000_8000)
_LANE_LOW = np.uint64(0x7FFF_7FFF_7FFF_7FFF)
_PAIR_STARTS = np.uint64(0x0000_8000_0000_8000)  # sign bits of lanes 0 and 2


@njit(cache=True, nogil=True, inline="always")
def _repeats(word, shifted, mask):
    """Sign bits of the lanes where ``word`` and ``shifted`` agree, the id is >= 0 and ``mask`` allows."""
    diff = word ^ shifted
    # the sign bit of a lane is set iff that lane of diff is zero (no carry crosses lanes)
    equal = ~(((diff & _LANE_LOW) + _LANE_LOW) | diff)
    return equal & ~word & mask


@njit(cache=True, nogil=True)
def _scan_aligned(current, other, mask):
    """OR of _repeats(current[i], other[i]) (a shift by whole words)."""
    found = np.uint64(0)
    for index in range(current.shape[0]):
        found |= _repeats(current[index], other[index], mask)
    return found


@njit(cache=True, nogil=True)
def _scan_shifted(current, low, high, part, mask):
    """OR of _repeats(current[i], the lanes from lane ``part`` of low[i] on into high[i])."""
    found = np.uint64(0)
    up = np.uint64(16 * part)
    down = np.uint64(64 - 16 * part)
    for index in range(current.shape[0]):
        found |= _repeats(current[index], (low[index] >> up) | (high[index] << down), mask)
    return found


@njit(cache=True, nogil=True)
def _scan_rotations(words, mask_one, mask_two):
    """OR of _repeats of every word against itself rotated by one and by two lanes.

    When a row fits in one word (top_k 2 or 4) these two rotations pair every two slots of a row.
    """
    found = np.uint64(0)
    for index in range(words.shape[0]):
        word = words[index]
        found |= _repeats(word, (word >> np.uint64(16)) | (word << np.uint64(48)), mask_one)
        found |= _repeats(word, (word >> np.uint64(32)) | (word << np.uint64(32)), mask_two)
    return found


@njit(cache=True, nogil=True)
def _scan_word_pairs(rows, first, second):
    """OR of _repeats of word ``first`` of each row against every rotation of word ``second``."""
    found = np.uint64(0)
    for index in range(rows.shape[0]):
        word = rows[index, first]
        other = rows[index, second]
        found |= _repeats(word, other, _LANE_SIGN)
        found |= _repeats(word, (other >> np.uint64(16)) | (other << np.uint64(48)), _LANE_SIGN)
        found |= _repeats(word, (other >> np.uint64(32)) | (other << np.uint64(32)), _LANE_SIGN)
        found |= _repeats(word, (other >> np.uint64(48)) | (other << np.uint64(16)), _LANE_SIGN)
    return found


@njit(cache=True, nogil=True)
def rows_repeat_an_id(words, top_k, row_masks):
    """Whether some row of ``top_k`` consecutive int16 ids holds one non-negative id twice.

    Parameters
    ----------
    words : uint64 ndarray
        The ids, row-major, read as little-endian 64-bit words (lane j of word i is id 4i + j);
        they hold whole rows (``4 * len(words)`` is a multiple of ``top_k``).
    top_k : int
        Ids per row.
    row_masks : uint64 ndarray ``[top_k - 1, period]``
        ``row_masks[d - 1, i % period]`` has the sign bit of lane j set iff lane ``4i + j`` and
        lane ``4i + j + d`` are in the same row (``period = top_k / gcd(top_k, 4)``); built by
        ``moesim.trace.validate.row_masks``. Unused when top_k is 2 or a multiple of 4.

    Returns
    -------
    bool
        True iff two slots of one row hold the same id >= 0 (-1, an empty slot, may repeat).
    """
    if top_k % 4 == 0:
        # Rows are whole words: pairs inside a word by rotation, pairs across words word by word.
        found = _scan_rotations(words, _LANE_SIGN, _LANE_SIGN)
        width = top_k // 4
        rows = words.reshape(words.shape[0] // width, width)
        for first in range(width):
            for second in range(first + 1, width):
                found |= _scan_word_pairs(rows, first, second)
        return (found & _LANE_SIGN) != 0
    if top_k == 2:  # lanes (0, 1) and (2, 3) are the rows
        return (_scan_rotations(words, _PAIR_STARTS, np.uint64(0)) & _LANE_SIGN) != 0
    period = row_masks.shape[1]
    found = np.uint64(0)
    for distance in range(1, top_k):
        whole = distance // 4
        part = distance % 4
        for phase in range(period):
            mask = row_masks[distance - 1, phase]
            if mask == 0:
                continue
            # Word i (i = phase, phase + period, ...) is compared with the lanes starting
            # ``distance`` lanes later: word i + whole shifted down by ``part`` lanes, topped up
            # from word i + whole + 1 (zeros past the end).
            current = words[phase::period]
            low = words[phase + whole :: period]
            high = words[phase + whole + 1 :: period]
            if part == 0:
                found |= _scan_aligned(current[: low.shape[0]], low, mask)
                continue
            count = high.shape[0]
            found |= _scan_shifted(current[:count], low[:count], high, part, mask)
            if count < low.shape[0]:
                found |= _repeats(current[count], low[count] >> np.uint64(16 * part), mask)
    return (found & _LANE_SIGN) != 0
