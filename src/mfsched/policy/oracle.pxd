# Types for Cython's compilation of oracle.py (pure Python mode; see mfsched._compiled).
cimport cython
from libc.stdint cimport int64_t, uint8_t

cdef double _OFFSET_S, _INF
cdef int64_t _CRITICAL, _BLOCKING, _P2D, _HOPELESS
cdef Py_ssize_t _KIND, _BATCH, _REQ, _PAIR, _TARGET, _LEVEL, _RANK
cdef Py_ssize_t _TOTAL, _SIZE, _BW, _OWN_BW, _DEADLINE
cdef int64_t _NONE, _BLOCKING_FLOW, _P2D_FLOW
cdef Py_ssize_t _LAYER, _DONE, _NLAYERS, _LO, _HI
cdef Py_ssize_t _PAIR_REQ, _PAIR_LAYERS
cdef Py_ssize_t _REQ_DEADLINE, _REQ_SUM

cpdef int64_t _rank(double laxity_s) except? -1

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, fid=int64_t, b=int64_t, left=double, pair=int64_t,
               need=double, rank=int64_t, level=int64_t, consumer=int64_t, compute=double,
               own=double, best=double, r=int64_t, tail=double, count=Py_ssize_t)
cpdef Py_ssize_t _oracle_walk(const int64_t[:] ids, const double[:] remaining, double now_s,
                              double critical_share, int64_t[:, ::1] fi, double[:, ::1] ff,
                              int64_t[:, ::1] bi, double[::1] bf, int64_t[:, ::1] pi,
                              double[::1] pf, double[:, ::1] rf, uint8_t[::1] rlive,
                              int64_t[::1] changed) except? -1
