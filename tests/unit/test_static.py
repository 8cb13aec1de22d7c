"""Static files: path resolution, Range, conditionals, cache and streaming,
without sockets (a fake transport for FileStream)."""
import hashlib
import os

import pytest

from engine import static
from engine.config import config_from_dict
from engine.http.responses import DateHeader
from engine.static import (UNSATISFIABLE, ContentTypes, FileCache, FileStream, StaticFiles,
                           if_range_holds, parse_range, precondition, resolve, split_path)

OLD = 1_600_000_000          # a settled mtime (2020), so files are cacheable


def parse(response):
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers[name.lower().decode()] = value.decode()
    return status, headers, body


class Req:
    def __init__(self, method=b"GET", **headers):
        self.method = method
        self.headers = {k.replace("_", "-").encode(): v.encode() for k, v in headers.items()}


def write(path, data, mtime=OLD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def root(tmp_path):
    www = tmp_path / "www"
    write(www / "hello.txt", b"hello, world\n")
    write(www / "sub" / "index.html", b"<p>index</p>")
    (www / "empty").mkdir()
    write(tmp_path / "secret.txt", b"outside the root")
    return www


def files(root, **config):
    cfg = config_from_dict({"StaticDirectory": str(root), **config})
    return StaticFiles(cfg, DateHeader())


def get(server, rel, method=b"GET", keep=True, **headers):
    status, answer = server.serve(Req(method, **headers), rel, keep, False)
    assert isinstance(answer, bytes)
    parsed = parse(answer)
    assert parsed[0] == status
    return parsed


# ---- paths ----------------------------------------------------------------------
@pytest.mark.parametrize("rel", [
    b"..", b"../secret.txt", b"a/../../secret.txt", b".", b"./hello.txt", b"a/./b",
    b"%2e%2e/secret.txt", b"%2E%2e/secret.txt", b".%2e/secret.txt", b"%2e",
    b"a%2f..%2fsecret.txt", b"a/%2f/b", b"%2fetc/passwd", b"a%5c..%5csecret.txt",
    b"a\\..\\secret.txt", b"hello.txt%00.png", b"a//b", b"/etc/passwd",
    b".git/config", b"sub/.htaccess", b"%2ehidden",
    b"%zz", b"a%4", b"%", b"% 1", b"%+1", b"%-1", b"%%32e",
])
def test_refused_spellings(rel):
    assert split_path(rel) is None


def test_accepted_spellings():
    assert split_path(b"") == ([], True)
    assert split_path(b"a/b.txt") == ([b"a", b"b.txt"], False)
    assert split_path(b"sub/") == ([b"sub"], True)
    assert split_path(b"caf%C3%A9.txt") == ([b"caf\xc3\xa9.txt"], False)
    assert split_path(b"a%20b..txt") == ([b"a b..txt"], False)      # ".." inside a name is a name


def test_resolve_files_and_directories(root):
    top = os.path.realpath(bytes(root))
    assert resolve(top, b"hello.txt").real == top + b"/hello.txt"
    assert resolve(top, b"sub/").real == top + b"/sub/index.html"
    assert resolve(top, b"sub/").lexical == top + b"/sub/index.html"
    assert resolve(top, b"sub").directory                 # answered with a redirect
    assert resolve(top, b"empty/") is None                 # no index.html
    assert resolve(top, b"missing.txt") is None
    assert resolve(top, b"hello.txt/") is None            # a file is not a directory


def test_symlinks_followed_only_inside(root, tmp_path):
    top = os.path.realpath(bytes(root))
    os.symlink(tmp_path / "secret.txt", root / "out.txt")
    os.symlink(tmp_path, root / "outdir")
    os.symlink("hello.txt", root / "in.txt")
    os.symlink("sub", root / "alias")
    (root / "trap").mkdir()
    os.symlink(tmp_path / "secret.txt", root / "trap" / "index.html")
    assert resolve(top, b"out.txt") is None
    assert resolve(top, b"outdir/secret.txt") is None
    assert resolve(top, b"trap/") is None                  # an index.html pointing out
    assert resolve(top, b"in.txt").real == top + b"/hello.txt"
    assert resolve(top, b"alias/").real == top + b"/sub/index.html"


def test_special_files_refused(root):
    os.mkfifo(root / "pipe")
    assert resolve(os.path.realpath(bytes(root)), b"pipe") is None


def test_root_through_symlink(root, tmp_path):
    os.symlink(root, tmp_path / "link")
    server = files(tmp_path / "link")
    assert get(server, b"hello.txt")[2] == b"hello, world\n"


# ---- Range ------------------------------------------------------------------------
@pytest.mark.parametrize("value,size,expected", [
    (b"bytes=0-0", 10, (0, 0)), (b"bytes=2-5", 10, (2, 5)), (b"bytes=2-", 10, (2, 9)),
    (b"bytes=-3", 10, (7, 9)), (b"bytes=-30", 10, (0, 9)), (b"bytes=5-100", 10, (5, 9)),
    (b"bytes=9-9", 10, (9, 9)), (b"BYTES = 1-2", 10, (1, 2)), (b"bytes= 1-2 ", 10, (1, 2)),
    (b"bytes=10-", 10, UNSATISFIABLE), (b"bytes=10-20", 10, UNSATISFIABLE),
    (b"bytes=-0", 10, UNSATISFIABLE), (b"bytes=0-", 0, UNSATISFIABLE),
    (b"bytes=-5", 0, UNSATISFIABLE),
    (b"bytes=5-2", 10, None), (b"bytes=0-1,3-4", 10, None), (b"items=0-1", 10, None),
    (b"bytes=-", 10, None), (b"bytes=a-b", 10, None), (b"bytes=1-2-3", 10, None),
    (b"bytes 0-1", 10, None), (b"bytes=+1-2", 10, None), (b"bytes=0x1-2", 10, None),
    (b"bytes=" + b"9" * 5000 + b"-", 10, None),
    (b"bytes=0-99999999999999999999999", 10, (0, 9)),
])
def test_parse_range(value, size, expected):
    assert parse_range(value, size) == expected


def test_if_range():
    etag, date = b'"a-b-c"', b"Sun, 13 Sep 2020 12:26:40 GMT"
    assert if_range_holds(None, etag, date)
    assert if_range_holds(etag, etag, date)
    assert if_range_holds(date, etag, date)
    assert not if_range_holds(b'"other"', etag, date)
    assert not if_range_holds(b'W/"a-b-c"', etag, date)        # weak tags never match
    assert not if_range_holds(b"Sun, 13 Sep 2020 12:26:41 GMT", etag, date)


# ---- conditionals -------------------------------------------------------------------
ETAG = b'"d-5f5e1000-7"'
MTIME = OLD
LAST = b"Sun, 13 Sep 2020 12:26:40 GMT"


def cond(**headers):
    return precondition(Req(**headers).headers, ETAG, MTIME, LAST)


def test_if_none_match():
    assert cond(if_none_match=ETAG.decode()) == 304
    assert cond(if_none_match="W/" + ETAG.decode()) == 304        # weak comparison
    assert cond(if_none_match='"x", ' + ETAG.decode() + ', "y"') == 304
    assert cond(if_none_match="*") == 304
    assert cond(if_none_match='"x"') is None
    assert cond() is None


def test_if_none_match_wins_over_if_modified_since():
    assert cond(if_none_match='"x"', if_modified_since=LAST.decode()) is None
    assert cond(if_none_match=ETAG.decode(),
                if_modified_since="Sat, 01 Jan 2000 00:00:00 GMT") == 304


def test_if_modified_since():
    assert cond(if_modified_since=LAST.decode()) == 304
    assert cond(if_modified_since="Mon, 14 Sep 2020 00:00:00 GMT") == 304
    assert cond(if_modified_since="Sun, 13 Sep 2020 12:26:39 GMT") is None
    assert cond(if_modified_since="Sunday, 13-Sep-20 12:26:40 GMT") == 304    # RFC 850
    assert cond(if_modified_since="Sun Sep 13 12:26:40 2020") == 304          # asctime
    assert cond(if_modified_since="yesterday") is None
    assert cond(if_modified_since="") is None


def test_if_match_and_if_unmodified_since():
    assert cond(if_match='"x"') == 412
    assert cond(if_match="W/" + ETAG.decode()) == 412             # strong comparison
    assert cond(if_match=ETAG.decode()) is None
    assert cond(if_match="*") is None
    assert cond(if_unmodified_since="Sat, 01 Jan 2000 00:00:00 GMT") == 412
    assert cond(if_unmodified_since=LAST.decode()) is None
    assert cond(if_match=ETAG.decode(), if_none_match=ETAG.decode()) == 304


# ---- content types --------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    (b"a.html", b"text/html; charset=utf-8"), (b"a.CSS", b"text/css; charset=utf-8"),
    (b"a.js", b"application/javascript; charset=utf-8"),
    (b"a.json", b"application/json; charset=utf-8"), (b"a.svg", b"image/svg+xml; charset=utf-8"),
    (b"a.png", b"image/png"), (b"a.woff2", b"font/woff2"), (b"a.tar.gz", b"application/gzip"),
    (b"a.js.gz", b"application/gzip"), (b"README", b"application/octet-stream"),
    (b"a.unknownext", b"application/octet-stream"), (b".profile", b"application/octet-stream"),
])
def test_content_types(name, expected):
    types = ContentTypes()
    assert types(b"/x/" + name) == expected
    assert types(b"/y/" + name) == expected          # memoised answer is the same


