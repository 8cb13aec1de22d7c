# Types for Cython's compilation of plan.py (setup.py): the .py stays plain
# Python, and runs as such when the extension is not built.
cimport cython

cdef class Write:
    cdef public object table, values, sparse, origin
    cdef public Py_ssize_t size

cdef class Request:
    cdef public object partition, counter, conditional, writes

cdef class Plan:
    cdef public object rows, counters, events, partitions

cdef class Settled:
    cdef public object limit
    cdef public dict tables
    cdef public Py_ssize_t count

cdef class Group:
    cdef public object part
    cdef public list writes
    cdef public Py_ssize_t size

cdef class EventFacts:
    cdef public Py_ssize_t text
    cdef public object both

cdef class Planner:
    cdef public object codec, paxos, max_statements, max_bytes, settled
    cdef public dict _event_conv
    cdef public list _rows
    @cython.locals(pairs=list, size=Py_ssize_t, spec=tuple)
    cdef tuple _event_write(self, dict ev)
    @cython.locals(ev=dict, key=tuple, values=list, rest=tuple, facts=EventFacts,
                   held=dict, size=Py_ssize_t, overhead=Py_ssize_t, width=Py_ssize_t,
                   nk=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t)
    cdef _row_writes(self, tuple spec, dict winners, dict groups, dict info, list conditional)
    cdef Write _counter_write(self, str table, tuple key, object n)
    @cython.locals(g=Group)
    cdef list _split(self, list groups, bint counter)

@cython.locals(g=Group)
cdef _add(dict groups, object part, Write write)
@cython.locals(g=Group)
cdef _add_first(dict groups, str kind, object first, Write write)
cdef Write _write(object table, object values, Py_ssize_t size, object sparse, object origin)
cdef Request _request(object part, list writes, object counter)
@cython.locals(g=Group)
cdef Group _group(object part, Write write)
