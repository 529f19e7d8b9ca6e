"""Run code the platform does not trust (a publisher's plugin, its tests) confined.

:class:`Sandbox` runs one command under bubblewrap (``bwrap``, Debian's ``bubblewrap``) and the
util-linux tools ``setpriv``, ``unshare`` and ``prlimit``:

- **an unprivileged user**: the command runs as ``GUIJU_SANDBOX_UID``/``GUIJU_SANDBOX_GID``
  (65534, nobody/nogroup), with no capabilities (bounding set empty) and ``no_new_privs``. When the
  platform runs as root, bwrap sets the sandbox up without a user namespace and ``setpriv`` then
  drops to that uid for real, so a root-owned file the command could see stays unreadable to it;
  ``unshare --user`` puts the command in a user namespace of its own, mapped to that same uid,
  which only makes the process limit count this sandbox's processes. When the platform runs as
  another user, bwrap gives the command that uid in a new user namespace (it cannot become
  another user) and forbids it further user namespaces;
- **an empty environment**: only ``PATH``, ``HOME``, ``TMPDIR``, the locale, a user name and what
  the caller adds (never a ``GUIJU_`` variable);
- **the files it needs, read-only, and nothing else**: ``/usr`` (and the ``/bin``, ``/lib*``
  links), a few pieces of ``/etc`` (the loader cache, the time zone; ``passwd``, ``group`` and
  ``hosts`` are written for the sandbox), the paths the caller lists (see :func:`python_paths`);
  the platform's data (``GUIJU_VAR_DIR``, the file storage, the SQLite database) is refused even
  when listed;
- **one writable place**: a private ``/tmp`` of at most ``GUIJU_SANDBOX_WRITABLE_MB`` (a tmpfs,
  ``HOME`` and ``TMPDIR`` point there);
- **no network**: a network namespace of its own, with only its own loopback;
- **limits**: CPU seconds, address space, processes (threads count), file size and open files per
  process (``prlimit``), a pid namespace (everything in it dies with the sandbox), and a wall-clock
  limit after which the sandbox is killed.

:class:`Unconfined` runs the same commands without any of this: for a developer checking their own
code on their own machine (``guiju plugin check --unsandboxed``), never for a submission.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy.engine import make_url

from services.settings import Settings

MIB = 1024 * 1024
#: What is kept of each output stream (its end): a command printing without end costs no memory.
OUTPUT_KEPT_BYTES = 1 * MIB
#: How often the processes and threads of a running sandbox are counted, in seconds.
TASK_SAMPLE_SECONDS = 0.2
#: The name the sandbox's user has inside (its ``/etc/passwd``).
SANDBOX_USER = "sandbox"
WRITABLE_DIR = "/tmp"  # noqa: S108 (a private tmpfs inside the sandbox, not the host's /tmp)
#: The host's directories a program needs; each is bound read-only, or re-created as the link it is.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Pieces of the host's /etc that reveal nothing of the platform: the loader's cache, the time zone,
#: the table of media types (Python's mimetypes reads it).
SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/mime.types",
)
TOOLS = ("setpriv", "unshare", "prlimit")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here (no bubblewrap, no namespaces, a setting exposing the platform's
    data): the message says why. Nothing was run."""


@dataclass(frozen=True)
class Limits:
    """What one confined command may use; each is a setting (see the README)."""

    cpu_seconds: int = 120  # CPU time per process
    memory_mb: int = 2048  # address space per process
    processes: int = 128  # processes and threads at once, in this sandbox
    file_size_mb: int = 64  # the largest file it may write
    writable_mb: int = 256  # its private /tmp
    open_files: int = 256  # per process

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            cpu_seconds=settings.sandbox_cpu_seconds,
            memory_mb=settings.sandbox_memory_mb,
            processes=settings.sandbox_processes,
            file_size_mb=settings.sandbox_file_size_mb,
            writable_mb=settings.sandbox_writable_mb,
            open_files=settings.sandbox_open_files,
        )