# ---- cache bounds ------------------------------------------------------------------------
def entry(size):
    return static.Cached(b"p", (size,), b"x" * size, b'"e"', 0, b"", b"text/plain")


def test_cache_is_bounded_lru():
    cache = FileCache(max_bytes=100, max_file_bytes=60)
    cache.put(b"a", entry(40))
    cache.put(b"b", entry(40))
    cache.get(b"a")                        # a is now the most recent
    cache.put(b"c", entry(40))             # evicts b, the least recent
    assert list(cache.entries) == [b"a", b"c"] and cache.size == 80
    cache.put(b"d", entry(61))             # larger than one file may be
    assert b"d" not in cache.entries
    cache.put(b"a", entry(10))             # replacing counts the new size only
    assert cache.size == 50
    cache.drop(b"a")
    assert cache.size == 40


def test_cache_off():
    cache = FileCache(max_bytes=0, max_file_bytes=10)
    cache.put(b"a", entry(0))
    assert not cache.entries and cache.size == 0


# ---- serving whole answers -------------------------------------------------------------------
def test_get_full(root):
    status, h, body = get(files(root), b"hello.txt")
    assert status == 200 and body == b"hello, world\n"
    assert h["content-length"] == "13" and h["content-type"] == "text/plain; charset=utf-8"
    assert h["accept-ranges"] == "bytes" and h["cache-control"] == "public, max-age=3600"
    assert h["last-modified"] == LAST.decode()
    assert h["etag"].startswith('"') and "connection" not in h


