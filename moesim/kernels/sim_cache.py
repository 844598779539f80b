"""Expert tiers for the simulator's fast path: the GPU expert cache(s) and CPU memory, with the
step-form eviction policies of :mod:`moesim.policies.eviction` in array form.

State lives in three int64 arrays so helpers take few arguments:

* ``node[field, n]``: per-node fields. Node ``n = key`` is a key's entry in the GPU tier,
  ``n = num_keys + key`` its entry in CPU memory; nodes ``2*num_keys + c`` are the list sentinels
  of cache ``c``. Fields: the doubly linked list (LRU recency, FIFO insertion order) and each
  node's sequence number in that order, resident and in-flight flags, the policies' counters
  (count, last request, SCH window, Belady next use), the current priority and the position in
  the cache's heap, the stamps of the group being served (pinned) and of the prediction being
  prefetched, and simulator bookkeeping (op in flight, prefetched and unused, host-load waiters).
* ``cache[field, c]``: per-cache scalars (capacity, size, policy, request clock, heap size, SCH
  window end, activation releases applied, sentinel, sequence counter). Caches ``0..C-1`` are the
  GPU pool or its per-layer quotas; cache ``C`` is CPU memory.
* ``heap[c, i]``: an indexed binary min-heap for the priority policies (LFU, Belady, SCH,
  activation), ordered by ``(priority, node)`` exactly as the step form's heap of ``(rank, key)``.

The list or heap of a cache holds its *evictable* residents only: a key whose transfer is in
flight occupies a slot (it is resident) but cannot be evicted, so it joins the list (at the place
its sequence number gives it, where the step form's ordered dict has kept it all along) or the
heap (with its current priority) when the transfer lands. Victims are those of the step form: the
first unprotected entry in list order, or the smallest ``(priority, key)`` among unprotected
entries, found by a best-first walk of the heap; protected are the pinned keys of the group being
served and, while a prediction is prefetched, its own members, so a walk skips at most those.
Each operation is O(1) (lists) or O(log n) (heaps) plus those skips; a landing transfer walks the
list back over the keys touched during its flight.

Priorities (smaller is evicted first), as tuples of the step form packed into one int64:
LFU and activation ``count * 2**32 + last``, SCH ``window * 2**32 + last``, Belady ``-next``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LRU = 0
LFU = 1
FIFO = 2
BELADY = 3
SCH = 4
STATIC = 5
ACTIVATION = 6
POLICY_CODES = {
    "lru": LRU,
    "lfu": LFU,
    "fifo": FIFO,
    "belady": BELADY,
    "sch": SCH,
    "static": STATIC,
    "activation": ACTIVATION,
}

# node fields
N_PREV = 0
N_NEXT = 1
N_RES = 2
N_INFL = 3
N_COUNT = 4
N_LAST = 5
N_WIN = 6
N_NEXTUSE = 7
N_PRIO = 8
N_HPOS = 9
N_PIN = 10
N_LASTREQ = 11
N_OP = 12
N_PFU = 13
N_WAITH = 14
N_WAITT = 15
N_PRED = 16
N_SEQ = 17
NUM_NODE_FIELDS = 18

# cache fields
C_CAP = 0
C_SIZE = 1
C_POLICY = 2
C_CLOCK = 3
C_HSIZE = 4
C_WEND = 5
C_REL = 6
C_SENT = 7
C_SEQ = 8
NUM_CACHE_FIELDS = 9

_SHIFT = np.int64(1) << np.int64(32)


@intrinsic
def borrow(typingctx, array):
    """A view of ``array`` without its reference count (a NULL meminfo). Numba increfs and decrefs
    (atomically) every array argument of every call it does not inline; a kernel that owns its
    state arrays for the whole run hands its helpers borrowed views instead. The view must not
    outlive the array or leave the kernel, and it must be taken in a function the owner was passed
    to: numba frees an array right after its last use in the function that holds it, which may be
    the ``borrow`` call itself."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        owned = context.make_array(signature.args[0])(context, builder, args[0])
        view = context.make_array(signature.return_type)(context, builder)
        cgutils.copy_struct(view, owned)
        view.meminfo = context.get_constant_null(types.MemInfoPointer(types.voidptr))
        view.parent = context.get_constant_null(types.pyobject)
        return view._getvalue()

    return array(array), codegen


@njit(cache=True, nogil=True)
def new_tiers(num_keys, num_caches, heap_capacity):
    """Empty state for ``num_caches`` caches over ``2 * num_keys`` nodes (GPU and CPU entries)."""
    num_nodes = 2 * num_keys + num_caches
    node = np.zeros((NUM_NODE_FIELDS, num_nodes), dtype=np.int64)
    node[N_LAST, :] = -1
    node[N_HPOS, :] = -1
    node[N_LASTREQ, :] = -1
    node[N_OP, :] = -1
    node[N_WAITH, :] = -1
    node[N_WAITT, :] = -1
    cache = np.zeros((NUM_CACHE_FIELDS, num_caches), dtype=np.int64)
    for c in range(num_caches):
        sentinel = 2 * num_keys + c
        cache[C_SENT, c] = sentinel
        cache[C_REL, c] = -1
        node[N_PREV, sentinel] = sentinel
        node[N_NEXT, sentinel] = sentinel
        node[N_SEQ, sentinel] = -1
    heap = np.zeros((num_caches, max(heap_capacity, 1)), dtype=np.int64)
    return node, cache, heap


