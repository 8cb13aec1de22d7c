"""One module per kind of child process the supervisor forks."""

# Exit codes a worker reports to the supervisor.
EXIT_OK = 0
EXIT_CRASH = 1      # unexpected error at run time: respawn
EXIT_BOOT = 3       # could not boot (port, store, config): do not respawn
