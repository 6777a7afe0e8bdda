# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""The binding between the Python layer and the C++ core, and only that.

Every function takes a ``desc`` tuple ``(cell, dtype, T, B, I, H, L, D, bias[, peephole,
input_forget, clip])`` (the last three: LSTM variants, off when left out) and numpy arrays that
the caller (``rnnfast._rnn``) has already validated: C-contiguous, of the model's dtype, with the
shapes the core expects. ``None`` stands for an absent optional buffer. The GIL is released while
the core computes; C++ exceptions become Python exceptions.
"""
from libc.stdint cimport int32_t, int64_t, uint64_t
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "rnnfast.h" namespace "rnnfast":
    cdef cppclass Desc:
        int32_t cell
        int32_t dtype
        int64_t seq_len
        int64_t batch
        int64_t input_size
        int64_t hidden_size
        int64_t num_layers
        int64_t num_dirs
        int32_t has_bias
        int32_t peephole
        int32_t input_forget
        double clip

    cdef cppclass ForwardArgs:
        const void* params
        const void* packed
        const void* x
        const int64_t* lengths
        const void* h0
        const void* c0
        const void* dropout_mask
        void* y
        void* hn
        void* cn
        void* workspace

    cdef cppclass BackwardArgs:
        const void* dy
        const void* dhn
        const void* dcn
        void* dx
        void* dh0
        void* dc0
        void* dparams

    void check_desc(const Desc&) except +
    int64_t param_count(const Desc&) except +
    int64_t workspace_size(const Desc&) except +
    int64_t packed_size(const Desc&) except +
    void pack_weights(const Desc&, const void*, void*) except + nogil
    void forward(const Desc&, const ForwardArgs&) except + nogil
    void backward(const Desc&, const ForwardArgs&, const BackwardArgs&) except + nogil
    void gemm(int32_t, bint, bint, int64_t, int64_t, int64_t, const void*, int64_t, const void*,
              int64_t, void*, int64_t, bint) except + nogil
    void set_num_threads(int) except +
    int get_num_threads()
    int threads_for_call(const Desc&) except +
    int forward_panels_per_block(const Desc&) except +
    bint has_openmp()
    const char* isa_name()
    bint wide_fma()
    void eval_activation(int, const float*, float*, int64_t) except + nogil
    double measure_fma_peak(int, double) nogil
    double measure_read_bandwidth(int, int64_t, double) nogil
    bint select_isa(const char*)
    void set_fused_input_mode(int) except +
    int fused_input_mode()
    void set_wide_blocks_mode(int) except +
    int wide_blocks_mode()
    void set_stream_prefetch_mode(int) except +
    int stream_prefetch_mode()
    bint stream_prefetch_on()
    void set_pair_tiles_mode(int) except +
    int pair_tiles_mode()
    bint pair_tiles_on()


cdef extern from "team_tuner.h" namespace "rnnfast":
    cdef struct TeamPick:
        int n
        int slot
        int cand
    TeamPick pick_team(uint64_t, int, int, int)
    void record_team(const TeamPick&, double)
    void set_team_tuning_mode(int) except +
    int team_tuning_mode()
    int team_choice(uint64_t)
    uint64_t team_key(const Desc&, int, bint, bint, int)
    uint64_t idle_key(uint64_t, int)
    int idle_class(double, double, double)
    double idle_boundary()
    int kIdleClasses


cdef Desc _desc(tuple t) except *:
    cdef Desc d
    if len(t) == 9:
        t = t + (0, 0, 0.0)
    d.cell, d.dtype, d.seq_len, d.batch, d.input_size, d.hidden_size, d.num_layers, d.num_dirs, \
        d.has_bias, d.peephole, d.input_forget, d.clip = t
    check_desc(d)
    return d


cdef inline void* _ptr(object a):
    """Data pointer of a numpy array, or NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def core_param_count(tuple desc):
    return param_count(_desc(desc))


def core_workspace_size(tuple desc):
    return workspace_size(_desc(desc))


def core_packed_size(tuple desc):
    return packed_size(_desc(desc))


def core_pack(tuple desc, params, packed):
    cdef Desc d = _desc(desc)
    cdef const void* p = _ptr(params)
    cdef void* out = _ptr(packed)
    with nogil:
        pack_weights(d, p, out)


