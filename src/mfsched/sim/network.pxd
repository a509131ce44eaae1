# Types for Cython's compilation of network.py (pure Python mode; see mfsched._jit).
cimport cython
from libc.stdint cimport int64_t, uint8_t
from .allocation cimport allocate_subset

cdef double _TIME_EPS_S, _BYTE_EPS, _INF, _FX, _RESERVE_SLACK
cdef int64_t _UNSET
cdef Py_ssize_t _NLINKS, _KEY, _ID, _NINTS, _SIZE, _REMAINING, _RATE, _CAP, _SHARE, _NFLOATS

@cython.locals(i=Py_ssize_t)
cpdef void _advance(double[:, ::1] floats, Py_ssize_t n, double dt) noexcept

@cython.locals(best=double, i=Py_ssize_t, rate=double, t=double)
cpdef double _time_to_next(double[:, ::1] floats, Py_ssize_t n) except? -1.0

@cython.locals(m=Py_ssize_t, ok=bint, top_paced=int64_t, first_free=int64_t, i=Py_ssize_t,
               g=Py_ssize_t, share=double)
cpdef double _reallocate(const double[::1] capacity, int64_t[::1] reserved, double[::1] residual,
                         int64_t[::1] rows, int64_t[:, ::1] links, double[:, ::1] weights,
                         int64_t[:, ::1] ints, double[:, ::1] floats, Py_ssize_t n,
                         bint paced, int64_t[::1] local_of, uint8_t[::1] frozen,
                         int64_t[::1] order, int64_t[::1] sort_tmp, int64_t[:, ::1] fill_ints,
                         double[::1] fill_demand, int64_t[::1] capped) except? -1.0

@cython.locals(k=Py_ssize_t, g=int64_t, share=double)
cpdef void _reserve(int64_t[::1] reserved, const double[::1] capacity, int64_t[:, ::1] links,
                    double[:, ::1] weights, int64_t[:, ::1] ints, Py_ssize_t i, double cap,
                    int64_t sign) except *

@cython.locals(i=Py_ssize_t, rate=double, k=Py_ssize_t, r=double)
cpdef void _alone_rates(const double[::1] capacity, int64_t[:, ::1] links, double[:, ::1] weights,
                        int64_t[:, ::1] ints, double[:, ::1] floats, Py_ssize_t n) except *

@cython.locals(k=Py_ssize_t, delivered=double, i=Py_ssize_t)
cpdef tuple _advance_done(double[:, ::1] floats, Py_ssize_t n, double dt, double time_eps,
                          double byte_eps, int64_t[::1] out)

@cython.locals(k=Py_ssize_t, j=Py_ssize_t)
cpdef void _put_row(int64_t[:, ::1] links, double[:, ::1] weights, int64_t[:, ::1] ints,
                    double[:, ::1] floats, Py_ssize_t i, int64_t flow_id,
                    const int64_t[:] row_links, const double[:] row_weights, double size_bytes,
                    double share) noexcept

@cython.locals(j=Py_ssize_t, r=Py_ssize_t)
cpdef void _move_row(int64_t[:, ::1] links, double[:, ::1] weights, int64_t[:, ::1] ints,
                     double[:, ::1] floats, Py_ssize_t src, Py_ssize_t dst) noexcept

cdef class FluidNetwork:
    cdef readonly object capacity_bytes_per_s
    cdef public bint check_invariants, contention_free, dirty
    cdef public double now_s, delivered_bytes
    cdef readonly list _ids
    cdef list _prio
    cdef readonly dict _pos
    cdef Py_ssize_t _unset, _paced
    cdef readonly int64_t[:, ::1] _links, _ints
    cdef readonly double[:, ::1] _weights, _floats
    cdef tuple _read_only
    cdef readonly int64_t[::1] _reserved
    cdef int64_t[::1] _done_buf, _rows_buf
    cdef double[::1] _residual
    # the allocator's working space (allocation.scratch_arrays)
    cdef int64_t[::1] _local_of, _order, _sort_tmp, _capped
    cdef uint8_t[::1] _frozen
    cdef int64_t[:, ::1] _fill_ints
    cdef double[::1] _fill_demand

    @cython.locals(n=Py_ssize_t, slots=Py_ssize_t, width=Py_ssize_t)
    cpdef add(self, int64_t flow_id, object links, object weights, double size_bytes,
              object priority=*, double share=*)
    @cython.locals(last=Py_ssize_t, fid=object, moved=object)
    cpdef _remove_at(self, Py_ssize_t i)
    @cython.locals(i=Py_ssize_t)
    cpdef set_priority(self, object flow_id, object priority)
    @cython.locals(dt=double)
    cpdef list advance_and_pop(self, double t)
    @cython.locals(n=Py_ssize_t, t_next=double)
    cpdef double reallocate(self) except? -1.0
    @cython.locals(k=Py_ssize_t, delivered=double, j=Py_ssize_t)
    cpdef list _pop(self, double dt)