@njit(cache=True, nogil=True)
def uses_heap(policy):
    return policy == LFU or policy == BELADY or policy == SCH or policy == ACTIVATION


@njit(cache=True, nogil=True)
def _priority(node, policy, n):
    if policy == BELADY:
        return -node[N_NEXTUSE, n]
    if policy == SCH:
        return node[N_WIN, n] * _SHIFT + node[N_LAST, n]
    return node[N_COUNT, n] * _SHIFT + node[N_LAST, n]


@njit(cache=True, nogil=True)
def _less(node, a, b):
    pa = node[N_PRIO, a]
    pb = node[N_PRIO, b]
    return pa < pb or (pa == pb and a < b)


@njit(cache=True, nogil=True)
def _sift_up(node, heap, c, pos):
    n = heap[c, pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        p = heap[c, parent]
        if not _less(node, n, p):
            break
        heap[c, pos] = p
        node[N_HPOS, p] = pos
        pos = parent
    heap[c, pos] = n
    node[N_HPOS, n] = pos


@njit(cache=True, nogil=True)
def _sift_down(node, heap, c, pos, size):
    n = heap[c, pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _less(node, heap[c, child + 1], heap[c, child]):
            child += 1
        m = heap[c, child]
        if not _less(node, m, n):
            break
        heap[c, pos] = m
        node[N_HPOS, m] = pos
        pos = child
    heap[c, pos] = n
    node[N_HPOS, n] = pos


@njit(cache=True, nogil=True)
def refresh(node, cache, heap, c, n):
    """Reposition an evictable resident after its counters changed; a key in flight (or absent)
    takes its priority when it joins the heap."""
    if node[N_HPOS, n] < 0:
        return
    old = node[N_PRIO, n]
    new = _priority(node, cache[C_POLICY, c], n)
    node[N_PRIO, n] = new
    if new < old:
        _sift_up(node, heap, c, node[N_HPOS, n])
    elif new > old:
        _sift_down(node, heap, c, node[N_HPOS, n], cache[C_HSIZE, c])


@njit(cache=True, nogil=True)
def _unlink(node, n):
    prev = node[N_PREV, n]
    nxt = node[N_NEXT, n]
    node[N_NEXT, prev] = nxt
    node[N_PREV, nxt] = prev


@njit(cache=True, nogil=True)
def _link_after(node, prev, n):
    nxt = node[N_NEXT, prev]
    node[N_NEXT, prev] = n
    node[N_PREV, n] = prev
    node[N_NEXT, n] = nxt
    node[N_PREV, nxt] = n


@njit(cache=True, nogil=True)
def _join(node, cache, heap, c, n):
    """An evictable resident enters the list (by sequence number) or the heap (by priority)."""
    policy = cache[C_POLICY, c]
    if policy == LRU or policy == FIFO:
        prev = node[N_PREV, cache[C_SENT, c]]
        seq = node[N_SEQ, n]
        while node[N_SEQ, prev] > seq:  # the sentinel's -1 stops the walk
            prev = node[N_PREV, prev]
        _link_after(node, prev, n)
    elif policy != STATIC:
        node[N_PRIO, n] = _priority(node, policy, n)
        size = cache[C_HSIZE, c]
        heap[c, size] = n
        cache[C_HSIZE, c] = size + 1
        _sift_up(node, heap, c, size)


@njit(cache=True, nogil=True)
def insert(node, cache, heap, c, n, in_flight):
    """``n`` takes a slot of cache ``c`` (the caller made room); ``in_flight``: it is evictable
    only after :func:`landed`. Belady's next use is set by the caller."""
    node[N_RES, n] = 1
    cache[C_SIZE, c] += 1
    policy = cache[C_POLICY, c]
    if policy == LRU or policy == FIFO:
        node[N_SEQ, n] = cache[C_SEQ, c]
        cache[C_SEQ, c] += 1
    elif policy != BELADY and node[N_LAST, n] < 0:
        node[N_LAST, n] = cache[C_CLOCK, c]
    if in_flight:
        node[N_INFL, n] = 1
    else:
        _join(node, cache, heap, c, n)


@njit(cache=True, nogil=True)
def landed(node, cache, heap, c, n):
    """The transfer bringing ``n`` into cache ``c`` is complete: it becomes evictable."""
    node[N_INFL, n] = 0
    if node[N_RES, n] != 0:
        _join(node, cache, heap, c, n)


@njit(cache=True, nogil=True)
def evict(node, cache, heap, c, n):
    """``n`` (an evictable resident) leaves cache ``c``."""
    node[N_RES, n] = 0
    cache[C_SIZE, c] -= 1
    policy = cache[C_POLICY, c]
    if policy == LRU or policy == FIFO:
        _unlink(node, n)
    elif policy != STATIC:
        pos = node[N_HPOS, n]
        size = cache[C_HSIZE, c] - 1
        cache[C_HSIZE, c] = size
        node[N_HPOS, n] = -1
        if pos != size:
            last = heap[c, size]
            heap[c, pos] = last
            node[N_HPOS, last] = pos
            if _less(node, last, n):
                _sift_up(node, heap, c, pos)
            else:
                _sift_down(node, heap, c, pos, size)


@njit(cache=True, nogil=True)
def _protected(node, n, stamp, predicted):
    return node[N_PIN, n] == stamp or node[N_PRED, n] == predicted


@njit(cache=True, nogil=True)
def victim(node, cache, heap, scratch, c, stamp, predicted):
    """The resident the policy evicts: never one in flight (those are in no list or heap), pinned
    with ``stamp`` or marked with ``predicted`` (stamps are >= 1; -1 marks nothing); -1 if none."""
    policy = cache[C_POLICY, c]
    if policy == STATIC:
        return -1
    if policy == LRU or policy == FIFO:
        sentinel = cache[C_SENT, c]
        n = node[N_NEXT, sentinel]
        while n != sentinel:
            if not _protected(node, n, stamp, predicted):
                return n
            n = node[N_NEXT, n]
        return -1
    size = cache[C_HSIZE, c]
    if size == 0:
        return -1
    if not _protected(node, heap[c, 0], stamp, predicted):
        return heap[c, 0]
    # Best-first walk: a min-heap (in scratch) of heap positions whose parents were protected.
    count = 1
    scratch[0] = 0
    while count > 0:
        pos = scratch[0]
        count -= 1
        if count > 0:  # pop: move the last to the root and sift it down
            moved = scratch[count]
            i = 0
            while True:
                child = 2 * i + 1
                if child >= count:
                    break
                if child + 1 < count and _less(node, heap[c, scratch[child + 1]], heap[c, scratch[child]]):
                    child += 1
                if not _less(node, heap[c, scratch[child]], heap[c, moved]):
                    break
                scratch[i] = scratch[child]
                i = child
            scratch[i] = moved
        n = heap[c, pos]
        if not _protected(node, n, stamp, predicted):
            return n
        for child_pos in (2 * pos + 1, 2 * pos + 2):
            if child_pos < size:
                i = count
                count += 1
                while i > 0:
                    parent = (i - 1) >> 1
                    if not _less(node, heap[c, child_pos], heap[c, scratch[parent]]):
                        break
                    scratch[i] = scratch[parent]
                    i = parent
                scratch[i] = child_pos
    return -1


@njit(cache=True, nogil=True)
def room_for(node, cache, heap, scratch, c, stamp, predicted):
    """``Tier.can_take``: -2 if a slot is free, the victim to evict if one can be freed, else -1."""
    if cache[C_SIZE, c] < cache[C_CAP, c]:
        return -2
    return victim(node, cache, heap, scratch, c, stamp, predicted)


@njit(cache=True, nogil=True, inline="always")
def served(node, cache, heap, c, n, tokens, next_use):
    """The request just begun in cache ``c`` was served from it (hit, late prefetch or loaded)."""
    policy = cache[C_POLICY, c]
    if policy == LRU:
        node[N_SEQ, n] = cache[C_SEQ, c]
        cache[C_SEQ, c] += 1
        if node[N_INFL, n] == 0:
            sentinel = cache[C_SENT, c]
            if node[N_PREV, sentinel] != n:
                _unlink(node, n)
                _link_after(node, node[N_PREV, sentinel], n)
    elif policy == LFU:
        node[N_COUNT, n] += 1
        node[N_LAST, n] = cache[C_CLOCK, c]
        refresh(node, cache, heap, c, n)
    elif policy == BELADY:
        node[N_NEXTUSE, n] = next_use
        refresh(node, cache, heap, c, n)
    elif policy == SCH:
        node[N_WIN, n] -= 1
        node[N_LAST, n] = cache[C_CLOCK, c]
        refresh(node, cache, heap, c, n)
    elif policy == ACTIVATION:
        node[N_COUNT, n] += tokens
        node[N_LAST, n] = cache[C_CLOCK, c]
        refresh(node, cache, heap, c, n)


@njit(cache=True, nogil=True)
def bypassed(node, cache, heap, c, n, tokens, next_use):
    """The request just begun was served around cache ``c`` (CPU, staging): it still counts for the
    counting and future-reading policies; recency and insertion order concern residents only."""
    policy = cache[C_POLICY, c]
    if policy != LRU and policy != FIFO:
        served(node, cache, heap, c, n, tokens, next_use)