cdef ForwardArgs _fwd_args(params, packed, x, lengths, h0, c0, mask, y, hn, cn, ws):
    cdef ForwardArgs a
    a.params = _ptr(params)
    a.packed = _ptr(packed)
    a.x = _ptr(x)
    a.lengths = <const int64_t*>_ptr(lengths)
    a.h0 = _ptr(h0)
    a.c0 = _ptr(c0)
    a.dropout_mask = _ptr(mask)
    a.y = _ptr(y)
    a.hn = _ptr(hn)
    a.cn = _ptr(cn)
    a.workspace = _ptr(ws)
    return a


def core_forward(tuple desc, params, packed, x, lengths, h0, c0, mask, y, hn, cn, ws):
    cdef Desc d = _desc(desc)
    cdef ForwardArgs a = _fwd_args(params, packed, x, lengths, h0, c0, mask, y, hn, cn, ws)
    with nogil:
        forward(d, a)


cdef inline bint _usable(object a, int typenum, int ndim):
    """a is an ndarray of typenum in native byte order (a big-endian float32 has the same type
    number), aligned and C-contiguous, with ndim dimensions."""
    return type(a) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum and \
        cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a) \
        and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a) and cnp.PyArray_ISALIGNED(<cnp.ndarray>a)


cdef inline bint _state_ok(object a, int typenum, cnp.npy_intp* dims):
    """a is None or an array _usable as typenum, shaped dims[0:3]."""
    if a is None:
        return True
    if not _usable(a, typenum, 3):
        return False
    cdef cnp.npy_intp* s = cnp.PyArray_DIMS(<cnp.ndarray>a)
    return s[0] == dims[0] and s[1] == dims[1] and s[2] == dims[2]


def core_infer(tuple base, params, packed, x, h0, c0, bint lstm, bint batch_first):
    """Inference on full-length sequences (no lengths, no dropout), allocating the outputs here:
    the lean path of a model's ``__call__``. ``base`` is the model's description without T and B:
    ``(cell, dtype, I, H, L, D, bias, peephole, input_forget, clip)``.

    Returns ``(y, hn, cn)`` (``cn`` None unless ``lstm``), or None when an argument is not ready
    to hand to the core as it is (x not a C-contiguous, aligned, native-order 3-D array of the
    model's dtype with I features, an empty axis, a batch-first x with more than one row and step,
    a state of another dtype, byte order, layout or shape): the caller then takes the general
    path, which converts or explains."""
    cdef Desc d
    d.cell, d.dtype, d.input_size, d.hidden_size, d.num_layers, d.num_dirs, d.has_bias, \
        d.peephole, d.input_forget, d.clip = base
    cdef int typenum = cnp.NPY_FLOAT32 if d.dtype == 0 else cnp.NPY_FLOAT64
    if not _usable(x, typenum, 3):
        return None
    cdef cnp.npy_intp* xs = cnp.PyArray_DIMS(<cnp.ndarray>x)
    if xs[2] != d.input_size or xs[0] == 0 or xs[1] == 0:
        return None
    if batch_first:
        # (B, T, I) holds the same bytes as (T, B, I) when either axis is 1; so does y
        if xs[0] != 1 and xs[1] != 1:
            return None
        d.seq_len, d.batch = xs[1], xs[0]
    else:
        d.seq_len, d.batch = xs[0], xs[1]
    cdef cnp.npy_intp sdims[3]
    sdims[0] = d.num_layers * d.num_dirs
    sdims[1] = d.batch
    sdims[2] = d.hidden_size
    if not (_state_ok(h0, typenum, sdims) and _state_ok(c0, typenum, sdims)):
        return None
    check_desc(d)
    cdef cnp.npy_intp ydims[3]
    ydims[0] = xs[0]
    ydims[1] = xs[1]
    ydims[2] = d.num_dirs * d.hidden_size
    y = cnp.PyArray_EMPTY(3, ydims, typenum, 0)
    hn = cnp.PyArray_EMPTY(3, sdims, typenum, 0)
    cn = cnp.PyArray_EMPTY(3, sdims, typenum, 0) if lstm else None
    cdef ForwardArgs a = _fwd_args(params, packed, x, None, h0, c0, None, y, hn, cn, None)
    with nogil:
        forward(d, a)
    return y, hn, cn


