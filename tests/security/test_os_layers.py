"""Attacks run with the policy layers OFF (plain Python, full builtins): what the
OS layers alone do. Each case names the layer that stops it and asserts the exact
outcome: either the worker's own report of the failed attempt (stdout) or the
clean StepResult the pool returns after the kernel killed the worker.

Two pools: `os_only_pool` (every OS layer) and `no_seccomp_pool` (seccomp off,
so the namespace, file-system, rlimit and privilege layers must hold alone).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass

import psutil
import pytest

from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, StepLimits, StepRequest, StepResult

pytestmark = pytest.mark.root


def run(pool: PoolSandbox, code: str, *, seconds: float = 5.0, **kwargs: object) -> StepResult:
    request = StepRequest(
        tenant_id="t",
        session_id="s",
        execution_id="e",
        code=code,
        state_json="{}",
        limits=StepLimits(max_step_seconds=seconds),
        unsafe_disable_policy_layers=True,
        **kwargs,  # type: ignore[arg-type]
    )
    return pool.run_step(request)


def killed_by(result: StepResult) -> str:
    """The signal the pool says killed the worker ('' when it answered)."""
    assert not result.success
    details = json.loads(result.error.details_json or "{}")
    return str(details.get("exit", {}).get("signal", ""))


@dataclass(frozen=True)
class Attack:
    name: str
    layer: str
    code: str


# Code that the kernel must answer by killing the worker (SIGSYS): seccomp.
SECCOMP_KILLS = [
    Attack("socket_inet", "seccomp", "import socket\nsocket.socket()"),
    Attack("socket_unix_abstract", "seccomp",
           "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0x')"),
    Attack("connect_on_inherited_fd", "seccomp",
           "import ctypes\nctypes.CDLL(None).connect(3, b'\\x02\\x00\\x00\\x50' + bytes(12), 16)"),
    Attack("fork", "seccomp", "import os\nos.fork()"),
    Attack("execve", "seccomp", "import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])"),
    Attack("subprocess", "seccomp", "import subprocess\nsubprocess.run(['id'])"),
    Attack("thread_clone", "seccomp", "import threading\nthreading.Thread(target=print).start()"),
    Attack("kill_other", "seccomp", "import os\nos.kill(2, 9)"),
    Attack("ptrace", "seccomp",
           "import ctypes\nctypes.CDLL(None).ptrace(16, 1, 0, 0)"),
    Attack("mount", "seccomp",
           "import ctypes\nctypes.CDLL(None).mount(b'none', b'/', b'tmpfs', 0, None)"),
    Attack("unshare", "seccomp", "import ctypes\nctypes.CDLL(None).unshare(0x40000000)"),
    Attack("setns", "seccomp", "import ctypes\nctypes.CDLL(None).setns(0, 0)"),
    Attack("keyctl", "seccomp", "import ctypes\nctypes.CDLL(None).syscall(250, 0, 0, 0, 0)"),
    Attack("bpf", "seccomp", "import ctypes\nctypes.CDLL(None).syscall(321, 0, 0, 0)"),
    Attack("perf_event_open", "seccomp",
           "import ctypes\nctypes.CDLL(None).syscall(298, 0, 0, -1, -1, 0)"),
    Attack("io_uring_setup", "seccomp", "import ctypes\nctypes.CDLL(None).syscall(425, 1, 0)"),
    Attack("userfaultfd", "seccomp", "import ctypes\nctypes.CDLL(None).syscall(323, 0)"),
    Attack("x32_abi_bypass", "seccomp",
           "import ctypes\nctypes.CDLL(None).syscall(0x40000000 | 41, 2, 1, 0)"),
    Attack("setuid_root", "seccomp", "import os\nos.setuid(0)"),
    Attack("chroot", "seccomp", "import os\nos.chroot('/')"),
    Attack("exec_mapping", "seccomp",
           "import mmap\nmmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)"),
    Attack("shmget_ipc", "seccomp", "import ctypes\nctypes.CDLL(None).shmget(0, 4096, 0o1666)"),
]  # fmt: skip


@pytest.mark.parametrize("attack", SECCOMP_KILLS, ids=lambda a: a.name)
def test_seccomp_kills_forbidden_syscall(os_only_pool: PoolSandbox, attack: Attack) -> None:
    result = run(os_only_pool, attack.code)
    assert result.error.code == "LAMBDA_ERROR"
    assert killed_by(result) == "SIGSYS", attack.layer
    assert "seccomp" in result.error.message
    assert result.isolation == "pool"


# Code that reports its own failed attempt; expected stdout per pool.
REPORTS = [
    # name, layer (os_only / no_seccomp), code, stdout with seccomp, stdout without
    ("open_host_file", "seccomp / fs_view",
     "try:\n    open('/etc/passwd')\n    print('OPENED')\nexcept OSError as e:\n    print(e.errno)",
     "1", "2"),
    ("list_root", "seccomp / fs_view",
     "import os\ntry:\n    print(os.listdir('/'))\nexcept OSError as e:\n    print(e.errno)",
     "1", "[]"),
    ("write_new_file", "seccomp / fs_view",
     "try:\n    open('/x', 'w')\n    print('WROTE')\nexcept OSError as e:\n    print(e.errno)",
     "1", "30"),
    ("proc_environ", "seccomp / fs_view",
     "try:\n    open('/proc/1/environ', 'rb').read()\nexcept OSError as e:\n    print(e.errno)",
     "1", "2"),
    ("environment_is_empty", "fresh_process",
     "import os\nprint(sorted(os.environ))", "[]", "[]"),
    ("raise_rlimit", "rlimits",
     "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_NOFILE, (10**6, 10**6))\n"
     "except (ValueError, OSError) as e:\n    print(type(e).__name__)",
     "ValueError", "ValueError"),
    ("memory_bomb", "rlimits",
     "try:\n    x = bytearray(8 * 1024**3)\n    print('ALLOCATED')\nexcept MemoryError:\n"
     "    print('MemoryError')",
     "MemoryError", "MemoryError"),
    ("only_expected_fds_open", "fresh_process",
     "import os\nopen_fds = []\nfor fd in range(64):\n    try:\n        os.fstat(fd)\n"
     "        open_fds.append(fd)\n    except OSError:\n        pass\nprint(open_fds)",
     "[0, 1, 2, 3]", "[0, 1, 2, 3]"),
    ("hostname", "seccomp / utsns",
     "import socket\ntry:\n    print(socket.gethostname())\n"
     "except OSError as e:\n    print(e.errno)",
     "1", "sandbox"),
    ("is_pid_1", "pidns", "import os\nprint(os.getpid())", "1", "1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "layer", "code", "with_seccomp", "without_seccomp"),
    REPORTS,
    ids=[r[0] for r in REPORTS],
)
def test_attempt_reports_denial(
    os_only_pool: PoolSandbox,
    no_seccomp_pool: PoolSandbox,
    name: str,
    layer: str,
    code: str,
    with_seccomp: str,
    without_seccomp: str,
) -> None:
    for pool, expected in ((os_only_pool, with_seccomp), (no_seccomp_pool, without_seccomp)):
        result = run(pool, code)
        assert result.success, (name, layer, result.error)
        assert result.stdout.strip() == expected, (name, layer)


# Without seccomp: the namespace, rlimit and privilege layers alone.
NO_SECCOMP = [
    ("fork_nproc_limit", "rlimits (RLIMIT_NPROC=0 as uid 65534)",
     "import os\ntry:\n    os.fork()\n    print('FORKED')\n"
     "except OSError as e:\n    print(e.errno)",
     "11"),
    ("thread_nproc_limit", "rlimits (RLIMIT_NPROC=0 as uid 65534)",
     "import threading\ntry:\n    threading.Thread(target=print).start()\n    print('STARTED')\n"
     "except RuntimeError:\n    print('RuntimeError')",
     "RuntimeError"),
    ("setuid_root", "unprivileged_uid + capabilities",
     "import os\ntry:\n    os.setuid(0)\n    print('ROOT')\n"
     "except OSError as e:\n    print(e.errno)",
     "1"),
    ("uid_gid", "unprivileged_uid", "import os\nprint(os.getuid(), os.getgid(), os.getgroups())",
     "65534 65534 []"),
    ("capabilities_empty", "capabilities",
     "import ctypes\nheader = (ctypes.c_uint32 * 2)(0x20080522, 0)\n"
     "data = (ctypes.c_uint32 * 6)()\nctypes.CDLL(None).syscall(125, header, data)\n"
     "print(list(data))",
     "[0, 0, 0, 0, 0, 0]"),
    ("mount_tmpfs", "capabilities",
     "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "print(libc.mount(b'none', b'/', b'tmpfs', 0, None), ctypes.get_errno())",
     "-1 1"),
    ("unshare_net_ns", "capabilities",
     "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "print(libc.unshare(0x40000000), ctypes.get_errno())",
     "-1 1"),
    ("no_network_interfaces", "netns",
     "import socket\nprint([name for _, name in socket.if_nameindex()])", "['lo']"),
    ("loopback_unreachable", "netns",
     "import socket\ntry:\n    socket.socket().connect((b'127.0.0.1', 22))\n"
     "except OSError as e:\n    print(e.errno)",
     "101"),
    ("no_new_privs_set", "no_new_privs",
     "import ctypes\nprint(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))", "1"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "layer", "code", "expected"), NO_SECCOMP, ids=[c[0] for c in NO_SECCOMP])
def test_layers_hold_without_seccomp(
    no_seccomp_pool: PoolSandbox, name: str, layer: str, code: str, expected: str
) -> None:
    result = run(no_seccomp_pool, code)
    assert result.success, (name, layer, result.error)
    assert result.stdout.strip() == expected, (name, layer)


def test_host_process_invisible_and_unsignalable(no_seccomp_pool: PoolSandbox) -> None:
    # layer: pidns. Our own pid does not exist in the worker's PID namespace.
    result = run(
        no_seccomp_pool,
        f"import os\ntry:\n    os.kill({os.getpid()}, 9)\nexcept OSError as e:\n    print(e.errno)",
    )
    assert result.stdout.strip() == "3"  # ESRCH


def test_pool_socket_unreachable_without_seccomp(no_seccomp_pool: PoolSandbox) -> None:
    # layer: fs_view. The appliance's own Unix socket is a path the worker cannot see.
    code = (
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
        f"    s.connect({no_seccomp_pool.socket_path!r})\n    print('CONNECTED')\n"
        "except OSError as e:\n    print(e.errno)"
    )
    assert run(no_seccomp_pool, code).stdout.strip() == "2"  # ENOENT


def test_tcp_server_on_host_loopback_unreachable(no_seccomp_pool: PoolSandbox) -> None:
    # layer: netns. A real listener on the host's loopback.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\ntry:\n"
            f"    socket.socket().connect((b'127.0.0.1', {port}))\n    print('CONNECTED')\n"
            "except OSError as e:\n    print(e.errno)"
        )
        assert run(no_seccomp_pool, code).stdout.strip() == "101"  # ENETUNREACH


def test_documents_arrive_read_only(os_only_pool: PoolSandbox, tmp_path: object) -> None:
    # layer: fs_view (documents only as O_RDONLY fds). The fd reads; writing fails.
    path = os.path.join(str(tmp_path), "doc.txt")
    with open(path, "w") as f:
        f.write("hello corpus")
    doc = ContextDocument(doc_index=0, doc_id="d0", text_path=path, char_length=12, byte_length=12)
    code = (
        "import os\nprint(os.pread(4, 5, 0).decode())\ntry:\n    os.write(4, b'x')\n"
        "except OSError as e:\n    print(e.errno)"
    )
    result = run(os_only_pool, code, context_manifest=[doc])
    assert result.stdout.split() == ["hello", "9"]  # EBADF
    with open(path) as f:
        assert f.read() == "hello corpus"


def test_state_does_not_survive_a_step(os_only_pool: PoolSandbox) -> None:
    # layer: fresh_process. A module attribute set in one step is gone in the next.
    run(os_only_pool, "import json\njson.planted = 'x'")
    result = run(os_only_pool, "import json\nprint(hasattr(json, 'planted'))")
    assert result.stdout.strip() == "False"


def test_busy_loop_killed_from_outside(os_only_pool: PoolSandbox) -> None:
    # layer: wall_clock_kill. A C-level loop ignores signals; the zygote kills it.
    started = time.monotonic()
    result = run(os_only_pool, "sum(range(10**12))", seconds=0.5)
    assert result.error.code == "STEP_TIMEOUT"
    assert time.monotonic() - started < 5


def test_sleep_and_swallowed_exceptions_still_time_out(os_only_pool: PoolSandbox) -> None:
    # layer: wall_clock_kill. No Python-level exception to catch.
    code = (
        "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass"
    )
    assert run(os_only_pool, code, seconds=0.5).error.code == "STEP_TIMEOUT"


def test_stack_overflow_crash_is_a_clean_error(os_only_pool: PoolSandbox) -> None:
    # layer: fresh_process. A segfaulting worker -> LAMBDA_ERROR, the pool goes on.
    code = "import sys\nsys.setrecursionlimit(10**8)\nx = []\nfor _ in range(10**6):\n    x = [x]\nrepr(x)"
    result = run(os_only_pool, code, seconds=30)  # room for a loaded machine: the crash is the point
    assert result.error.code == "LAMBDA_ERROR"
    assert killed_by(result) == "SIGSEGV"
    assert run(os_only_pool, "print('next')").stdout.strip() == "next"


def test_forged_protocol_bytes_are_a_clean_error(os_only_pool: PoolSandbox) -> None:
    # layer: fresh_process (the front only trusts a well-formed frame).
    code = "import os\nos.write(3, b'\\xff' * 64)\nimport time\ntime.sleep(5)"
    result = run(os_only_pool, code, seconds=2)
    assert result.error.code in ("LAMBDA_ERROR", "STEP_TIMEOUT")
    assert run(os_only_pool, "print('next')").stdout.strip() == "next"


def test_sigkill_mid_step_then_next_step_succeeds(os_only_pool: PoolSandbox) -> None:
    # Done-when: killing a worker mid-step returns an error; the next step works.
    assert os_only_pool.server_pid is not None
    outcome: list[StepResult] = []
    thread = threading.Thread(
        target=lambda: outcome.append(run(os_only_pool, "while True:\n    pass", seconds=20))
    )
    thread.start()
    victims: list[psutil.Process] = []
    give_up = time.monotonic() + 10
    while not victims and time.monotonic() < give_up:
        time.sleep(0.05)
        for zygote in psutil.Process(os_only_pool.server_pid).children():
            victims = [w for w in zygote.children() if w.status() == psutil.STATUS_RUNNING]
    assert victims, "no busy worker found"
    for worker in victims:
        worker.kill()
    thread.join(30)
    assert outcome and outcome[0].error.code == "LAMBDA_ERROR"
    assert killed_by(outcome[0]) == "SIGKILL"
    assert run(os_only_pool, "print(6 * 7)").stdout.strip() == "42"


def test_fds_sent_back_by_a_worker_are_not_kept_by_the_front(
    no_seccomp_pool: PoolSandbox,
) -> None:
    # layer: fresh_process (the front closes anything a worker sends but an answer).
    assert no_seccomp_pool.server_pid is not None
    front = psutil.Process(no_seccomp_pool.server_pid)
    code = (
        "import socket, array\ns = socket.socket(fileno=3)\n"
        "for _ in range(50):\n"
        "    s.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0]))])"
    )
    before = front.num_fds()
    for _ in range(3):
        assert run(no_seccomp_pool, code).error.code == "LAMBDA_ERROR"
    assert front.num_fds() <= before + 2


def test_front_refuses_documents_outside_the_document_root(tmp_path: object) -> None:
    # layer: fs_view (the front opens only the node's document cache, no symlinks).
    from rlm_rs.sandbox.client import temporary_pool

    root = os.path.join(str(tmp_path), "cache")
    os.makedirs(root)
    inside = os.path.join(root, "d.txt")
    with open(inside, "w") as f:
        f.write("ok")
    link = os.path.join(root, "link.txt")
    os.symlink("/etc/passwd", link)
    with temporary_pool(allow_unsafe=True, document_root=root) as pool:
        for path in ("/etc/passwd", link, os.path.join(root, "..", "..", "etc", "passwd")):
            doc = ContextDocument(doc_index=0, text_path=path)
            assert run(pool, "print(1)", context_manifest=[doc]).error.code == "S3_READ_ERROR"
        doc = ContextDocument(doc_index=0, text_path=inside)
        code = "import os\nprint(os.pread(4, 2, 0).decode())"
        assert run(pool, code, context_manifest=[doc]).stdout.strip() == "ok"


def test_cgroup_oom_kill_is_a_clean_error_and_the_pool_goes_on() -> None:
    # layer: cgroup_memory. The pool's group is small here (16 MiB per slot + the
    # zygote's allowance); touching 600 MiB gets the worker, never the zygote, killed.
    from rlm_rs.sandbox.client import temporary_pool
    from rlm_rs.sandbox.pool.server import pool_policy

    policy = pool_policy()
    policy.cgroup_memory_mib = 16
    with temporary_pool(policy, allow_unsafe=True) as pool:
        result = run(pool, "x = b'a' * (600 * 2**20)\nprint(len(x))", seconds=20)
        assert result.error.code == "LAMBDA_ERROR"
        assert killed_by(result) == "SIGKILL"
        assert json.loads(result.error.details_json)["oom"] is True
        assert "OOM" in result.error.message
        assert run(pool, "print('alive')").stdout.strip() == "alive"


def test_well_framed_garbage_answer_is_a_clean_error(os_only_pool: PoolSandbox) -> None:
    # layer: fresh_process (the front parses the answer as data, never trusts it).
    code = (
        "import os, struct\nbody = b'\\xff' * 32\n"
        "os.write(3, struct.pack('!IBQH', len(body), 3, 1, 0) + body)\n"
        "import time\ntime.sleep(5)"
    )
    result = run(os_only_pool, code, seconds=3)
    assert result.error.code == "LAMBDA_ERROR"
    assert result.error.message == "sandbox worker answered garbage"
    assert run(os_only_pool, "print('next')").stdout.strip() == "next"
