# Types for Cython's compilation of red.py (pure Python mode; see mfsched._compiled).
cimport cython
from libc.stdint cimport int64_t, uint8_t

@cython.locals(n=Py_ssize_t, num_ports=Py_ssize_t, above_early=double[::1],
               above_all=double[::1], load=double[::1], alive=uint8_t[::1], count=Py_ssize_t,
               pool=Py_ssize_t, i=Py_ssize_t, k=Py_ssize_t, q=Py_ssize_t, p=int64_t,
               has_p2d=bint, t_early=double, t=double, first=bint, best_p=int64_t,
               t_all=double, victim=int64_t, best_bytes=double, on_port=double, own=bint)
cpdef object _feasibility_pass(const double[:] compute_end, const double[:] target,
                               const int64_t[:] early_ptr, const int64_t[:] early_port,
                               const double[:] early_bytes, const int64_t[:] req_ptr,
                               const int64_t[:] req_id, const int64_t[:] rp_ptr,
                               const int64_t[:] rp_port, const double[:] rp_bytes,
                               const double[:] cap, const int64_t[:] port_id, double now_s,
                               int64_t budget)
