# Types for Cython's compilation of plan.py (setup.py): the .py stays plain
# Python, and runs as such when the extension is not built.
cimport cython

cdef class Write:
    cdef public object table, values, sparse, size, origin

cdef class Request:
    cdef public object partition, counter, conditional, writes

cdef class Plan:
    cdef public object rows, counters, events, partitions

cdef class Settled:
    cdef public object limit
    cdef public dict stamps

cdef class Planner:
    cdef public object codec, paxos, max_statements, max_bytes, settled
    cdef public dict _event_conv
    cdef public list _rows
    @cython.locals(pairs=list, size=Py_ssize_t, spec=tuple)
    cdef tuple _event_write(self, dict ev)
    @cython.locals(ev=dict, key=tuple, values=list, rest=tuple)
    cdef _row_writes(self, tuple spec, dict winners, dict rows, dict sizes, dict info,
                     dict stamps, list conditional)
    cdef Write _counter_write(self, str table, tuple key, object n)
    cdef list _split(self, dict groups, dict sizes, bint counter)

cdef _add(dict groups, dict sizes, object part, Write write)