def core_backward(tuple desc, params, packed, x, lengths, h0, c0, mask, ws,
                  dy, dhn, dcn, dx, dh0, dc0, dparams):
    cdef Desc d = _desc(desc)
    cdef ForwardArgs a = _fwd_args(params, packed, x, lengths, h0, c0, mask, None, None, None, ws)
    cdef BackwardArgs b
    b.dy = _ptr(dy)
    b.dhn = _ptr(dhn)
    b.dcn = _ptr(dcn)
    b.dx = _ptr(dx)
    b.dh0 = _ptr(dh0)
    b.dc0 = _ptr(dc0)
    b.dparams = _ptr(dparams)
    with nogil:
        backward(d, a, b)


def core_gemm(a, b, c, bint trans_a=False, bint trans_b=False, bint accumulate=False):
    """c (=|+=) op(a) @ op(b) on the core's kernels. a, b, c: 2-D C-contiguous arrays of one
    float dtype; op(a) = a or a.T, op(b) = b or b.T; c must have the product's shape."""
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2 or not (a.dtype == b.dtype == c.dtype) or \
            a.dtype.char not in "fd" or not a.dtype.isnative or \
            not all(m.flags.c_contiguous and m.flags.aligned for m in (a, b, c)) or \
            not c.flags.writeable:
        raise ValueError("core_gemm needs 2-D C-contiguous aligned arrays of one native float "
                         "dtype")
    cdef int64_t M = a.shape[1] if trans_a else a.shape[0]
    cdef int64_t K = a.shape[0] if trans_a else a.shape[1]
    cdef int64_t Kb = b.shape[1] if trans_b else b.shape[0]
    cdef int64_t N = b.shape[0] if trans_b else b.shape[1]
    if K != Kb or c.shape[0] != M or c.shape[1] != N:
        raise ValueError(f"core_gemm: shapes do not chain: op(a) {M}x{K}, op(b) {Kb}x{N}, "
                         f"c {c.shape}")
    cdef int32_t dt = 0 if a.dtype.char == "f" else 1
    cdef const void* pa = _ptr(a)
    cdef const void* pb = _ptr(b)
    cdef void* pc = _ptr(c)
    cdef int64_t lda = a.shape[1], ldb = b.shape[1], ldc = c.shape[1]
    with nogil:
        gemm(dt, trans_a, trans_b, M, N, K, pa, lda, pb, ldb, pc, ldc, accumulate)


def core_set_num_threads(int n):
    set_num_threads(n)


def core_get_num_threads():
    return get_num_threads()


def core_threads_for_call(tuple desc):
    return threads_for_call(_desc(desc))


def core_forward_panels_per_block(tuple desc):
    """Kernel panels per scheduled block of a forward call's time loop (1, or 4 at batches of 1-4
    rows); results do not depend on it. For tests."""
    return forward_panels_per_block(_desc(desc))


def core_fma_peak(int threads, double seconds=0.3):
    cdef double r
    with nogil:
        r = measure_fma_peak(threads, seconds)
    return r


def core_read_bandwidth(int threads, int64_t nbytes, double seconds=0.2):
    cdef double r
    with nogil:
        r = measure_read_bandwidth(threads, nbytes, seconds)
    return r


def core_activation(int which, x, y):
    """y = activation(x) for float32 C-contiguous arrays of the same size (which: 0 sigmoid,
    1 tanh, 2 exp), computed by the active path's vectorised code."""
    if x.dtype != np.float32 or y.dtype != np.float32 or x.size != y.size or \
            not x.flags.c_contiguous or not y.flags.c_contiguous or not x.flags.aligned or \
            not y.flags.aligned or not y.flags.writeable:
        raise ValueError("x and y must be C-contiguous native float32 arrays of the same size "
                         "(y writeable)")
    cdef const float* px = <const float*>_ptr(x)
    cdef float* py = <float*>_ptr(y)
    cdef int64_t n = x.size
    with nogil:
        eval_activation(which, px, py, n)


def core_has_openmp():
    return has_openmp()


def core_isa_name():
    return isa_name().decode()


