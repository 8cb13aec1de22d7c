"""The open-files limit: one descriptor per connection.

Many systems start processes with a soft ``nofile`` limit of 1024 under a much
higher hard limit. The Go collector's runtime raised the soft limit to the
hard one by itself; Python does not, so the supervisor does it before forking
(workers inherit it). An edge node holding ``MaximumConnections`` clients
would otherwise fail with EMFILE at the 1000th connection.
"""
import resource

# Besides client connections a worker holds a few dozen descriptors: the
# listening sockets, spool and store files, the event loop, pipes, upstreams.
SPARE = 64


def raise_open_files_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):   # e.g. hard infinity but fs.nr_open lower
        return soft, soft
    return soft, target


def too_low(limit, max_connections):
    """Why ``limit`` cannot hold the configured connections, or None.
    ``MaximumConnections`` is node-wide, but one worker may hold most of them."""
    if not max_connections or limit == resource.RLIM_INFINITY:
        return None
    if limit >= max_connections + SPARE:
        return None
    return (f"the open-files limit ({limit}) is below MaximumConnections "
            f"({max_connections}) plus {SPARE} spare: connections beyond it fail with "
            f"EMFILE; raise the hard limit (ulimit -Hn, LimitNOFILE=, --ulimit nofile=)")
