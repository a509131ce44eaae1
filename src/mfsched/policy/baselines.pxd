# Types for Cython's compilation of baselines.py (pure Python mode; see mfsched._compiled).
cimport cython
from libc.stdint cimport int64_t

cdef double _NS, _INF

@cython.locals(n_levels=Py_ssize_t, count=Py_ssize_t, wake=double, i=Py_ssize_t, fid=int64_t,
               size_bytes=double, rate=double, sent=double, new=int64_t, old=int64_t,
               step=double)
cpdef (Py_ssize_t, double) _pias_walk(const int64_t[:] ids, const double[:] remaining,
                                      const double[:] rates, double[::1] size,
                                      int64_t[::1] level, const double[::1] thresholds,
                                      double now_s, int64_t[::1] changed) except *
