# Types for Cython's compilation of batchbook.py (pure Python mode; see mfsched._compiled).
cimport cython
from libc.stdint cimport int64_t

cdef Py_ssize_t _B_LAYER, _B_DONE, _B_NLAYERS, _B_EARLY_AT, _B_EARLY_N, _B_PAIRS_AT
cdef Py_ssize_t _B_PAIRS_N, _B_LIVE, _B_LAYER_S, _B_LOOSE_S
cdef Py_ssize_t _P_REQ, _P_P2D_AT, _P_P2D_N, _P_HEAD, _P_LIVE, _P_PRUNED, _P_EMITTED
cdef Py_ssize_t _F_PAIR, _F_AT, _F_N, _F_NEXT, _F_PREV, _F_LEFT, _F_SIZE

@cython.locals(k=Py_ssize_t, fid=int64_t, f=int64_t)
cpdef void _read_shares(const int64_t[:] ids, const double[:] remaining,
                        const int64_t[::1] slot_of_id, double[:, ::1] ff) except *

@cython.locals(nb=Py_ssize_t, ne=Py_ssize_t, nr=Py_ssize_t, nrp=Py_ssize_t, o=Py_ssize_t,
               s=int64_t, at=int64_t, j=int64_t, q=int64_t, f=int64_t, i=Py_ssize_t,
               e=Py_ssize_t, r=Py_ssize_t, k=Py_ssize_t, m=int64_t, done=bint, left=int64_t,
               share=double, future=int64_t, p2d=int64_t, compute_end=double[::1],
               target=double[::1], early_ptr=int64_t[::1], early_port=int64_t[::1],
               early_bytes=double[::1], req_ptr=int64_t[::1], req_id=int64_t[::1],
               rp_ptr=int64_t[::1], rp_port=int64_t[::1], rp_bytes=double[::1])
cpdef tuple _assemble(const int64_t[::1] order, double now_s, const int64_t[:, ::1] bi,
                      const double[:, ::1] bf, const int64_t[:, ::1] pi,
                      const int64_t[:, ::1] fi, const double[:, ::1] ff,
                      const int64_t[::1] pool_i, const double[::1] pool_f)
