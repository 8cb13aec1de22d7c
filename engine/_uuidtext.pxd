# UUID text -> its 16 bytes, for the compiled modules that bind uuids given
# as text (the SQLite writer, the CQL framer): one parser, inlined into each
# (C, so that the table below is a constant of every module that cimports
# this, not a module global shared through an import).
#
# The text it reads is uuid.UUID's, less the braces and the "urn:uuid:"
# prefix: 32 hex digits in either case, '-' anywhere between them. The
# request path's own parser (engine/_parse.pyx, cookies and ids) is
# stricter on purpose: 8-4-4-4-12 or 32 digits, and not the nil uuid; it
# shares the hex digit table.

cdef extern from *:
    """
    /* a byte's value as a hex digit, else -1 */
    static const signed char tracker_hex_digit[256] = {
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
         0,  1,  2,  3,  4,  5,  6,  7,  8,  9, -1, -1, -1, -1, -1, -1,
        -1, 10, 11, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, 10, 11, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    };

    /* where each byte's two digits start in 8-4-4-4-12 text */
    static const unsigned char tracker_uuid_digit_at[16] = {
        0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

    /* The 16 bytes of uuid text s (n bytes of UTF-8) into out; 0 if it is
       not uuid text. The canonical form goes in one pass without branches
       per digit: the sign bit of any -1 survives the OR. */
    static int tracker_uuid_from_text(const unsigned char *s, Py_ssize_t n,
                                      unsigned char *out) {
        int k = 0, hi = -1, v, bad = 0;
        Py_ssize_t i;
        if (n == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-') {
            for (k = 0; k < 16; k++) {
                hi = tracker_hex_digit[s[tracker_uuid_digit_at[k]]];
                v = tracker_hex_digit[s[tracker_uuid_digit_at[k] + 1]];
                bad |= hi | v;
                out[k] = (unsigned char)(((unsigned)hi << 4) | ((unsigned)v & 15u));
            }
            return bad >= 0;
        }
        k = 0;
        hi = -1;
        for (i = 0; i < n; i++) {
            if (s[i] == '-')
                continue;
            v = tracker_hex_digit[s[i]];
            if (v < 0 || k >= 16)
                return 0;
            if (hi < 0) {
                hi = v;
            } else {
                out[k++] = (unsigned char)(((unsigned)hi << 4) | (unsigned)v);
                hi = -1;
            }
        }
        return k == 16 && hi < 0;
    }
    """
    # a byte's value as a hex digit, else -1 (also the request parser's)
    const signed char hex_digit "tracker_hex_digit"[256]
    bint uuid_from_text "tracker_uuid_from_text" (const unsigned char *s, Py_ssize_t n,
                                                 unsigned char *out) noexcept nogil
