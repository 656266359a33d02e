"""The hardened sandbox pool: one fresh, pre-hardened process per step.

Threat model: step code is hostile Python written by a model (or by whoever
steers it). The policy layers (AST policy, RestrictedPython guards, step
limits; rlm_rs/sandbox/executor.py) are the first wall; this package assumes
they fail and must still keep the code from the network, the host's files,
other processes, other tenants' steps and the machine's resources.

    gRPC front (server.py)        owns gRPC; opens documents read-only;
      |  Unix socket + fds         never forks a sandbox worker
    zygote (zygote.py)            single-threaded, no gRPC; forks workers
      |  fork                      and kills them; explains every death
    worker (_worker.py)           hardens itself in order, says READY, takes
                                  one step from the front, answers, exits

Layers, in the order a worker applies them (each reported by doctor/status):
netns, mountns + fs_view (empty read-only root; documents only as fds), pidns,
ipcns, utsns, userns (when not root), rlimits, cgroup_memory, cgroup_pids,
no_new_privs, capabilities, unprivileged_uid, seccomp (last), plus the
zygote's wall_clock_kill and fresh_process. docs/sandbox-pool.md explains
each, the measurements behind the design and the alternatives we rejected.

Public surface: `server.serve`, `server.PoolFront`, `doctor.run_doctor`,
`cli.register_into`; clients use rlm_rs.sandbox.client.PoolSandbox.
"""

__all__: list[str] = []
