"""Where a /pub/ request path leads: decoding and refusing (docs/static.md)."""
import os
import stat

HEX = frozenset(b"0123456789abcdefABCDEF")
INDEX = b"index.html"


# ---- paths ----------------------------------------------------------------
def _unquote(segment):
    """Percent-decode one path segment (bytes); None when an escape is malformed."""
    if b"%" not in segment:
        return segment
    parts = segment.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) < 2 or not all(c in HEX for c in code):
            return None
        out.append(bytes((int(code, 16),)))
        out.append(part[2:])
    return b"".join(out)


def split_path(rel):
    """The decoded segments of ``rel`` and whether it ended with "/"; None if refused.

    Refused: ".", "..", empty segments, hidden names (leading "."), and any
    segment that decodes to a separator, a backslash or NUL, so no spelling of
    a path can step out of the root or into a name the root did not mean.
    """
    if not rel:
        return [], True
    raw = rel.split(b"/")
    trailing = raw[-1] == b""
    if trailing:
        raw.pop()
    segments = []
    for piece in raw:
        name = _unquote(piece)
        if not name or name.startswith(b".") or b"/" in name or b"\\" in name or b"\0" in name:
            return None
        segments.append(name)
    return segments, trailing


def inside(root, real):
    """Whether the resolved path ``real`` is ``root`` or below it (both realpaths)."""
    return real == root or real.startswith(root + b"/")


class Found:
    """A resolved request path: ``real`` to open, ``lexical`` (the path as the
    request spelled it, symlinks unresolved) to re-check a cached copy."""
    __slots__ = ("real", "lexical", "directory")

    def __init__(self, real, lexical, directory=False):
        self.real = real
        self.lexical = lexical
        self.directory = directory      # a directory named without its "/"


def resolve(root, rel):
    """The regular file ``rel`` names under ``root`` (the root's realpath,
    bytes) as a Found, or None when refused or absent.

    Symlinks inside the tree are followed only while their target stays
    under the root; a directory resolves to its index.html.
    """
    split = split_path(rel)
    if split is None:
        return None
    segments, trailing = split
    lexical = os.path.join(root, *segments) if segments else root
    real = os.path.realpath(lexical)
    if not inside(root, real):
        return None
    try:
        st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            if segments and not trailing:
                return Found(real, lexical, directory=True)
            lexical = os.path.join(lexical, INDEX)
            real = os.path.realpath(lexical)
            if not inside(root, real):
                return None
            st = os.stat(real)
        elif trailing and segments:
            return None                 # "file.txt/": a file is not a directory
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Found(real, lexical)
