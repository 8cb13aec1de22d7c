# Types for Cython's compilation of stamps.py (setup.py): the .py stays plain
# Python, and runs as such when the extension is not built.

cpdef sub_ms(object created_ms, str eid)
cpdef tuple both_ts(object created_ms, object eid)