@dataclass(frozen=True)
class Outcome:
    """How a confined command ended."""

    exit_status: int | None  # None: stopped at the wall clock; negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool
    wall_seconds: float  # the wall-clock limit it ran under
    most_tasks: int = 0  # the most processes and threads seen running at once (sandboxed runs)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Runner(Protocol):
    """What runs a command: :class:`Sandbox`, or :class:`Unconfined` on a developer's own machine."""

    def run(
        self,
        command: Sequence[str],
        *,
        read_only: Iterable[Path],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        wall_seconds: float,
    ) -> Outcome: ...

    def limits_hit(self, outcome: Outcome) -> list[str]: ...


# ---------------------------------------------------------------- what a Python program needs


def python_paths(*modules: str) -> list[Path]:
    """The paths a Python program of this interpreter needs, read-only: the Python installation,
    the virtual environment (its site-packages) and the directory each of ``modules`` is imported
    from (an editable install keeps a package outside the environment). Only those: a virtual
    environment inside the project's checkout is listed alone, never the checkout."""
    found = [Path(sys.base_prefix), Path(sys.prefix)]
    for name in modules:
        spec = find_spec(name)
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin)
        # A package's directory is its __init__'s parent; what goes on the path is one level up.
        found.append(origin.parent.parent if origin.name == "__init__.py" else origin.parent)
    return found


