# Types for Cython's compilation of fanout.py (setup.py): the .py stays plain
# Python, and runs as such when the extension is not built.

cdef _earliest(dict table, tuple key, dict ev)
cdef _latest(dict table, tuple key, dict ev)
cdef _bump(dict table, tuple key)
