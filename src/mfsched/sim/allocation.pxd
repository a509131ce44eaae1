# Types for Cython's compilation of allocation.py (pure Python mode; see mfsched._jit).
cimport cython
from libc.stdint cimport int64_t, uint8_t

ctypedef fused sortable:
    int64_t
    double

cdef double _REL_TOL, _BOUND_MARGIN, _INF
cdef Py_ssize_t _RUN, _RADIX_BITS, _RADIX_MIN

@cython.locals(n=Py_ssize_t, r=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, key=int64_t)
cpdef void allocate_subset(const double[::1] capacity, double[::1] residual, int64_t[::1] rows,
                           int64_t[:, ::1] links, double[:, ::1] weights, int64_t[::1] nlinks,
                           int64_t[::1] keys, double[::1] caps, double[::1] shares,
                           double[::1] rates, int64_t[::1] local_of, uint8_t[::1] frozen,
                           int64_t[::1] order, int64_t[::1] sort_tmp,
                           int64_t[:, ::1] scratch_ints, double[::1] scratch_demand,
                           int64_t[::1] scratch_capped) except *

@cython.locals(best=double, level=double, k=Py_ssize_t, k2=Py_ssize_t, d=double, g=int64_t,
               headroom=double, rate=double)
cdef bint _fill_single(double[::1] residual, double[::1] rates, int64_t f,
                       int64_t[:, ::1] links, double[:, ::1] weights, int64_t[::1] nlinks,
                       double[::1] caps, double[::1] shares) noexcept

@cython.locals(n_members=Py_ssize_t, n_local=Py_ssize_t, count=Py_ssize_t, glob=int64_t[:],
               demand=double[:], fan=int64_t[:], loc=int64_t, f=int64_t, k=Py_ssize_t,
               g=int64_t, m=Py_ssize_t, flows_of=int64_t[:], fill=int64_t[:],
               n_capped=Py_ssize_t, capped=int64_t[:], c=Py_ssize_t, cap_level=double[:],
               position=int64_t[:], by_level=int64_t[:], sort_tmp=int64_t[:], unsorted=int64_t[:],
               cap_ptr=Py_ssize_t, left=Py_ssize_t, level=double, bound=double,
               active=int64_t[:], n_active=Py_ssize_t, best=double, best_loc=int64_t,
               a=Py_ssize_t, d=double, headroom=double, best_cap=int64_t,
               frozen_caps=Py_ssize_t, kept=Py_ssize_t, e=Py_ssize_t, b=double)
cdef void _fill_class(const double[::1] capacity, double[::1] residual, int64_t[::1] local_of,
                      uint8_t[::1] frozen, double[::1] rates, int64_t[:] members,
                      int64_t[:, ::1] links, double[:, ::1] weights, int64_t[::1] nlinks,
                      double[::1] caps, double[::1] shares, int64_t[:, ::1] scratch_ints,
                      double[::1] scratch_demand, int64_t[::1] scratch_capped) except *

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, x=int64_t, v=sortable,
               lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, src=int64_t[:], dst=int64_t[:],
               in_out=bint, width=Py_ssize_t, xi=int64_t, xj=int64_t, vi=sortable, vj=sortable)
cpdef void _stable_sort(sortable[:] values, int64_t[:] items, int64_t[:] out,
                        int64_t[:] tmp) except *

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, lo=int64_t, first=int64_t, varying=int64_t,
               mask=int64_t, counts=int64_t[::1], src=int64_t[:], dst=int64_t[:], where=int,
               shift=int64_t, d=int64_t, start=int64_t, c=int64_t, x=int64_t)
cpdef void _stable_sort_ints(int64_t[:] values, int64_t[:] items, int64_t[:] out,
                             int64_t[:] tmp) except *

@cython.locals(count=Py_ssize_t, f=int64_t)
cdef (Py_ssize_t, Py_ssize_t) _freeze_capped(int64_t[:] capped, Py_ssize_t cap_ptr,
                                             Py_ssize_t n_capped, double level,
                                             uint8_t[::1] frozen, double[::1] rates,
                                             double[::1] residual, double[:] demand,
                                             int64_t[::1] local_of, int64_t[:, ::1] links,
                                             double[:, ::1] weights, int64_t[::1] nlinks,
                                             double[::1] caps, double[::1] shares) noexcept

@cython.locals(rate=double, k=Py_ssize_t, g=int64_t, w=double)
cdef Py_ssize_t _freeze(int64_t f, double level, uint8_t[::1] frozen, double[::1] rates,
                        double[::1] residual, double[:] demand, int64_t[::1] local_of,
                        int64_t[:, ::1] links, double[:, ::1] weights, int64_t[::1] nlinks,
                        double[::1] shares) noexcept