def test_cache_control_from_config_and_close(root):
    server = files(root, StaticCacheControl="no-cache")
    _, h, _ = get(server, b"hello.txt", keep=False)
    assert h["cache-control"] == "no-cache" and h["connection"] == "close"
    _, h, _ = get(files(root, StaticCacheControl=""), b"hello.txt")
    assert "cache-control" not in h


def test_head_has_length_and_no_body(root):
    status, h, body = get(files(root), b"hello.txt", method=b"HEAD")
    assert status == 200 and h["content-length"] == "13" and body == b""
    status, h, body = get(files(root), b"hello.txt", method=b"HEAD", range="bytes=0-1")
    assert status == 200 and h["content-length"] == "13"          # Range is for GET only


def test_conditionals_served(root):
    server = files(root)
    _, h, _ = get(server, b"hello.txt")
    status, h304, body = get(server, b"hello.txt", if_none_match=h["etag"])
    assert status == 304 and body == b"" and "content-length" not in h304
    assert h304["etag"] == h["etag"] and h304["last-modified"] == h["last-modified"]
    assert get(server, b"hello.txt", if_modified_since=h["last-modified"])[0] == 304
    assert get(server, b"hello.txt", if_match='"nope"')[0] == 412


def test_ranges_served(root):
    server = files(root)
    status, h, body = get(server, b"hello.txt", range="bytes=7-11")
    assert status == 206 and body == b"world" and h["content-range"] == "bytes 7-11/13"
    assert h["content-length"] == "5"
    status, h, body = get(server, b"hello.txt", range="bytes=-1")
    assert status == 206 and body == b"\n"
    status, h, body = get(server, b"hello.txt", range="bytes=13-")
    assert status == 416 and h["content-range"] == "bytes */13"
    status, _, body = get(server, b"hello.txt", range="bytes=0-1,4-5")
    assert status == 200 and body == b"hello, world\n"
    _, h, _ = get(server, b"hello.txt")
    assert get(server, b"hello.txt", range="bytes=0-4", if_range=h["etag"])[2] == b"hello"
    assert get(server, b"hello.txt", range="bytes=0-4", if_range=h["last-modified"])[0] == 206
    status, _, body = get(server, b"hello.txt", range="bytes=0-4", if_range='"old"')
    assert status == 200 and body == b"hello, world\n"