def core_wide_fma():
    """Whether the active path's vector FMAs run at full rate on this CPU (see threads_for_call)."""
    return bool(wide_fma())


def core_select_isa(str name):
    return select_isa(name.encode())


def core_set_fused_input_mode(int mode):
    """How forward computes the input projection: -1 automatic (default), 0 one GEMM over all
    steps first, 1 fused into the time loop wherever the shape allows. Tests and benchmarks only."""
    set_fused_input_mode(mode)


def core_fused_input_mode():
    return fused_input_mode()


def core_set_wide_blocks_mode(int mode):
    """Whether a forward of 1-4 batch rows schedules blocks of 4 kernel panels: -1 automatic
    (default), 0 never, 1 always (results are bitwise the same). Tests and benchmarks only."""
    set_wide_blocks_mode(mode)


def core_wide_blocks_mode():
    return wide_blocks_mode()


def core_set_stream_prefetch_mode(int mode):
    """Whether the GEMM micro-kernels prefetch long weight panels in software: -1 automatic
    (default: on, except on AMD family 19h), 0 never, 1 always (results are bitwise the same).
    Tests and benchmarks only."""
    set_stream_prefetch_mode(mode)


def core_stream_prefetch_mode():
    return stream_prefetch_mode()


def core_stream_prefetch_on():
    """The prefetch setting in force (the automatic choice resolved for this CPU)."""
    return bool(stream_prefetch_on())


def core_set_pair_tiles_mode(int mode):
    """Whether a batch-1 step computes its one-row recurrent tiles over long panels, and a
    one-step call its one-row input projection, two panels at a time: -1 automatic (default: on
    for the AVX-512 path on AMD family 19h), 0 never, 1 always. Results are bitwise the same.
    Tests and benchmarks only."""
    set_pair_tiles_mode(mode)


def core_pair_tiles_mode():
    return pair_tiles_mode()


def core_pair_tiles_on():
    """The pair-tiles setting in force (the automatic choice resolved for this CPU)."""
    return bool(pair_tiles_on())


def core_set_team_tuning_mode(int mode):
    """Whether calls near the team-size thresholds pick their thread count by timing both
    candidates (csrc/team_tuner.h): -1 automatic (default, on), 0 off (the fixed thresholds),
    1 on. Results are bitwise the same either way. Tests and benchmarks only."""
    set_team_tuning_mode(mode)


def core_team_tuning_mode():
    return team_tuning_mode()


def core_team_tuner_replay(uint64_t key, int lo, int hi, list phases, int fixed=-1):
    """Drive the calling thread's tuner entry `key` (candidates lo < hi threads; `fixed`, the
    fixed thresholds' choice, default lo) with made-up call costs instead of real calls: phases is
    a list of (calls, seconds at lo, seconds at hi). Returns the team size picked for every call.
    For tests of the policy (team_tuner.cpp)."""
    cdef TeamPick p
    picked = []
    if fixed < 0:
        fixed = lo
    for calls, t_lo, t_hi in phases:
        for _ in range(calls):
            p = pick_team(key, lo, hi, fixed)
            picked.append(p.n)
            record_team(p, t_lo if p.n == lo else t_hi)
    return picked


def core_team_choice(tuple desc, int kind, bint from_state=False, bint ragged=False, int idle=0):
    """The calling thread's current team size for calls of this shape (kind 0 inference,
    1 training forward, 2 backward) in pause class `idle` (0: warm calls), 0 when it has not tuned
    one. For tests."""
    return team_choice(idle_key(team_key(_desc(desc), kind, from_state, ragged,
                                         get_num_threads()), idle))


def core_idle_class(double since_call, double since_team, double boundary):
    """The pause class of a call (csrc/team_tuner.h) that starts since_call seconds after the
    thread's previous call ended and since_team seconds after its last multi-thread call ended,
    with OpenMP's workers spinning `boundary` seconds before they sleep: 0 warm, else
    1..core_idle_classes(). For tests."""
    return idle_class(since_call, since_team, boundary)


def core_idle_boundary():
    """How long OpenMP's workers are taken to spin before they sleep, in seconds (at least 1 ms;
    inf: never)."""
    return idle_boundary()


def core_idle_classes():
    """The number of pause classes (the last one holds every longer pause). For tests."""
    return kIdleClasses