def _normal(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths without those inside another one of them, sorted."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(_within(path, other) for other in kept):
            kept.append(path)
    return sorted(kept)


def _ancestors(path: Path) -> list[Path]:
    return sorted((p for p in path.parents if p != Path("/")), key=lambda p: len(p.parts))


# ---------------------------------------------------------------- output and limits


class _Tail:
    """The last :data:`OUTPUT_KEPT_BYTES` of a stream, read in a thread until it closes."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None  # opened as a pipe
        self.data = bytearray()
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._stream.read(64 * 1024):
            self.data += chunk
            if len(self.data) > 2 * OUTPUT_KEPT_BYTES:
                del self.data[:-OUTPUT_KEPT_BYTES]

    def text(self, wait_seconds: float) -> str:
        self._thread.join(wait_seconds)
        return bytes(self.data[-OUTPUT_KEPT_BYTES:]).decode("utf-8", errors="replace")


class _TaskCount:
    """How many processes and threads a sandbox runs at once, sampled from /proc: those in the pid
    namespace bwrap made (it says which on its ``--info-fd``), but its init. The process limit is
    then named in the report even when the code itself says nothing about it."""

    def __init__(self, info: int) -> None:
        self._info = info
        os.set_blocking(info, False)
        self._said = b""
        self._namespace: int | None = None
        self._init = 0
        self.most = 0

    def _learn(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._info, 4096):
                self._said += chunk
        with contextlib.suppress(ValueError):
            said = json.loads(self._said)
            self._namespace, self._init = int(said["pid-namespace"]), int(said["child-pid"])

    def sample(self) -> None:
        if self._namespace is None:
            self._learn()
            if self._namespace is None:
                return
        tasks = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self._init:
                continue
            try:
                if os.stat(f"/proc/{entry.name}/ns/pid").st_ino != self._namespace:
                    continue
                status = Path(f"/proc/{entry.name}/status").read_text()
            except OSError:
                continue  # gone meanwhile
            tasks += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:")), 1)
        self.most = max(self.most, tasks)

    def close(self) -> None:
        os.close(self._info)


def _run_bounded(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    wall_seconds: float,
    *,
    tasks: _TaskCount | None = None,
    pass_fds: Sequence[int] = (),
) -> Outcome:
    """Run ``argv`` in a session of its own, keeping the end of its output; kill it (and, for
    bwrap, everything in its pid namespace) at the wall clock."""
    process = subprocess.Popen(  # noqa: S603 (the argv is built by this module, not from input)
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
    for fd in pass_fds:
        os.close(fd)  # the child has them now
    stdout, stderr = _Tail(process.stdout), _Tail(process.stderr)
    deadline = time.monotonic() + wall_seconds
    timed_out = False
    try:
        while True:
            try:
                process.wait(timeout=max(0.0, min(TASK_SAMPLE_SECONDS, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                if tasks is not None:
                    tasks.sample()
    finally:
        # Whatever is left of its session goes too (the sandbox's processes die with bwrap).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if tasks is not None:
            tasks.close()
    return Outcome(
        exit_status=None if timed_out else process.returncode,
        stdout=stdout.text(5),
        stderr=stderr.text(5),
        timed_out=timed_out,
        wall_seconds=wall_seconds,
        most_tasks=tasks.most if tasks is not None else 0,
    )


#: What a command's own error output says when a limit stopped it (Python's and the C library's
#: words for the errno each limit causes), and how the report says it.
_LIMIT_SIGNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\[Errno 11\] Resource temporarily unavailable|can't start new thread"), "processes"),
    (re.compile(r"\[Errno 27\] File too large"), "file_size"),
    (re.compile(r"\[Errno 28\] No space left on device"), "writable"),
    (re.compile(r"\bMemoryError\b|\[Errno 12\] Cannot allocate memory"), "memory"),
    (
        re.compile(
            r"\[Errno 101\] Network is unreachable|\[Errno 111\] Connection refused|"
            r"\[Errno -[235]\] (?:Name or service not known|Temporary failure in name resolution|"
            r"No address associated with hostname)"
        ),
        "network",
    ),
    (re.compile(r"\[Errno 30\] Read-only file system"), "read_only"),
)


def describe_limits_hit(outcome: Outcome, limits: Limits) -> list[str]:
    """Which of the sandbox's limits a failed command ran into, each a phrase to follow its subject
    ("the tests …"): from how it ended (the wall clock, a signal) and the errors its output names."""
    found: list[str] = []
    if outcome.ok:
        return found
    if outcome.timed_out:
        found.append(f"ran out of time: stopped after {outcome.wall_seconds:g} s (the wall-clock limit)")
    status = outcome.exit_status
    if status in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        found.append(f"used more than {limits.cpu_seconds} s of CPU in one process (the CPU limit)")
    if status in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        found.append(f"wrote a file larger than {limits.file_size_mb} MiB (the file-size limit)")
    if status in (-signal.SIGKILL, 128 + signal.SIGKILL) and not outcome.timed_out:
        found.append("was killed (SIGKILL)")
    output = outcome.stderr + "\n" + outcome.stdout
    words = {
        "processes": f"ran into the limit of {limits.processes} processes and threads at once (the process limit)",
        "file_size": f"wrote a file larger than {limits.file_size_mb} MiB (the file-size limit)",
        "writable": f"filled the {limits.writable_mb} MiB of writable space ($TMPDIR, the only writable place)",
        "memory": f"needed more than {limits.memory_mb} MiB of memory in one process (the memory limit)",
        "network": "tried the network, which is unreachable in the checks (only the sandbox's own loopback)",
        "read_only": "wrote outside $TMPDIR, and everything else is read-only in the checks",
    }
    # Counted apart from the sandbox's init; where bwrap's init counts too, one fewer is the limit.
    if outcome.most_tasks >= limits.processes - 1:
        found.append(words["processes"])
    for pattern, key in _LIMIT_SIGNS:
        if pattern.search(output) and words[key] not in found:
            found.append(words[key])
    return found


# ---------------------------------------------------------------- the sandbox


@dataclass(frozen=True)
class SandboxConfig:
    """Who the confined command runs as, its limits, and the platform's data it must never see."""

    uid: int = 65534
    gid: int = 65534
    limits: Limits = Limits()
    hidden: tuple[Path, ...] = ()
    bwrap: str = "bwrap"

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        hidden = [settings.var_dir, settings.files_dir]
        database = make_url(settings.database_url)
        if database.get_backend_name() == "sqlite" and database.database not in (None, "", ":memory:"):
            hidden.append(Path(str(database.database)))
        return cls(
            uid=settings.sandbox_uid,
            gid=settings.sandbox_gid,
            limits=Limits.from_settings(settings),
            hidden=tuple(hidden),
            bwrap=settings.sandbox_bwrap,
        )


#: Configurations whose sandbox ran and proved its user (checked once per process).
_verified: set[SandboxConfig] = set()
_verify_lock = threading.Lock()


class Sandbox:
    """Runs commands confined (see the module's description)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    @classmethod
    def from_settings(cls, settings: Settings) -> Sandbox:
        return cls(SandboxConfig.from_settings(settings))

    def limits_hit(self, outcome: Outcome) -> list[str]:
        return describe_limits_hit(outcome, self.config.limits)

    def run(
        self,
        command: Sequence[str],
        *,
        read_only: Iterable[Path],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        wall_seconds: float,
    ) -> Outcome:
        """Run ``command`` confined, with ``read_only`` paths visible (at their own paths) and
        ``workdir`` its working directory; ``env`` is added to the sandbox's few variables.
        Raises :class:`SandboxUnavailable` (having run nothing) when the sandbox cannot be had."""
        self.verify()
        return self._run(command, read_only=read_only, workdir=workdir, env=env or {}, wall_seconds=wall_seconds)

    def verify(self) -> None:
        """Make sure the sandbox runs here and its command really is the configured user: once
        per process and configuration. Raises :class:`SandboxUnavailable` saying why not."""
        if self.config in _verified:
            return
        with _verify_lock:
            if self.config in _verified:
                return
            outcome = self._run(["id", "-u", "-r"], read_only=[], workdir=Path(WRITABLE_DIR), env={}, wall_seconds=30)
            uid = outcome.stdout.strip()
            if not outcome.ok or uid != str(self.config.uid):
                said = (outcome.stderr.strip() or outcome.stdout.strip() or "no output").splitlines()[-1]
                raise SandboxUnavailable(
                    f"the sandbox does not start here (exit status {outcome.exit_status}: {said}); it needs "
                    "bubblewrap, util-linux and unprivileged user namespaces"
                )
            _verified.add(self.config)

    # ------------------------------------------------------------ building the command line

    def _tool(self, name: str) -> str:
        found = shutil.which(name, path=os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/usr/bin")
        if found is None:
            package = "bubblewrap" if name == self.config.bwrap else "util-linux"
            raise SandboxUnavailable(f"{name} is not installed (Debian package {package})")
        return found

    def check_exposable(self, exposed: Iterable[Path]) -> None:
        """Refuse (:class:`SandboxUnavailable`) to show the sandbox anything holding, or inside,
        the platform's data: its data directory, file storage, SQLite database."""
        for path in (_normal(p) for p in exposed):
            for secret in self.config.hidden:
                private = _normal(secret)
                if _within(private, path) or _within(path, private):
                    raise SandboxUnavailable(
                        f"{path} would be visible in the sandbox and holds the platform's data ({private}): "
                        "keep GUIJU_VAR_DIR, GUIJU_STORAGE_DIR and the database outside what the sandbox exposes"
                    )

    def _run(
        self,
        command: Sequence[str],
        *,
        read_only: Iterable[Path],
        workdir: Path,
        env: Mapping[str, str],
        wall_seconds: float,
    ) -> Outcome:
        bwrap = self._tool(self.config.bwrap)
        setpriv, unshare, prlimit = (self._tool(t) for t in TOOLS)
        refused = sorted(k for k in env if k.startswith("GUIJU_"))
        if refused:
            raise ValueError(f"the sandbox passes no GUIJU_ variable: {', '.join(refused)}")
        system = [Path(p) for p in SYSTEM_DIRS if os.path.lexists(p)]
        system_files = [Path(p) for p in SYSTEM_FILES if os.path.exists(p)]
        asked = [Path(os.path.abspath(p)) for p in read_only]
        visible = _outermost([*(_normal(p) for p in asked), *asked])
        visible = [p for p in visible if not any(_within(p, s) for s in system)]
        self.check_exposable([*system, *system_files, *visible])

        uid, gid, limits = self.config.uid, self.config.gid, self.config.limits
        with tempfile.TemporaryDirectory(prefix="guiju-sandbox-") as private:
            etc = Path(private)
            (etc / "passwd").write_text(f"{SANDBOX_USER}:x:{uid}:{gid}::{WRITABLE_DIR}:/usr/sbin/nologin\n")
            (etc / "group").write_text(f"{SANDBOX_USER}:x:{gid}:\n")
            (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
            for made in etc.iterdir():
                made.chmod(0o644)

            argv = [bwrap, "--die-with-parent", "--new-session"]
            as_root = os.geteuid() == 0
            if as_root:
                # No user namespace: bwrap sets up as root, setpriv below drops to the uid for real.
                argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            else:
                argv += ["--unshare-all", "--unshare-user", "--uid", str(uid), "--gid", str(gid), "--disable-userns"]
                argv += ["--cap-drop", "ALL"]
            argv += ["--hostname", SANDBOX_USER]
            for folder in system:
                if os.path.islink(folder):
                    argv += ["--symlink", os.readlink(folder), str(folder)]
                else:
                    argv += ["--ro-bind", str(folder), str(folder)]
            argv += ["--perms", "0755", "--dir", "/etc"]
            for file in system_files:
                argv += ["--ro-bind", str(file), str(file)]
            for name in ("passwd", "group", "hosts"):
                argv += ["--ro-bind", str(etc / name), f"/etc/{name}"]
            argv += ["--proc", "/proc", "--dev", "/dev"]
            argv += ["--perms", "1777", "--size", str(limits.writable_mb * MIB), "--tmpfs", WRITABLE_DIR]
            made_dirs: set[Path] = set()
            for path in visible:
                for ancestor in _ancestors(path):
                    if ancestor not in made_dirs and not any(_within(ancestor, s) for s in system):
                        made_dirs.add(ancestor)
                        argv += ["--perms", "0755", "--dir", str(ancestor)]
                argv += ["--ro-bind", str(_normal(path)), str(path)]
            argv += ["--chdir", str(workdir), "--"]
            if as_root:
                argv += [setpriv, "--reuid", str(uid), "--regid", str(gid), "--clear-groups"]
                argv += ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
                # A user namespace of its own, mapped to the same uid: the process limit then counts
                # this sandbox's processes only, not every process of that uid on the machine. The
                # capabilities a new namespace grants are kept just long enough to drop them all.
                argv += [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}", "--keep-caps", "--"]
            argv += [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
            argv += [
                prlimit,
                # SIGXCPU at the limit (the report names it), SIGKILL a second later if ignored.
                f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
                f"--as={limits.memory_mb * MIB}",
                f"--nproc={limits.processes}",
                f"--fsize={limits.file_size_mb * MIB}",
                f"--nofile={limits.open_files}",
                "--core=0",
                "--",
                *command,
            ]
            variables = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": WRITABLE_DIR,
                "TMPDIR": WRITABLE_DIR,
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "USER": SANDBOX_USER,
                "LOGNAME": SANDBOX_USER,
                **env,
            }
            info_read, info_write = os.pipe()
            argv[1:1] = ["--info-fd", str(info_write)]
            return _run_bounded(argv, variables, None, wall_seconds, tasks=_TaskCount(info_read), pass_fds=[info_write])


class Unconfined:
    """Runs commands as the caller, only under the wall clock and without the platform's
    variables: for a developer's own code on their own machine, explicitly. Never for a submission."""

    def limits_hit(self, outcome: Outcome) -> list[str]:
        if outcome.timed_out:
            return [f"ran out of time: stopped after {outcome.wall_seconds:g} s (the wall-clock limit)"]
        return []

    def run(
        self,
        command: Sequence[str],
        *,
        read_only: Iterable[Path],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        wall_seconds: float,
    ) -> Outcome:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("GUIJU_") and k != "PYTHONPATH"}
        return _run_bounded(command, {**inherited, **(env or {})}, workdir, wall_seconds)