def test_refusals_all_look_the_same(root, tmp_path):
    os.symlink(tmp_path / "secret.txt", root / "out.txt")
    server = files(root)
    answers = {get(server, rel)[2] for rel in
               (b"../secret.txt", b"%2e%2e/secret.txt", b"out.txt", b"missing", b"empty/")}
    assert answers == {b"not found\n"}


def test_directory_redirect_and_index(root):
    server = files(root)
    status, h, _ = get(server, b"sub")
    assert status == 301 and h["location"] == "sub/"
    status, h, body = get(server, b"sub/")
    assert status == 200 and body == b"<p>index</p>"
    assert h["content-type"] == "text/html; charset=utf-8"
    assert get(server, b"")[0] == 404                     # the root has no index.html


# ---- the cache in use ---------------------------------------------------------------------------
def test_cached_file_rewritten_is_served_fresh(root):
    server = files(root)
    _, h1, _ = get(server, b"hello.txt")
    assert b"hello.txt" in server.cache.entries
    write(root / "hello.txt", b"changed content\n", mtime=OLD + 5)
    _, h2, body = get(server, b"hello.txt")
    assert body == b"changed content\n" and h2["etag"] != h1["etag"]


def test_cached_file_same_size_and_mtime_but_replaced(root):
    server = files(root)
    get(server, b"hello.txt")
    write(root / "new.txt", b"HELLO, WORLD\n")            # same size, same mtime
    os.replace(root / "new.txt", root / "hello.txt")      # new inode
    assert get(server, b"hello.txt")[2] == b"HELLO, WORLD\n"


def test_cached_symlink_repointed_outside_is_refused(root, tmp_path):
    os.symlink("hello.txt", root / "link.txt")
    server = files(root)
    assert get(server, b"link.txt")[2] == b"hello, world\n"
    assert b"link.txt" in server.cache.entries
    os.remove(root / "link.txt")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    assert get(server, b"link.txt")[0] == 404


def test_deleted_file_leaves_the_cache(root):
    server = files(root)
    get(server, b"hello.txt")
    os.remove(root / "hello.txt")
    assert get(server, b"hello.txt")[0] == 404
    assert b"hello.txt" not in server.cache.entries


def test_fresh_files_are_not_cached(root):
    write(root / "new.txt", b"just written", mtime=None)
    server = files(root)
    assert get(server, b"new.txt")[2] == b"just written"
    assert b"new.txt" not in server.cache.entries


def test_cache_respects_config_bounds(root):
    write(root / "big.bin", b"b" * 2000)
    server = files(root, StaticCacheBytes=3000, StaticCacheFileBytes=1000)
    get(server, b"big.bin")
    get(server, b"hello.txt")
    assert list(server.cache.entries) == [b"hello.txt"]
    assert server.cache.size <= 3000


# ---- streaming -----------------------------------------------------------------------------------
class Transport:
    """Collects bytes; pauses its writer past ``high`` buffered bytes, like a full socket."""

    def __init__(self, high=None):
        self.out = bytearray()
        self.high = high
        self.unread = 0
        self.closing = False
        self.aborted = False
        self.stream = None

    def write(self, data):
        assert not self.closing
        self.out += data
        self.unread += len(data)
        if self.high is not None and self.unread > self.high:
            self.stream.pause_output()

    def drain(self):
        self.unread = 0
        self.stream.resume_output()

    def is_closing(self):
        return self.closing

    def abort(self):
        self.closing = self.aborted = True


