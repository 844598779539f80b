"""Codes, priorities and the future (next use, window counts) shared by the cache kernels.

The request stream
------------------
Every cache kernel reads the same flat arrays (a wrapper builds them from a trace):

* ``keys`` int32[N]: cache keys ``0..num_keys-1``, in request order;
* ``group_offsets`` int64[G+1]: requests ``group_offsets[g]:group_offsets[g+1]`` are lookup group g
  (the experts one token needs at one layer, or a whole token); keys are distinct within a group;
* ``group_token`` int64[G]: index of group g's token within its sequence, non-decreasing;
* ``seq_group_offsets`` int64[S+1]: groups of each sequence. Every sequence starts with an empty
  cache and its own clock.

Priorities
----------
Every policy is "evict the resident with the smallest priority". Priorities are int64 and distinct
among residents, so every decision is deterministic. ``tau`` is the 1-based index of a key's last
request within its sequence (later = larger); ``count`` the number of its requests so far in the
sequence (kept across evictions: "perfect" LFU); ``window`` (SCH) the number of its requests that
are still to be served and belong to the tokens ``t .. t+m-1``, t being the token of the request
being served (spec lrc-metrics.md 3.2: the window includes the current token, is truncated at the
end of the sequence, and an expert's own request of the current token stops counting once served);
``next`` (Belady) the index of its next request, or ``NEVER + key`` if there is none (Belady 1966;
which never-again key goes first cannot change a hit).

======  ===========================  ========================================================
LRU     ``tau``                      evict the least recently requested
LFU     ``count << 32 | tau``        fewest requests so far, ties to the older last request
FIFO    ``inserted``                 evict the earliest inserted (a hit does not refresh it)
BELADY  ``FAR - next``               evict the one needed farthest in the future
SCH     ``window << 32 | tau``       fewest requests in the next m tokens, ties to recency
======  ===========================  ========================================================

Accounting (``accounting``)
---------------------------
* REFERENCE, the paper's code (Liang et al. 2025, 41_sch_calc.py / 50_chr_calc.py): a request is
  judged against the cache at the start of its group (pre-token accounting) while the evictions
  happen one request at a time in list order, each evicting the smallest priority among the
  residents (never the key being loaded). A key evicted by an earlier request of its own group is
  still counted as a hit and is loaded again (for FIFO that is a new insertion). For LRU this
  equals the paper's batch update (a token's experts become most recent in list order).
* REQUEST: the flattened stream, each request judged against the cache at that moment.
* PINNED: what an MoE layer with an expert cache does. A group's keys are looked up together; its
  misses are loaded in list order, each evicting the smallest priority among the residents the
  group does not need. Priorities with "member of the current group" as the most significant term
  (``PROTECT``) make this a priority-stack algorithm. Defined only for capacities >= the group size;
  elsewhere results are ``NOT_APPLICABLE``. Pinning only restricts choices, so per-request Belady
  hits at least as often as pinned Belady, sometimes more even at c = k (spec example k2_E6_L10,
  c = 2: 11 against 10 hits): a per-request cache may drop a served key of the current group.

SCH's window is counted in tokens (``group_token``), whatever the groups are. With ``segment`` = 1
it protects only the current token's unserved requests, so it equals LRU exactly when a group is a
whole token under reference or pinned accounting (spec 3.2), but not per request, and not at model
level with one group per layer (a token's later layers stay protected).

Cold fill (``cold_free``): when true, the first request of a key in a sequence made while the cache
still has a free slot (fewer distinct keys requested before it than the capacity) is counted as a
hit (spec 3.2 rule 2); when false every first request is a miss. The cache contents do not depend on
this flag, only the count does.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LRU = 0
LFU = 1
FIFO = 2
BELADY = 3
SCH = 4
POLICY_CODES = {"lru": LRU, "lfu": LFU, "fifo": FIFO, "belady": BELADY, "sch": SCH}

REFERENCE = 0
REQUEST = 1
PINNED = 2
ACCOUNTING_CODES = {"reference": REFERENCE, "request": REQUEST, "pinned": PINNED}

NOT_APPLICABLE = -1
PROTECT = np.int64(1) << np.int64(62)
TIME_SHIFT = np.int64(32)
# Keys and request indices of one sequence stay below 2**31 (checked by the wrappers), so the
# packed priorities above stay below PROTECT.
MAX_SEQUENCE_REQUESTS = (1 << 31) - 1
NEVER = np.int64(1) << np.int64(40)
FAR = np.int64(1) << np.int64(41)


@intrinsic
def popcount64(typingctx, word):
    """Number of set bits of a uint64 (LLVM's ctpop: one instruction where the CPU has it)."""
    signature = types.int64(types.uint64)

    def codegen(context, builder, sig, args):
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(ctpop, [args[0]])

    return signature, codegen


@njit(cache=True, nogil=True)
def priority(policy, tau, count, window, next_use, inserted):
    """Packed eviction priority of a key (smaller is evicted first)."""
    if policy == LRU:
        return tau
    if policy == LFU:
        return (count << TIME_SHIFT) | tau
    if policy == FIFO:
        return inserted
    if policy == BELADY:
        return FAR - next_use
    return (window << TIME_SHIFT) | tau


@njit(cache=True, nogil=True)
def fill_next_use(keys, start, end, last_seen, next_use):
    """``next_use[i]`` = index (relative to ``start``) of the next request of ``keys[start + i]``
    in ``start:end``, or ``NEVER + key``. ``last_seen`` is scratch of length num_keys."""
    for r in range(start, end):
        last_seen[keys[r]] = -1
    for r in range(end - 1, start - 1, -1):
        x = keys[r]
        following = last_seen[x]
        next_use[r - start] = NEVER + x if following < 0 else following
        last_seen[x] = r - start


@njit(cache=True, nogil=True)
def extend_window(keys, group_offsets, group_token, window_end, g1, limit, window):
    """Count in ``window`` the requests of groups ``window_end..`` whose token is below ``limit``
    (groups before ``g1``); return the new end. The newly counted requests are
    ``keys[group_offsets[old end] : group_offsets[new end]]``."""
    end = window_end
    while end < g1 and group_token[end] < limit:
        end += 1
    for r in range(group_offsets[window_end], group_offsets[end]):
        window[keys[r]] += 1
    return end


@njit(cache=True, nogil=True)
def max_group_size(group_offsets, g0, g1):
    """Largest group among groups ``g0:g1``."""
    largest = 0
    for g in range(g0, g1):
        size = group_offsets[g + 1] - group_offsets[g]
        if size > largest:
            largest = size
    return largest


@njit(cache=True, nogil=True)
def max_sequence_requests(group_offsets, seq_group_offsets):
    """Largest number of requests in one sequence."""
    largest = 0
    for s in range(len(seq_group_offsets) - 1):
        size = group_offsets[seq_group_offsets[s + 1]] - group_offsets[seq_group_offsets[s]]
        if size > largest:
            largest = size
    return largest
