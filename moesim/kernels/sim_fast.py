"""The simulator's fast path: the SimPy engine's timeline (:mod:`moesim.sim.des`) in one Numba pass.

The run is a few servers: the GPU stream and the CPU (FIFO), and the host->GPU, GPU->host (or one
half-duplex) and SSD links (one channel each; demand transfers before prefetches not yet started,
each class in issue order; with chunks a started prefetch yields at the next chunk boundary). A
step walks the MoE layers in order; at the end of a layer's dense work (time ``t``) every decision
of the layer is taken at once, as the DES takes them: hit/late/miss accounting against the expert
cache, routing of misses (``fetch``, ``cpu``, ``best``), evictions, prefetch issue. The transfers
and CPU work they start are then served by a small event loop over the servers' completions (the
links' waiting transfers are a heap keyed by ``(class, order)``, a prefetch promoted to demand
re-enters it with a new order, exactly as :meth:`moesim.sim.components.Link.promote` re-queues
it). The GPU needs no events: the layer's kernels run in ready order (hits at ``t`` in demand
order, fetched experts when their transfer ends), a max-plus recurrence whose gaps are the stalls.
Prefetches keep the links busy across layers; the loop serves them up to the next decision time.

Ties are resolved as SimPy resolves them where one event causes the other (a link released at
``t`` serves its queue before work started by anything that link's completion set off; a transfer
ending at a decision time has landed by then). Two independent events at exactly the same instant
(a measure-zero coincidence of real-valued costs) are taken in a fixed order (links h2d, d2h, ssd,
then the CPU), which SimPy may not share. The degenerate cases where that shows: transfers that
take no time (bandwidth so high that ``t + bytes / bandwidth == t``) *and* no compute between two
decisions, so a prefetch lands at the instant its expert is looked up: the fast path counts a hit,
SimPy's event sequence may say late; and CPU expert work that takes no time, so on a symmetric
duplex link a result starts back to the GPU at the very instant the next same-sized activation
transfer ends, and whether a waiting prefetch or that result gets the h2d link is SimPy's event
order. Real costs are positive, so neither arises from a scenario.

Entry point: :func:`simulate` (arrays and scalars in, arrays out); the wrapper is
:func:`moesim.sim.fast.run_fast`, the plain-Python twin is the DES itself. The kernel is one module
on purpose: numba's on-disk cache checks only the file that defines a function, so a kernel that
inlined helpers from another module would keep running their old code after that module changed.

Expert tiers
------------
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
from numba.extending import intrinsic, overload

# ---------------------------------------------------------------------------- expert tiers
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


def borrow(array):
    """A view of ``array`` without its reference count (a NULL meminfo); ``array`` itself in plain
    Python (``NUMBA_DISABLE_JIT=1``). Numba increfs and decrefs (atomically) every array argument
    of every call it does not inline; a kernel that owns its state arrays for the whole run hands
    its helpers borrowed views instead. The view must not outlive the array or leave the kernel, and
    it must be taken in a function the owner was passed to: numba frees an array right after its
    last use in the function that holds it, which may be the ``borrow`` call itself."""
    return array


@intrinsic
def _borrowed_view(typingctx, array):
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


@overload(borrow, jit_options={"cache": True, "nogil": True})
def _borrow_overload(array):
    if isinstance(array, types.Array):
        return lambda array: _borrowed_view(array)
    return None


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


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True, inline="always")
def bypassed(node, cache, heap, c, n, tokens, next_use):
    """The request just begun was served around cache ``c`` (CPU, staging): it still counts for the
    counting and future-reading policies; recency and insertion order concern residents only."""
    policy = cache[C_POLICY, c]
    if policy != LRU and policy != FIFO:
        served(node, cache, heap, c, n, tokens, next_use)


# ---------------------------------------------------------------------------- codes
PRED_NONE = 0
PRED_ORACLE = 1
PRED_PREVIOUS = 2
PRED_POPULARITY = 3
PRED_TRACE = 4
PREDICTOR_CODES = {"none": PRED_NONE, "oracle": PRED_ORACLE, "previous-token": PRED_PREVIOUS,
                   "popularity": PRED_POPULARITY, "trace": PRED_TRACE}

MISS_FETCH = 0
MISS_CPU = 1
MISS_BEST = 2
MISS_CODES = {"fetch": MISS_FETCH, "cpu": MISS_CPU, "best": MISS_BEST}

# params (int64)
P_STEPS = 0
P_LAYERS = 1
P_EXPERTS = 2
P_PER_LAYER = 3
P_POLICY = 4
P_CAPACITY = 5
P_SEGMENT = 6
P_HOST_CAPACITY = 7  # -1: CPU memory holds every expert
P_HOST_POLICY = 8
P_SSD_DIRECT = 9
P_PREDICTOR = 10
P_LOOKAHEAD = 11
P_MAX_EXPERTS = 12  # -1: no cap
P_CHUNK_BYTES = 13  # 0: no chunking
P_MISS = 14
P_DUPLEX = 15
P_EXPERT_BYTES = 16
P_TOP_K = 17
NUM_PARAMS = 18

# fparams (float64): combine, then bandwidth and latency of the links h2d, d2h, ssd
F_COMBINE = 0
F_BW = 1
F_LAT = 4
NUM_FPARAMS = 7
# and, in the kernel's copy of them, the 'best' estimate's constant terms
F_H2D_EXPERT_S = 7
F_SSD_EXPERT_S = 8

# links (np.int64, like every constant passed to a helper: numba compiles a helper again for
# each literal argument value it is called with)
LINK_H2D = np.int64(0)
LINK_D2H = np.int64(1)
LINK_SSD = np.int64(2)

# outputs: per-step float and int columns, per-layer int columns, totals
SF_START = 0
SF_END = 1
SF_LATENCY = 2
SF_GPU_BUSY = 3
SF_DENSE = 4
SF_EXPERT = 5
SF_OVERHEAD = 6
SF_STALL = 7
SF_STALL_FETCH = 8
SF_STALL_CPU = 9
STEP_FLOAT_COLUMNS = ("start_s", "end_s", "latency_s", "gpu_busy_s", "dense_s", "expert_gpu_s", "overhead_s",
                      "stall_s", "stall_fetch_s", "stall_cpu_s")
SI_H2D = 0
SI_D2H = 1
SI_SSD = 2
SI_HITS = 3
SI_MISSES = 4
SI_LATE = 5
SI_ISSUED = 6
SI_USEFUL = 7
SI_WASTED = 8
SI_CPU = 9
SI_STAGED = 10
STEP_INT_COLUMNS = ("h2d_bytes", "d2h_bytes", "ssd_bytes", "hits", "misses", "late_prefetches",
                    "prefetches_issued", "useful_prefetches", "wasted_prefetches", "cpu_experts", "staged_experts")
LI_HITS = 0
LI_MISSES = 1
LI_LATE = 2
LI_CPU = 3
LI_H2D = 4
LAYER_INT_COLUMNS = ("hits", "misses", "late_prefetches", "cpu_experts", "h2d_bytes")
TOTAL_FLOAT_FIELDS = ("total_time_s", "gpu_busy_s", "cpu_busy_s", "h2d_busy_s", "d2h_busy_s", "ssd_busy_s",
                      "demand_fetch_wait_s")
TOTAL_INT_FIELDS = ("prefetched_never_used", "demand_fetches")

ERROR_STUCK = 1  # demand work pending with no event to run (an engine bug)
ERROR_OPS = 2  # more work in flight than the pools were sized for (an engine bug)

# ---------------------------------------------------------------------------- state layout
# Numba passes every array argument of a call it does not inline by value (a struct of 7-9 words
# copied to the stack) and reference-counts it, so the state lives in a handful of arrays, the
# kernel hands its helpers borrowed views (:func:`borrow`) and the hot path (one
# demand, one layer) makes few calls.
#
# dem_i[field, d] / dem_f[field, d]: per-demand inputs, and the time each demand's work is done.
# Only the rows a run reads are filled (tokens: activation-aware; activation bytes and CPU time:
# misses may run on the CPU; stream positions: Belady); the others stay untouched memory.
DI_KEY = 0
DI_TOKENS = 1
DI_ACT = 2
DI_SIDX = 3
DI_NEXTPOS = 4
NUM_DI = 5
DF_GPU = 0
DF_CPU = 1
DF_READY = 2
NUM_DF = 3

# S (int64, 2-d): rows 0..12 the op pool (ops[field, op]: a fetch of an expert to the GPU or a CPU
# execution in flight), then the run row, the three link rows and the parameters.
O_KIND = 0
O_KEY = 1
O_DEMAND = 2  # demand whose kernel waits for it, or -1 (a prefetch nobody asked for yet)
O_CLASS = 3  # DEMAND or PREFETCH (the priority class of its transfers)
O_CACHED = 4  # holds a GPU slot
O_STAGE = 5
O_HOSTC = 6  # its SSD read reserved a slot in CPU memory
O_LINK = 7
O_LEFT = 8  # bytes of the current transfer still to move
O_ORDER = 9  # issue order of the current transfer on its link
O_WAIT = 10  # the current transfer waits in its link's queue
O_LAYER = 11  # counts its h2d bytes for the layer (a demand fetch): 1, else 0
O_NEXTW = 12  # next op waiting for the same host load
RUN = 13
LINK_ROW = 14  # + link
PARAMS = 17
NUM_S_ROWS = 18
KIND_FETCH = np.int64(0)
KIND_CPU = np.int64(1)
DEMAND = np.int64(0)
PREFETCH = np.int64(1)
_NO = np.int64(-1)  # no stamp, no demand
_ZERO = np.int64(0)
_ONE = np.int64(1)
_IN_FLIGHT = np.bool_(True)
_SETTLED = np.bool_(False)
_UNTIL_LAYER_DONE = np.bool_(True)
_UNTIL_LIMIT = np.bool_(False)
ST_SSD = 0  # SSD -> CPU memory read (a host load)
ST_DIRECT = 1  # SSD -> GPU read
ST_H2D = 2  # expert copy to the GPU
ST_HWAIT = 3  # waiting for another op's host load of the same expert
ST_ACT = 4  # activations to the CPU
ST_CPU = 5  # running on the CPU
ST_RESULT = 6  # result back to the GPU

# S[RUN, ...]: run state; from R_BASE the CPU's FIFO (max_ops slots) then the free ops (a stack)
R_STEP = 0
R_PENDING = 1  # demand work of the current layer not yet done
R_DEMAND_FETCHES = 2
R_FREE_TOP = 3
R_CPU_OP = 4
R_CPU_HEAD = 5
R_CPU_COUNT = 6
R_ERROR = 7
R_HOST_CACHE = 8
R_MAX_OPS = 9
R_STEP_H2D = 10  # running counters of the current step / layer (flushed at its end)
R_STEP_D2H = 11
R_STEP_SSD = 12
R_STEP_WASTED = 13
R_STEP_ISSUED = 14
R_STEP_STAGED = 15
R_STEP_CPU = 16
R_LAYER_H2D = 17
R_BASE = 24

# S[LINK_ROW + link, ...]: link state; from L_HEAP its waiting heap (keys, then the ops)
L_BUSY = 0  # op in service or -1
L_SIZE = 1  # bytes of the chunk in service
L_ORDER = 2  # next issue order
L_HSIZE = 3  # waiting-heap size
L_CHUNK = 4  # chunk bytes (0: whole transfers)
L_SLOTS = 5  # heap capacity
L_HEAP = 6

# F (float64, 2-d): rows
ISSUED = 0  # F[ISSUED, op]: when the op was issued
RUNF = 1
LINKF_ROW = 2  # + link
FPARAMS = 5
NUM_F_ROWS = 6
# F[RUNF, ...]
R_GPU_BUSY = 0
R_DENSE = 1
R_EXPERT = 2
R_OVERHEAD = 3
R_STALL_FETCH = 4
R_STALL_CPU = 5
R_FETCH_WAIT = 6
R_CPU_BUSY = 7
R_CPU_END = 8
R_H_H2D = 9
R_H_D2H = 10
R_H_CPU = 11
R_H_SSD = 12
# F[LINKF_ROW + link, ...]
LF_BW = 0
LF_LAT = 1
LF_END = 2
LF_SINCE = 3
LF_BUSY = 4

_CLASS_SHIFT = np.int64(1) << np.int64(40)
_INF = np.inf


# ---------------------------------------------------------------------------- links
@njit(cache=True, nogil=True, inline="always")
def _transfer_key(S, op):
    return S[O_CLASS, op] * _CLASS_SHIFT + S[O_ORDER, op]


@njit(cache=True, nogil=True, inline="always")
def _entry_valid(S, link, key, op):
    """A heap entry is stale once its transfer started or was re-queued with a new key."""
    return S[O_WAIT, op] == 1 and S[O_LINK, op] == link and _transfer_key(S, op) == key


@njit(cache=True, nogil=True)
def _lheap_sift_down(S, row, pos, size):
    slots = S[row, L_SLOTS]
    key = S[row, L_HEAP + pos]
    op = S[row, L_HEAP + slots + pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and S[row, L_HEAP + child + 1] < S[row, L_HEAP + child]:
            child += 1
        if S[row, L_HEAP + child] >= key:
            break
        S[row, L_HEAP + pos] = S[row, L_HEAP + child]
        S[row, L_HEAP + slots + pos] = S[row, L_HEAP + slots + child]
        pos = child
    S[row, L_HEAP + pos] = key
    S[row, L_HEAP + slots + pos] = op


@njit(cache=True, nogil=True)
def _lheap_push(S, link, op):
    """Queue ``op``'s transfer on ``link``; False if the heap is full of live entries (a bug)."""
    row = LINK_ROW + link
    slots = S[row, L_SLOTS]
    size = S[row, L_HSIZE]
    if size == slots:  # full of stale entries left by promotions: drop them
        kept = _ZERO
        for i in range(size):
            if _entry_valid(S, link, S[row, L_HEAP + i], S[row, L_HEAP + slots + i]):
                S[row, L_HEAP + kept] = S[row, L_HEAP + i]
                S[row, L_HEAP + slots + kept] = S[row, L_HEAP + slots + i]
                kept += 1
        for i in range(kept // 2 - 1, -1, -1):
            _lheap_sift_down(S, row, i, kept)
        size = kept
        if size == slots:
            return False
    key = _transfer_key(S, op)
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if S[row, L_HEAP + parent] <= key:
            break
        S[row, L_HEAP + pos] = S[row, L_HEAP + parent]
        S[row, L_HEAP + slots + pos] = S[row, L_HEAP + slots + parent]
        pos = parent
    S[row, L_HEAP + pos] = key
    S[row, L_HEAP + slots + pos] = op
    S[row, L_HSIZE] = size + 1
    S[O_WAIT, op] = 1
    return True


@njit(cache=True, nogil=True)
def _lheap_pop(S, link):
    """The waiting transfer with the smallest ``(class, order)``, or -1; stale entries are dropped."""
    row = LINK_ROW + link
    slots = S[row, L_SLOTS]
    while S[row, L_HSIZE] > 0:
        key = S[row, L_HEAP]
        op = S[row, L_HEAP + slots]
        size = S[row, L_HSIZE] - 1
        S[row, L_HSIZE] = size
        if size > 0:
            S[row, L_HEAP] = S[row, L_HEAP + size]
            S[row, L_HEAP + slots] = S[row, L_HEAP + slots + size]
            _lheap_sift_down(S, row, _ZERO, size)
        if _entry_valid(S, link, key, op):
            return op
    return -1


@njit(cache=True, nogil=True, inline="always")
def _link_start(S, F, link, op, now):
    """``op``'s next chunk starts on ``link`` (as Link.send: latency + size / bandwidth)."""
    row = LINK_ROW + link
    frow = LINKF_ROW + link
    left = S[O_LEFT, op]
    chunk = S[row, L_CHUNK]
    unit = chunk if chunk > 0 else (left if left > 1 else 1)
    size = unit if unit < left else left
    S[O_WAIT, op] = 0
    S[row, L_BUSY] = op
    S[row, L_SIZE] = size
    F[frow, LF_SINCE] = now
    F[frow, LF_END] = now + (F[frow, LF_LAT] + size / F[frow, LF_BW])


@njit(cache=True, nogil=True, inline="always")
def _link_request(S, F, link, op, num_bytes, now):
    """A new transfer of ``num_bytes`` for ``op`` (class ``S[O_CLASS, op]``) asks for ``link``."""
    row = LINK_ROW + link
    S[O_LINK, op] = link
    S[O_LEFT, op] = num_bytes
    S[O_ORDER, op] = S[row, L_ORDER]
    S[row, L_ORDER] += 1
    if S[row, L_BUSY] < 0:
        _link_start(S, F, link, op, now)
    elif not _lheap_push(S, link, op):
        S[RUN, R_ERROR] = ERROR_OPS


@njit(cache=True, nogil=True, inline="always")
def _link_chunk_done(S, F, link, now):
    """The chunk in service ends at ``now``; returns the op whose transfer is complete, or -1.
    A transfer with chunks left re-requests the link at once, so the waiting transfer with the
    smallest ``(class, order)`` (perhaps itself) goes next; otherwise the link's release grants the
    head of its queue before anything the completion sets off asks for it."""
    row = LINK_ROW + link
    frow = LINKF_ROW + link
    op = S[row, L_BUSY]
    F[frow, LF_BUSY] += now - F[frow, LF_SINCE]
    S[O_LEFT, op] -= S[row, L_SIZE]
    S[row, L_BUSY] = -1
    finished = op
    if S[O_LEFT, op] > 0:
        finished = -1
        if not _lheap_push(S, link, op):
            S[RUN, R_ERROR] = ERROR_OPS
    nxt = _lheap_pop(S, link) if S[row, L_HSIZE] > 0 else -1
    if nxt >= 0:
        _link_start(S, F, link, nxt, now)
    return finished


@njit(cache=True, nogil=True)
def _promote(S, op):
    """A prefetch becomes a demand (Link.promote): its transfer takes a new order in the demand
    class; if it is waiting it is re-queued, if it is moving its later chunks ask as a demand."""
    if S[O_CLASS, op] == DEMAND:
        return
    S[O_CLASS, op] = DEMAND
    stage = S[O_STAGE, op]
    if stage == ST_SSD or stage == ST_DIRECT or stage == ST_H2D:
        row = LINK_ROW + S[O_LINK, op]
        S[O_ORDER, op] = S[row, L_ORDER]
        S[row, L_ORDER] += 1
        if S[O_WAIT, op] == 1 and not _lheap_push(S, S[O_LINK, op], op):
            S[RUN, R_ERROR] = ERROR_OPS


# ---------------------------------------------------------------------------- CPU server and ops
@njit(cache=True, nogil=True, inline="always")
def _cpu_request(S, F, dem_f, op, now):
    """The CPU (a FIFO server) runs ``op``'s expert now or after those queued before it."""
    if S[RUN, R_CPU_OP] < 0:
        S[RUN, R_CPU_OP] = op
        F[RUNF, R_CPU_END] = now + dem_f[DF_CPU, S[O_DEMAND, op]]
    else:
        S[RUN, R_BASE + (S[RUN, R_CPU_HEAD] + S[RUN, R_CPU_COUNT]) % S[RUN, R_MAX_OPS]] = op
        S[RUN, R_CPU_COUNT] += 1


@njit(cache=True, nogil=True, inline="always")
def _cpu_done(S, F, dem_f, now):
    op = S[RUN, R_CPU_OP]
    F[RUNF, R_CPU_BUSY] += dem_f[DF_CPU, S[O_DEMAND, op]]
    S[RUN, R_CPU_OP] = -1
    if S[RUN, R_CPU_COUNT] > 0:
        nxt = S[RUN, R_BASE + S[RUN, R_CPU_HEAD]]
        S[RUN, R_CPU_HEAD] = (S[RUN, R_CPU_HEAD] + 1) % S[RUN, R_MAX_OPS]
        S[RUN, R_CPU_COUNT] -= 1
        S[RUN, R_CPU_OP] = nxt
        F[RUNF, R_CPU_END] = now + dem_f[DF_CPU, S[O_DEMAND, nxt]]
    return op


@njit(cache=True, nogil=True, inline="always")
def _new_op(S, F, kind, key, demand, cls, cached, layer_bytes, now):
    """An op from the free pool, or -1 (with the error set) when the pool is exhausted."""
    top = S[RUN, R_FREE_TOP]
    if top == 0:
        S[RUN, R_ERROR] = ERROR_OPS
        return -1
    top -= 1
    S[RUN, R_FREE_TOP] = top
    op = S[RUN, R_BASE + S[RUN, R_MAX_OPS] + top]
    S[O_KIND, op] = kind
    S[O_KEY, op] = key
    S[O_DEMAND, op] = demand
    S[O_CLASS, op] = cls
    S[O_CACHED, op] = cached
    S[O_STAGE, op] = -1
    S[O_HOSTC, op] = 0
    S[O_LINK, op] = -1
    S[O_WAIT, op] = 0
    S[O_LAYER, op] = layer_bytes
    S[O_NEXTW, op] = -1
    F[ISSUED, op] = now
    return op


@njit(cache=True, nogil=True, inline="always")
def _free_op(S, op):
    S[RUN, R_BASE + S[RUN, R_MAX_OPS] + S[RUN, R_FREE_TOP]] = op
    S[RUN, R_FREE_TOP] += 1


@njit(cache=True, nogil=True, inline="always")
def _continue(S, F, dem_i, op, now):
    """After CPU memory holds (or streamed) the expert: copy it to the GPU (fetch) or send the
    activations to the CPU (CPU execution)."""
    if S[O_KIND, op] == KIND_FETCH:
        size = S[PARAMS, P_EXPERT_BYTES]
        S[RUN, R_LAYER_H2D] += size * S[O_LAYER, op]
        S[RUN, R_STEP_H2D] += size
        S[O_STAGE, op] = ST_H2D
        _link_request(S, F, LINK_H2D, op, size, now)
    else:
        size = dem_i[DI_ACT, S[O_DEMAND, op]]
        S[RUN, R_STEP_D2H] += size
        S[O_STAGE, op] = ST_ACT
        _link_request(S, F, LINK_D2H if S[PARAMS, P_DUPLEX] != 0 else LINK_H2D, op, size, now)


@njit(cache=True, nogil=True)
def _host_resident(node, num_keys, key):
    n = num_keys + key
    return node[N_RES, n] != 0 and node[N_INFL, n] == 0


@njit(cache=True, nogil=True)
def _host_load(node, cache, heap, scratch, S, F, op, now):
    """SSD -> CPU memory for the op's expert (DesEngine.load_into_host), cached there when a slot
    can be freed; an expert already on its way into CPU memory is waited for instead."""
    hc = S[RUN, R_HOST_CACHE]
    n = S[PARAMS, P_LAYERS] * S[PARAMS, P_EXPERTS] + S[O_KEY, op]
    cache[C_CLOCK, hc] += 1
    if node[N_INFL, n] != 0:
        served(node, cache, heap, hc, n, _ZERO, _ZERO)
        S[O_STAGE, op] = ST_HWAIT
        tail = node[N_WAITT, n]
        if tail < 0:
            node[N_WAITH, n] = op
        else:
            S[O_NEXTW, tail] = op
        node[N_WAITT, n] = op
        return
    room = room_for(node, cache, heap, scratch, hc, _NO, _NO)
    if room != -1:
        if room >= 0:
            evict(node, cache, heap, hc, room)
        insert(node, cache, heap, hc, n, _IN_FLIGHT)
        served(node, cache, heap, hc, n, _ZERO, _ZERO)
        S[O_HOSTC, op] = 1
    else:
        bypassed(node, cache, heap, hc, n, _ZERO, _ZERO)
        S[O_HOSTC, op] = 0
    size = S[PARAMS, P_EXPERT_BYTES]
    S[RUN, R_STEP_SSD] += size
    S[O_STAGE, op] = ST_SSD
    _link_request(S, F, LINK_SSD, op, size, now)


@njit(cache=True, nogil=True)
def _start_op(node, cache, heap, scratch, S, F, dem_i, op, now):
    """What a spawned fetch_expert / run_on_cpu process does before its first wait."""
    if S[PARAMS, P_HOST_CAPACITY] < 0:
        _continue(S, F, dem_i, op, now)
        return
    num_keys = S[PARAMS, P_LAYERS] * S[PARAMS, P_EXPERTS]
    hc = S[RUN, R_HOST_CACHE]
    key = S[O_KEY, op]
    n = num_keys + key
    if _host_resident(node, num_keys, key):
        cache[C_CLOCK, hc] += 1
        served(node, cache, heap, hc, n, _ZERO, _ZERO)
        _continue(S, F, dem_i, op, now)
    elif S[O_KIND, op] == KIND_FETCH and S[PARAMS, P_SSD_DIRECT] != 0:
        cache[C_CLOCK, hc] += 1
        bypassed(node, cache, heap, hc, n, _ZERO, _ZERO)
        size = S[PARAMS, P_EXPERT_BYTES]
        S[RUN, R_STEP_SSD] += size
        S[O_STAGE, op] = ST_DIRECT
        _link_request(S, F, LINK_SSD, op, size, now)
    else:
        _host_load(node, cache, heap, scratch, S, F, op, now)


@njit(cache=True, nogil=True, inline="always")
def _stage_done(node, cache, heap, S, F, dem_i, dem_f, op, now):
    """The op's current transfer (or CPU run) ended at ``now``: move it to its next stage."""
    stage = S[O_STAGE, op]
    if stage == ST_H2D or stage == ST_DIRECT:
        key = S[O_KEY, op]
        if S[O_CACHED, op] != 0:
            landed(node, cache, heap, key // S[PARAMS, P_EXPERTS] if S[PARAMS, P_PER_LAYER] != 0 else 0, key)
            node[N_OP, key] = -1
        if S[O_CLASS, op] == DEMAND:
            S[RUN, R_DEMAND_FETCHES] += 1
            F[RUNF, R_FETCH_WAIT] += now - F[ISSUED, op]
        demand = S[O_DEMAND, op]
        if demand >= 0:
            dem_f[DF_READY, demand] = now
            S[RUN, R_PENDING] -= 1
        _free_op(S, op)
    elif stage == ST_ACT:
        S[O_STAGE, op] = ST_CPU
        _cpu_request(S, F, dem_f, op, now)
    elif stage == ST_CPU:
        size = dem_i[DI_ACT, S[O_DEMAND, op]]
        S[RUN, R_STEP_H2D] += size
        S[O_STAGE, op] = ST_RESULT
        _link_request(S, F, LINK_H2D, op, size, now)
    elif stage == ST_RESULT:
        dem_f[DF_READY, S[O_DEMAND, op]] = now
        S[RUN, R_PENDING] -= 1
        _free_op(S, op)
    else:  # ST_SSD
        n = S[PARAMS, P_LAYERS] * S[PARAMS, P_EXPERTS] + S[O_KEY, op]
        loaded = S[O_HOSTC, op] != 0
        if loaded:
            landed(node, cache, heap, S[RUN, R_HOST_CACHE], n)
        _continue(S, F, dem_i, op, now)
        if loaded:  # those waiting for this load go on after the loader, in the order they came
            waiter = node[N_WAITH, n]
            node[N_WAITH, n] = -1
            node[N_WAITT, n] = -1
            while waiter >= 0:
                following = S[O_NEXTW, waiter]
                S[O_NEXTW, waiter] = -1
                _continue(S, F, dem_i, waiter, now)
                waiter = following


@njit(cache=True, nogil=True, inline="always")
def _next_event(S, F):
    """``(time, server)`` of the earliest completion (servers: links 0-2, CPU 3), or (inf, -1)."""
    best = _INF
    which = -1
    for link in range(3):
        if S[LINK_ROW + link, L_BUSY] >= 0 and F[LINKF_ROW + link, LF_END] < best:
            best = F[LINKF_ROW + link, LF_END]
            which = link
    if S[RUN, R_CPU_OP] >= 0 and F[RUNF, R_CPU_END] < best:
        best = F[RUNF, R_CPU_END]
        which = 3
    return best, which


@njit(cache=True, nogil=True)
def _run_events(node, cache, heap, S, F, dem_i, dem_f, limit, until_layer_done):
    """Serve link and CPU completions in time order: those at or before ``limit``, or (layer
    mode) until the layer's demand work is all done."""
    while True:
        if until_layer_done and S[RUN, R_PENDING] == 0:
            return
        best, which = _next_event(S, F)
        if which < 0:
            if until_layer_done:
                S[RUN, R_ERROR] = ERROR_STUCK
            return
        if not until_layer_done and best > limit:
            return
        if which == 3:
            op = _cpu_done(S, F, dem_f, best)
        else:
            op = _link_chunk_done(S, F, which, best)
        if op >= 0:
            _stage_done(node, cache, heap, S, F, dem_i, dem_f, op, best)
        if S[RUN, R_ERROR] != 0:
            return


# ---------------------------------------------------------------------------- decisions
@njit(cache=True, nogil=True)
def _estimate_s(bandwidth_bps, latency_s, num_bytes, chunk_bytes):
    """LinkParams.duration_s."""
    if num_bytes <= 0:
        return 0.0
    if chunk_bytes <= 0:
        return latency_s + num_bytes / bandwidth_bps
    chunks = (num_bytes + chunk_bytes - 1) // chunk_bytes
    return chunks * latency_s + num_bytes / bandwidth_bps


@njit(cache=True, nogil=True, inline="always")
def _route(node, S, F, dem_i, dem_f, demand, key, now):
    """fetch or cpu for one miss; 'best' compares the horizon estimates of moesim.policies.miss."""
    policy = S[PARAMS, P_MISS]
    if policy != MISS_BEST:
        return policy
    duplex = S[PARAMS, P_DUPLEX] != 0
    ready = now
    in_host = S[PARAMS, P_HOST_CAPACITY] < 0 or _host_resident(node, S[PARAMS, P_LAYERS] * S[PARAMS, P_EXPERTS], key)
    if not in_host:
        ready = max(now, F[RUNF, R_H_SSD]) + F[FPARAMS, F_SSD_EXPERT_S]
    h2d_bw, h2d_lat = F[FPARAMS, F_BW + LINK_H2D], F[FPARAMS, F_LAT + LINK_H2D]
    fetch_arrival = max(ready, F[RUNF, R_H_H2D]) + F[FPARAMS, F_H2D_EXPERT_S]
    fetch_done = fetch_arrival + dem_f[DF_GPU, demand]
    act = dem_i[DI_ACT, demand]
    act_link = LINK_D2H if duplex else LINK_H2D
    horizon = R_H_D2H if duplex else R_H_H2D
    act_s = _estimate_s(F[FPARAMS, F_BW + act_link], F[FPARAMS, F_LAT + act_link], act, _ZERO)
    sent = max(now, F[RUNF, horizon]) + act_s
    computed = max(max(sent, F[RUNF, R_H_CPU]), ready) + dem_f[DF_CPU, demand]
    h2d_after_send = F[RUNF, R_H_H2D] if duplex else sent
    returned = max(computed, h2d_after_send) + _estimate_s(h2d_bw, h2d_lat, act, _ZERO)
    route = MISS_CPU if returned < fetch_done else MISS_FETCH
    if not in_host:
        F[RUNF, R_H_SSD] = ready
    if route == MISS_FETCH:
        F[RUNF, R_H_H2D] = fetch_arrival
    else:
        F[RUNF, horizon] = sent
        F[RUNF, R_H_CPU] = computed
        F[RUNF, R_H_H2D] = returned
    return route


@njit(cache=True, nogil=True)
def _new_group(node, cache, heap, S, offsets, dem_i, release_offsets, release_keys, release_counts, c, step, layer):
    """SCH.begin_request / ActivationAware.begin_request at the first request of a group."""
    policy = cache[C_POLICY, c]
    num_layers = S[PARAMS, P_LAYERS]
    per_layer = S[PARAMS, P_PER_LAYER] != 0
    if policy == SCH:
        num_groups = S[PARAMS, P_STEPS] if per_layer else S[PARAMS, P_STEPS] * num_layers
        group = step if per_layer else step * num_layers + layer
        limit = step + S[PARAMS, P_SEGMENT]
        end = max(cache[C_WEND, c], group)
        while end < num_groups:
            token = end if per_layer else end // num_layers
            if token >= limit:
                break
            g = end * num_layers + c if per_layer else end
            for d in range(offsets[g], offsets[g + 1]):
                n = dem_i[DI_KEY, d]
                node[N_WIN, n] += 1
                refresh(node, cache, heap, c, n)
            end += 1
        cache[C_WEND, c] = end
    elif policy == ACTIVATION:
        for s in range(cache[C_REL, c] + 1, step + 1):
            if per_layer:
                lo, hi = release_offsets[s * num_layers + c], release_offsets[s * num_layers + c + 1]
            else:
                lo, hi = release_offsets[s * num_layers], release_offsets[(s + 1) * num_layers]
            for i in range(lo, hi):
                n = release_keys[i]
                node[N_COUNT, n] -= release_counts[i]
                refresh(node, cache, heap, c, n)
        cache[C_REL, c] = step


@njit(cache=True, nogil=True)
def _observe(pop, dem_i, layer, lo, hi):
    """Popularity: count the layer's demand; keep each layer's experts sorted by (-count, id)
    (``pop[0]`` counts, ``pop[1]`` the order, ``pop[2]`` each expert's rank in it)."""
    for d in range(lo, hi):
        e = dem_i[DI_KEY, d] - layer * pop.shape[2]
        pop[0, layer, e] += 1
        count = pop[0, layer, e]
        pos = pop[2, layer, e]
        while pos > 0:
            other = pop[1, layer, pos - 1]
            if pop[0, layer, other] > count or (pop[0, layer, other] == count and other < e):
                break
            pop[1, layer, pos] = other
            pop[2, layer, other] = pos
            pos -= 1
        pop[1, layer, pos] = e
        pop[2, layer, e] = pos


@njit(cache=True, nogil=True)
def _propose(pop, S, offsets, dem_i, predicted_offsets, predicted_ids, step, layer, out):
    """The predictor's expert ids for its target layer (Predictor.propose); returns
    ``(target_layer, count)``, count -1 when nothing is proposed."""
    predictor = S[PARAMS, P_PREDICTOR]
    num_layers = S[PARAMS, P_LAYERS]
    if predictor == PRED_NONE:
        return 0, -1
    position = layer + S[PARAMS, P_LOOKAHEAD]
    target_step = step + position // num_layers
    if target_step >= S[PARAMS, P_STEPS]:
        return 0, -1
    target_layer = position % num_layers
    count = 0
    if predictor == PRED_ORACLE or predictor == PRED_PREVIOUS:
        source = target_step if predictor == PRED_ORACLE else target_step - 1
        if source >= 0:
            g = source * num_layers + target_layer
            for d in range(offsets[g], offsets[g + 1]):
                out[count] = dem_i[DI_KEY, d] - target_layer * S[PARAMS, P_EXPERTS]
                count += 1
    elif predictor == PRED_POPULARITY:
        for i in range(S[PARAMS, P_EXPERTS]):
            e = pop[1, target_layer, i]
            if pop[0, target_layer, e] <= 0:
                break
            out[count] = e
            count += 1
    elif predictor == PRED_TRACE:
        if target_step == step:
            g = target_step * num_layers + target_layer
            for i in range(predicted_offsets[g], predicted_offsets[g + 1]):
                out[count] = predicted_ids[i]
                count += 1
    limit = S[PARAMS, P_MAX_EXPERTS]
    if limit < 0 and predictor == PRED_POPULARITY:
        limit = S[PARAMS, P_TOP_K]
    if 0 <= limit < count:
        count = limit
    return target_layer, count


@njit(cache=True, nogil=True)
def _issue_prefetches(node, cache, heap, scratch, S, F, dem_i, first_pos, proposal, target_layer, count, stamp, spawn,
                      num_spawned, now):
    """DesEngine.issue_prefetches: in prediction order, each absent expert reserves a slot (never
    evicting a pinned, in-flight or predicted expert); returns the new number of spawned ops."""
    num_experts = S[PARAMS, P_EXPERTS]
    c = target_layer if S[PARAMS, P_PER_LAYER] != 0 else 0
    belady = cache[C_POLICY, c] == BELADY
    for i in range(count):
        node[N_PRED, target_layer * num_experts + proposal[i]] = stamp
    for i in range(count):
        key = target_layer * num_experts + proposal[i]
        if node[N_RES, key] != 0:  # resident or in flight
            continue
        room = room_for(node, cache, heap, scratch, c, stamp, stamp)
        if room == -1:
            continue
        if room >= 0:
            evict(node, cache, heap, c, room)
            if node[N_PFU, room] != 0:
                node[N_PFU, room] = 0
                S[RUN, R_STEP_WASTED] += 1
        if belady:  # the next request at or after the policy's cursor
            last = node[N_LASTREQ, key]
            node[N_NEXTUSE, key] = dem_i[DI_NEXTPOS, last] if last >= 0 else first_pos[key]
        insert(node, cache, heap, c, key, _IN_FLIGHT)
        op = _new_op(S, F, KIND_FETCH, key, _NO, PREFETCH, _ONE, _ZERO, now)
        if op < 0:
            return num_spawned
        node[N_OP, key] = op
        node[N_PFU, key] = 1
        S[RUN, R_STEP_ISSUED] += 1
        spawn[num_spawned] = op
        num_spawned += 1
    return num_spawned


@njit(cache=True, nogil=True)
def _miss(node, cache, heap, scratch, S, F, dem_i, dem_f, c, stamp, d, now):
    """A demand for an absent expert: route it, reserve a slot (or stage it) or send it to the CPU.
    Returns ``(op, category)`` with category 1 (the kernel waits for a fetch) or 2 (CPU)."""
    key = dem_i[DI_KEY, d]
    policy = cache[C_POLICY, c]
    tokens = dem_i[DI_TOKENS, d] if policy == ACTIVATION else 0
    next_use = dem_i[DI_NEXTPOS, d] if policy == BELADY else 0
    if _route(node, S, F, dem_i, dem_f, d, key, now) == MISS_FETCH:
        room = room_for(node, cache, heap, scratch, c, stamp, _NO)
        op = _new_op(S, F, KIND_FETCH, key, d, DEMAND, _ONE if room != -1 else _ZERO, _ONE, now)
        if op < 0:
            return op, 1
        if room != -1:
            if room >= 0:
                evict(node, cache, heap, c, room)
                if node[N_PFU, room] != 0:
                    node[N_PFU, room] = 0
                    S[RUN, R_STEP_WASTED] += 1
            if policy == BELADY:
                node[N_NEXTUSE, key] = dem_i[DI_SIDX, d]
            insert(node, cache, heap, c, key, _IN_FLIGHT)
            node[N_OP, key] = op
            served(node, cache, heap, c, key, tokens, next_use)
        else:  # no slot can be freed: stream it through a transient buffer
            bypassed(node, cache, heap, c, key, tokens, next_use)
            S[RUN, R_STEP_STAGED] += 1
        return op, 1
    bypassed(node, cache, heap, c, key, tokens, next_use)
    S[RUN, R_STEP_CPU] += 1
    return _new_op(S, F, KIND_CPU, key, d, DEMAND, _ZERO, _ZERO, now), 2


@njit(cache=True, nogil=True, inline="always")
def _gpu_layer(dem_f, F, category, order, lo, hi, now, combine_s):
    """The GPU stream for one layer from ``now``: hits at once in demand order, then the fetched
    experts in the order they became ready, a gap before one a stall (fetch); the combine waits
    for the last CPU result (a stall (cpu) if it is later). Returns the time the combine ends."""
    gpu_end = now
    num_waiting = 0
    for d in range(lo, hi):
        kind = category[d - lo]
        if kind == 0:
            duration = dem_f[DF_GPU, d]
            F[RUNF, R_GPU_BUSY] += duration
            F[RUNF, R_EXPERT] += duration
            gpu_end = gpu_end + duration
        elif kind == 1:
            # insertion sort by ready time (stable); the list is short and nearly sorted
            ready = dem_f[DF_READY, d]
            pos = num_waiting
            while pos > 0 and dem_f[DF_READY, order[pos - 1]] > ready:
                order[pos] = order[pos - 1]
                pos -= 1
            order[pos] = d
            num_waiting += 1
    for i in range(num_waiting):
        d = order[i]
        ready = dem_f[DF_READY, d]
        start = ready if ready > gpu_end else gpu_end
        gap = start - gpu_end
        if gap > 0:
            F[RUNF, R_STALL_FETCH] += gap
        duration = dem_f[DF_GPU, d]
        F[RUNF, R_GPU_BUSY] += duration
        F[RUNF, R_EXPERT] += duration
        gpu_end = start + duration
    done = gpu_end
    for d in range(lo, hi):
        if category[d - lo] == 2 and dem_f[DF_READY, d] > done:
            done = dem_f[DF_READY, d]
    gap = done - gpu_end
    if gap > 0:
        F[RUNF, R_STALL_CPU] += gap
    F[RUNF, R_GPU_BUSY] += combine_s
    F[RUNF, R_OVERHEAD] += combine_s
    return done + combine_s


# ---------------------------------------------------------------------------- the run
@njit(cache=True, nogil=True)
def _run_steps(node, cache, heap, scratch, S, F, dem_i, dem_f, demand_offsets, dense_s, head_s, predicted_offsets,
               predicted_ids, first_pos, release_offsets, release_keys, release_counts, pop, step_f, stepi, layeri,
               layer_f, category, order, proposal, spawn):
    """The run, step by step (every array a borrowed view of one :func:`simulate` owns); returns
    the time the last step ends."""
    num_steps = S[PARAMS, P_STEPS]
    num_layers = S[PARAMS, P_LAYERS]
    per_layer = S[PARAMS, P_PER_LAYER] != 0
    predictor = S[PARAMS, P_PREDICTOR]
    no_host = S[PARAMS, P_HOST_CAPACITY] < 0
    combine_s = F[FPARAMS, F_COMBINE]
    now = 0.0
    for step in range(num_steps):
        S[RUN, R_STEP] = step
        start = now
        busy0, dense0, expert0, overhead0 = F[RUNF, R_GPU_BUSY], F[RUNF, R_DENSE], F[RUNF, R_EXPERT], F[RUNF, R_OVERHEAD]
        stall_fetch0, stall_cpu0 = F[RUNF, R_STALL_FETCH], F[RUNF, R_STALL_CPU]
        for layer in range(num_layers):
            duration = dense_s[step * num_layers + layer]
            F[RUNF, R_GPU_BUSY] += duration
            F[RUNF, R_DENSE] += duration
            now = now + duration
            if _next_event(S, F)[0] <= now:
                _run_events(node, cache, heap, S, F, dem_i, dem_f, now, _UNTIL_LIMIT)
            stall_before = F[RUNF, R_STALL_FETCH] + F[RUNF, R_STALL_CPU]

            # DesEngine.serve_layer at the end of the dense work: every decision at once.
            g = step * num_layers + layer
            lo, hi = demand_offsets[g], demand_offsets[g + 1]
            c = layer if per_layer else 0
            policy = cache[C_POLICY, c]
            stamp = g + 1
            for d in range(lo, hi):
                node[N_PIN, dem_i[DI_KEY, d]] = stamp
            if predictor == PRED_POPULARITY:
                _observe(pop, dem_i, layer, lo, hi)
            S[RUN, R_LAYER_H2D] = 0
            cpu_before = S[RUN, R_STEP_CPU]
            num_spawned = _ZERO
            for d in range(lo, hi):
                key = dem_i[DI_KEY, d]
                cache[C_CLOCK, c] += 1
                if d == lo and (policy == SCH or policy == ACTIVATION):
                    _new_group(node, cache, heap, S, demand_offsets, dem_i, release_offsets, release_keys,
                               release_counts, c, step, layer)
                if node[N_RES, key] != 0:
                    tokens = dem_i[DI_TOKENS, d] if policy == ACTIVATION else 0
                    served(node, cache, heap, c, key, tokens, dem_i[DI_NEXTPOS, d] if policy == BELADY else 0)
                    if node[N_PFU, key] != 0:
                        node[N_PFU, key] = 0
                        stepi[step, SI_USEFUL] += 1
                    if node[N_INFL, key] == 0:
                        stepi[step, SI_HITS] += 1
                        layeri[layer, LI_HITS] += 1
                        category[d - lo] = 0
                    else:  # a prefetch on its way: late, promoted to demand
                        stepi[step, SI_LATE] += 1
                        layeri[layer, LI_LATE] += 1
                        op = node[N_OP, key]
                        _promote(S, op)
                        S[O_DEMAND, op] = d
                        S[RUN, R_PENDING] += 1
                        category[d - lo] = 1
                else:
                    stepi[step, SI_MISSES] += 1
                    layeri[layer, LI_MISSES] += 1
                    op, kind = _miss(node, cache, heap, scratch, S, F, dem_i, dem_f, c, stamp, d, now)
                    category[d - lo] = kind
                    spawn[num_spawned] = op
                    num_spawned += 1
                    S[RUN, R_PENDING] += 1
                node[N_LASTREQ, key] = d
            if predictor != PRED_NONE:
                target_layer, count = _propose(pop, S, demand_offsets, dem_i, predicted_offsets, predicted_ids, step,
                                               layer, proposal)
                if count > 0:
                    num_spawned = _issue_prefetches(node, cache, heap, scratch, S, F, dem_i, first_pos, proposal,
                                                    target_layer, count, stamp, spawn, num_spawned, now)
            for i in range(num_spawned):
                if no_host:
                    _continue(S, F, dem_i, spawn[i], now)
                else:
                    _start_op(node, cache, heap, scratch, S, F, dem_i, spawn[i], now)
            if S[RUN, R_PENDING] > 0:
                _run_events(node, cache, heap, S, F, dem_i, dem_f, now, _UNTIL_LAYER_DONE)
            if S[RUN, R_ERROR] != 0:
                return now
            layeri[layer, LI_H2D] += S[RUN, R_LAYER_H2D]
            layeri[layer, LI_CPU] += S[RUN, R_STEP_CPU] - cpu_before
            now = _gpu_layer(dem_f, F, category, order, lo, hi, now, combine_s)
            layer_f[layer] += (F[RUNF, R_STALL_FETCH] + F[RUNF, R_STALL_CPU]) - stall_before
        duration = head_s[step]
        F[RUNF, R_GPU_BUSY] += duration
        F[RUNF, R_OVERHEAD] += duration
        now = now + duration
        if _next_event(S, F)[0] <= now:
            _run_events(node, cache, heap, S, F, dem_i, dem_f, now, _UNTIL_LIMIT)
        step_f[step, SF_START] = start
        step_f[step, SF_END] = now
        step_f[step, SF_LATENCY] = now - start
        step_f[step, SF_GPU_BUSY] = F[RUNF, R_GPU_BUSY] - busy0
        step_f[step, SF_DENSE] = F[RUNF, R_DENSE] - dense0
        step_f[step, SF_EXPERT] = F[RUNF, R_EXPERT] - expert0
        step_f[step, SF_OVERHEAD] = F[RUNF, R_OVERHEAD] - overhead0
        step_f[step, SF_STALL_FETCH] = F[RUNF, R_STALL_FETCH] - stall_fetch0
        step_f[step, SF_STALL_CPU] = F[RUNF, R_STALL_CPU] - stall_cpu0
        step_f[step, SF_STALL] = step_f[step, SF_STALL_FETCH] + step_f[step, SF_STALL_CPU]
        for column, counter in ((SI_H2D, R_STEP_H2D), (SI_D2H, R_STEP_D2H), (SI_SSD, R_STEP_SSD),
                                (SI_WASTED, R_STEP_WASTED), (SI_ISSUED, R_STEP_ISSUED), (SI_STAGED, R_STEP_STAGED),
                                (SI_CPU, R_STEP_CPU)):
            stepi[step, column] += S[RUN, counter]
            S[RUN, counter] = 0
    return now


@njit(cache=True, nogil=True)
def _run_owned(node, cache, heap, scratch, S, F, dem_i, dem_f, demand_offsets, dense_s, head_s, predicted_offsets,
               predicted_ids, first_pos, release_offsets, release_keys, release_counts, pop, step_f, stepi, layeri,
               layer_f, category, order, proposal, spawn):
    """Runs :func:`_run_steps` on borrowed views. The caller's references keep every array alive
    until this call returns (numba frees an array after its last use, so the borrowing must not
    happen in the function that owns them)."""
    b = borrow
    return _run_steps(b(node), b(cache), b(heap), b(scratch), b(S), b(F), b(dem_i), b(dem_f), b(demand_offsets),
                      b(dense_s), b(head_s), b(predicted_offsets), b(predicted_ids), b(first_pos), b(release_offsets),
                      b(release_keys), b(release_counts), b(pop), b(step_f), b(stepi), b(layeri), b(layer_f),
                      b(category), b(order), b(proposal), b(spawn))


@njit(cache=True, nogil=True)
def _stream_positions(dem_i, demand_offsets, num_layers, num_experts, per_layer, first_pos):
    """Belady's view of the request stream of each cache (all demands for a pool, a layer's for a
    per-layer quota): each request's index in it, the index of its key's next request, and each
    key's first request; a key never requested again gets the step form's sentinel
    ``len(stream) + 1 + key``."""
    num_demands = dem_i.shape[1]
    num_keys = num_layers * num_experts
    length = np.zeros(num_layers, dtype=np.int64)  # per layer so far, then in all
    for g in range(len(demand_offsets) - 1):
        layer = g % num_layers
        for d in range(demand_offsets[g], demand_offsets[g + 1]):
            if per_layer:
                dem_i[DI_SIDX, d] = length[layer]
                length[layer] += 1
            else:
                dem_i[DI_SIDX, d] = d
    following = np.full(num_keys, -1, dtype=np.int64)
    for d in range(num_demands - 1, -1, -1):
        key = dem_i[DI_KEY, d]
        never = (length[key // num_experts] if per_layer else num_demands) + 1 + key
        dem_i[DI_NEXTPOS, d] = following[key] if following[key] >= 0 else never
        following[key] = dem_i[DI_SIDX, d]
    for key in range(num_keys):
        never = (length[key // num_experts] if per_layer else num_demands) + 1 + key
        first_pos[key] = following[key] if following[key] >= 0 else never


@njit(cache=True, nogil=True)
def simulate(params, fparams, demand_offsets, demand_ids, demand_tokens, dense_s, head_s, expert_gpu_s, expert_cpu_s,
             activation_bytes, predicted_offsets, predicted_ids, gpu_preload, host_preload, release_offsets,
             release_keys, release_counts):
    """Time a whole run (see the module docstring).

    Demand ``d`` of group ``g = step * L + layer`` asks for expert ``demand_ids[d]`` (int16; cache
    key ``layer * E + expert``) for ``demand_tokens[d]`` tokens (int32); ``predicted_*`` are the
    trace's predictions in the same layout; ``release_offsets`` [S*L+1] index the activation
    releases by (step, layer of the key). Returns ``(step_float [S, 10], step_int [S, 11],
    layer_int [L, 5], layer_stall_s [L], totals_float [7], totals_int [2], error)``; columns are
    named by the ``*_COLUMNS`` constants.
    """
    num_steps = params[P_STEPS]
    num_layers = params[P_LAYERS]
    num_experts = params[P_EXPERTS]
    num_keys = num_layers * num_experts
    num_demands = len(demand_ids)
    per_layer = params[P_PER_LAYER] != 0
    num_gpu_caches = num_layers if per_layer else 1
    capacity = params[P_CAPACITY]
    host_capacity = params[P_HOST_CAPACITY]
    keys_per_cache = num_experts if per_layer else num_keys
    heap_capacity = 1
    if uses_heap(params[P_POLICY]):
        heap_capacity = min(capacity, keys_per_cache)
    if host_capacity >= 0 and uses_heap(params[P_HOST_POLICY]):
        heap_capacity = max(heap_capacity, min(host_capacity, num_keys))
    node, cache, heap = new_tiers(num_keys, num_gpu_caches + 1, heap_capacity)
    for c in range(num_gpu_caches):
        cache[C_CAP, c] = capacity
        cache[C_POLICY, c] = params[P_POLICY]
    host = num_gpu_caches
    cache[C_CAP, host] = max(host_capacity, 0)
    cache[C_POLICY, host] = params[P_HOST_POLICY]
    scratch = np.zeros(2 * num_keys + 4, dtype=np.int64)

    dem_i = np.empty((NUM_DI, num_demands), dtype=np.int64)
    dem_f = np.empty((NUM_DF, num_demands), dtype=np.float64)
    largest_group = 0
    for g in range(len(demand_offsets) - 1):
        base = (g % num_layers) * num_experts
        lo, hi = demand_offsets[g], demand_offsets[g + 1]
        largest_group = max(largest_group, hi - lo)
        for d in range(lo, hi):
            dem_i[DI_KEY, d] = base + demand_ids[d]
    dem_f[DF_GPU] = expert_gpu_s
    if params[P_POLICY] == ACTIVATION:
        for d in range(num_demands):
            dem_i[DI_TOKENS, d] = demand_tokens[d]
    if params[P_MISS] != MISS_FETCH:
        dem_i[DI_ACT] = activation_bytes
        dem_f[DF_CPU] = expert_cpu_s
    first_pos = np.zeros(num_keys, dtype=np.int64)
    if params[P_POLICY] == BELADY:
        _stream_positions(dem_i, demand_offsets, num_layers, num_experts, per_layer, first_pos)

    # In flight at once: the layer's demand work plus prefetches, each holding a GPU slot.
    max_ops = largest_group + min(capacity * num_gpu_caches, num_keys) + 4
    heap_slots = 2 * max_ops + 8
    width = max(max_ops, R_BASE + 2 * max_ops, L_HEAP + 2 * heap_slots, NUM_PARAMS)
    S = np.zeros((NUM_S_ROWS, width), dtype=np.int64)
    S[PARAMS, :NUM_PARAMS] = params
    S[RUN, R_MAX_OPS] = max_ops
    S[RUN, R_FREE_TOP] = max_ops
    S[RUN, R_CPU_OP] = -1
    S[RUN, R_HOST_CACHE] = host
    for i in range(max_ops):
        S[RUN, R_BASE + max_ops + i] = max_ops - 1 - i
    F = np.zeros((NUM_F_ROWS, max(max_ops, NUM_FPARAMS, 16)), dtype=np.float64)
    F[FPARAMS, :NUM_FPARAMS] = fparams
    size, chunk = params[P_EXPERT_BYTES], params[P_CHUNK_BYTES]
    F[FPARAMS, F_H2D_EXPERT_S] = _estimate_s(fparams[F_BW + LINK_H2D], fparams[F_LAT + LINK_H2D], size, chunk)
    F[FPARAMS, F_SSD_EXPERT_S] = _estimate_s(fparams[F_BW + LINK_SSD], fparams[F_LAT + LINK_SSD], size, chunk)
    for link in range(3):
        S[LINK_ROW + link, L_BUSY] = -1
        S[LINK_ROW + link, L_SLOTS] = heap_slots
        F[LINKF_ROW + link, LF_BW] = fparams[F_BW + link]
        F[LINKF_ROW + link, LF_LAT] = fparams[F_LAT + link]
    S[LINK_ROW + LINK_H2D, L_CHUNK] = params[P_CHUNK_BYTES]
    S[LINK_ROW + LINK_SSD, L_CHUNK] = params[P_CHUNK_BYTES]
    step_f = np.zeros((num_steps, 10), dtype=np.float64)
    stepi = np.zeros((num_steps, 11), dtype=np.int64)
    layeri = np.zeros((num_layers, 5), dtype=np.int64)
    layer_f = np.zeros(num_layers, dtype=np.float64)
    pop = np.zeros((3, num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        for e in range(num_experts):
            pop[1, layer, e] = e
            pop[2, layer, e] = e

    # Preloads (Tier.preload): in order, while there is room; Belady's cursor is at the start.
    for key in gpu_preload:
        c = key // num_experts if per_layer else 0
        if node[N_RES, key] == 0 and cache[C_SIZE, c] < cache[C_CAP, c]:
            if cache[C_POLICY, c] == BELADY:
                node[N_NEXTUSE, key] = first_pos[key]
            insert(node, cache, heap, c, key, _SETTLED)
    if host_capacity >= 0:
        for key in host_preload:
            n = num_keys + key
            if node[N_RES, n] == 0 and cache[C_SIZE, host] < cache[C_CAP, host]:
                insert(node, cache, heap, host, n, _SETTLED)

    category = np.zeros(max(largest_group, 1), dtype=np.int64)
    order = np.zeros(max(largest_group, 1), dtype=np.int64)
    proposal = np.zeros(max(num_experts, 1), dtype=np.int64)
    spawn = np.zeros(largest_group + num_experts + 1, dtype=np.int64)
    now = _run_owned(node, cache, heap, scratch, S, F, dem_i, dem_f, demand_offsets, dense_s, head_s,
                     predicted_offsets, predicted_ids, first_pos, release_offsets, release_keys, release_counts, pop,
                     step_f, stepi, layeri, layer_f, category, order, proposal, spawn)
    error = S[RUN, R_ERROR]
    totals_f = np.zeros(7, dtype=np.float64)
    totals_i = np.zeros(2, dtype=np.int64)
    if error != 0:
        return step_f, stepi, layeri, layer_f, totals_f, totals_i, error
    totals_f[0] = now
    totals_f[1] = F[RUNF, R_GPU_BUSY]
    totals_f[2] = F[RUNF, R_CPU_BUSY]
    for link in range(3):  # a transfer still moving at the end counts up to the end
        busy = F[LINKF_ROW + link, LF_BUSY]
        if S[LINK_ROW + link, L_BUSY] >= 0:
            busy += now - F[LINKF_ROW + link, LF_SINCE]
        totals_f[3 + link] = busy
    totals_f[6] = F[RUNF, R_FETCH_WAIT]
    unused = 0
    for key in range(num_keys):
        unused += node[N_PFU, key]
    totals_i[0] = unused
    totals_i[1] = S[RUN, R_DEMAND_FETCHES]
    return step_f, stepi, layeri, layer_f, totals_f, totals_i, 0