class Conn:
    def __init__(self, transport):
        self.transport = transport
        self.finished = []

    def stream_finished(self, stream, keep):
        self.finished.append(keep)


def big_file(root, size=3 * static.CHUNK + 12345):
    data = os.urandom(size)
    write(root / "big.bin", data)
    return data


def start(server, rel, high=None, keep=True, **headers):
    status, stream = server.serve(Req(**headers), rel, keep, False)
    assert isinstance(stream, FileStream)
    transport = Transport(high)
    transport.stream = stream
    conn = Conn(transport)
    stream.start(conn)
    return status, stream, transport, conn


def test_large_file_streams_with_flow_control(root):
    data = big_file(root)
    server = files(root, StaticCacheFileBytes=1000)
    status, stream, transport, conn = start(server, b"big.bin", high=static.CHUNK)
    assert status == 200 and stream.paused and not conn.finished
    writes = 0
    while not conn.finished:
        transport.drain()
        writes += 1
        assert writes < 100
    assert conn.finished == [True] and stream.fd == -1
    _, h, body = parse(bytes(transport.out))
    assert int(h["content-length"]) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert b"big.bin" not in server.cache.entries


def test_large_file_range_streamed(root):
    data = big_file(root)
    server = files(root, StaticCacheFileBytes=1000)
    status, _, transport, conn = start(server, b"big.bin", keep=False, range="bytes=1000-400000")
    assert status == 206 and conn.finished == [False]
    _, h, body = parse(bytes(transport.out))
    assert body == data[1000:400001] and h["connection"] == "close"
    assert h["content-range"] == "bytes 1000-400000/%d" % len(data)


def test_large_file_head_and_304_do_not_stream(root):
    big_file(root)
    server = files(root, StaticCacheFileBytes=1000)
    status, answer = server.serve(Req(b"HEAD"), b"big.bin", True, False)
    assert status == 200 and isinstance(answer, bytes) and parse(answer)[2] == b""
    etag = parse(answer)[1]["etag"]
    status, answer = server.serve(Req(if_none_match=etag), b"big.bin", True, False)
    assert status == 304 and isinstance(answer, bytes)


def test_file_shrinking_while_streamed_aborts(root):
    big_file(root)
    server = files(root, StaticCacheFileBytes=1000)
    status, stream, transport, conn = start(server, b"big.bin", high=static.CHUNK)
    os.truncate(root / "big.bin", static.CHUNK)
    transport.drain()
    assert transport.aborted and not conn.finished and stream.fd == -1


def test_stream_closed_before_start_releases_fd(root):
    big_file(root)
    server = files(root, StaticCacheFileBytes=1000)
    _, stream = server.serve(Req(), b"big.bin", True, False)
    fd = stream.fd
    stream.close()
    stream.close()                                   # at most once, but harmless twice
    with pytest.raises(OSError):
        os.fstat(fd)


def test_no_descriptor_left_open(root):
    big_file(root)
    server = files(root, StaticCacheFileBytes=1000, StaticCacheBytes=0)
    before = len(os.listdir("/proc/self/fd"))
    for rel, method, headers in [
            (b"hello.txt", b"GET", {}), (b"big.bin", b"HEAD", {}),
            (b"big.bin", b"GET", {"if_none_match": "*"}),
            (b"big.bin", b"GET", {"if_match": '"x"'}),
            (b"big.bin", b"GET", {"range": "bytes=999999999-"}),
            (b"hello.txt", b"GET", {"range": "bytes=2-3"}),
            (b"sub", b"GET", {}), (b"missing", b"GET", {})]:
        status, answer = server.serve(Req(method, **headers), rel, True, False)
        assert isinstance(answer, bytes), (rel, headers)
    assert len(os.listdir("/proc/self/fd")) == before
    _, stream = server.serve(Req(), b"big.bin", True, False)
    assert len(os.listdir("/proc/self/fd")) == before + 1
    stream.close()
    assert len(os.listdir("/proc/self/fd")) == before
