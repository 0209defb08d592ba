"""A real FTP server (pyftpdlib) on 127.0.0.1 for integration and end-to-end tests.

It serves a local directory in a background thread; clients (in this process
or another) only ever reach it over its socket. All socket work happens on the
server's own thread, so stop() is prompt and leaves nothing listening.

Given a certificate it is an explicit FTPS server (pyftpdlib's TLS handler, on
pyOpenSSL) that refuses, by default, a login before `AUTH TLS` and a data connection
before `PROT P`, as a transport server that insists on TLS does.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

with warnings.catch_warnings():
    # pyftpdlib still imports asyncore/asynchat, deprecated since Python 3.6.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from tests.support.loopback import Startable

# pyftpdlib configures the root logger itself (and turns off thread names in every
# log record) unless some handler is already there; give it one that does nothing.
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())

FULL_PERMISSIONS = "elradfmwMT"
_POLL_SECONDS = 0.02

T = TypeVar("T")


class FtpTestServer(Startable):
    """One user, rooted at `root`; counts logins and records what clients store and rename.

    A test can also stage a race between sessions: `hold_next` keeps commands
    unanswered until `release`, and `refuse_next` answers commands with a reply of its
    choosing instead of running them.
    """

    def __init__(
        self,
        root: Path,
        *,
        user: str = "sidecar-robot",
        password: str = "s3cr3t-Pa55word",
        perm: str = FULL_PERMISSIONS,
        idle_timeout: float = 300.0,
        rename_replaces: bool = True,
        tls_pem: Path | None = None,
        tls_required: bool = True,
    ) -> None:
        """`rename_replaces=False` refuses RNTO onto an existing file, as some servers do.

        `tls_pem` (private key and certificate chain) makes it explicit FTPS; with
        `tls_required=False` it also serves clients that never ask for TLS.
        """
        self.root = Path(root)
        self.user = user
        self.password = password
        self.perm = perm
        self.idle_timeout = idle_timeout
        self.rename_replaces = rename_replaces
        self.tls_pem = tls_pem
        self.tls_required = tls_required
        self.port = 0
        self._lock = threading.Lock()
        self._logins = 0
        self._stored: list[str] = []
        self._stored_protected: list[bool] = []
        self._renamed: list[tuple[str, str]] = []
        self._holds: dict[str, int] = {}
        self._held: list[threading.Event] = []
        self._refusals: dict[str, list[str]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def host(self) -> str:
        """`ftp://127.0.0.1:PORT`, the form MEDIAHAVEN_FTP_HOST takes."""
        if not self.port:
            raise RuntimeError("the FTP test server has not been started")
        return f"ftp://127.0.0.1:{self.port}"

    @property
    def logins(self) -> int:
        """Successful logins since the server was created (restarts included)."""
        with self._lock:
            return self._logins

    @property
    def stored(self) -> list[str]:
        """FTP paths of the STOR commands that got past the permission check, in order."""
        return self._snapshot(self._stored)

    @property
    def protected_stores(self) -> list[bool]:
        """For each STOR of `stored`: whether its data connection was TLS (`PROT P`)."""
        return self._snapshot(self._stored_protected)

    @property
    def renamed(self) -> list[tuple[str, str]]:
        """(from, to) FTP paths of successful renames, in order."""
        return self._snapshot(self._renamed)

    def hold_next(self, command: str, times: int = 1) -> None:
        """Leave the next `times` `command`s (any session) unanswered until `release`.

        The server keeps serving every other session meanwhile, so a test can
        interleave two clients step by step instead of guessing with sleeps.
        """
        with self._lock:
            self._holds[command.upper()] = times

    def wait_until_held(self, count: int, timeout: float = 5.0) -> None:
        """Return once `count` commands have been held (released ones included)."""
        deadline = time.monotonic() + timeout
        while len(self._snapshot(self._held)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} commands were held within {timeout} s")
            time.sleep(_POLL_SECONDS)

    def release(self, index: int) -> None:
        """Let the `index`-th held command (0 is the first to arrive) run and be answered."""
        self._snapshot(self._held)[index].set()

    def refuse_next(self, command: str, reply: str, times: int = 1) -> None:
        """Answer the next `times` `command`s with `reply` (say `450 Busy.`), not running them."""
        with self._lock:
            self._refusals.setdefault(command.upper(), []).extend([reply] * times)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Listen (on a free port the first time, on the same port after a restart)."""
        if self.running:
            raise RuntimeError("the FTP test server is already running")
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.user, self.password, str(self.root), perm=self.perm)
        server = FTPServer(("127.0.0.1", self.port), self._handler_class(authorizer), IOLoop())
        self.port = server.address[1]
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(server,), name=f"ftp-test-server-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and every client connection, then return."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        for held in self._snapshot(self._held):
            held.set()  # nothing waits for a release that will never come
        thread.join(timeout=5)
        if thread.is_alive():
            raise RuntimeError("the FTP test server thread did not stop")
        self._server = None

    def restart(self) -> None:
        """Drop every connection and listen again on the same port, as a rebooted server."""
        self.stop()
        self.start()

    def _serve(self, server: Any) -> None:
        try:
            while not self._stopping.is_set():
                server.serve_forever(timeout=_POLL_SECONDS, blocking=False, handle_exit=False)
        finally:
            server.close_all()

    def _count_login(self) -> None:
        with self._lock:
            self._logins += 1

    def _record(self, record: list[T], item: T) -> None:
        """Add `item` to one of the records (the server's thread writes, the test reads)."""
        with self._lock:
            record.append(item)

    def _snapshot(self, record: list[T]) -> list[T]:
        """A copy of one of the records, for the test to read."""
        with self._lock:
            return list(record)

    def _take_hold(self, command: str) -> threading.Event | None:
        """The release to wait for when this command is one the test asked to hold."""
        with self._lock:
            if self._holds.get(command, 0) <= 0:
                return None
            self._holds[command] -= 1
            released = threading.Event()
            self._held.append(released)
            return released

    def _take_refusal(self, command: str) -> str | None:
        with self._lock:
            replies = self._refusals.get(command)
            return replies.pop(0) if replies else None

    def _handler_class(self, authorizer: Any) -> type[Any]:
        """pyftpdlib configures handlers through class attributes: one class per start.

        Everything is recorded before the server answers, so a client that got its
        reply can rely on the record.
        """
        owner = self
        base: Any = FTPHandler if self.tls_pem is None else TLS_FTPHandler

        class FileSystem(AbstractedFS):  # type: ignore[misc]  # pyftpdlib is untyped
            def rename(self, src: str, dst: str) -> None:
                if not owner.rename_replaces and os.path.lexists(dst):
                    raise FileExistsError(errno.EEXIST, "File exists")
                super().rename(src, dst)
                owner._record(owner._renamed, (self.fs2ftp(src), self.fs2ftp(dst)))

        class Handler(base):  # type: ignore[misc]  # pyftpdlib is untyped
            def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
                owner._count_login()
                super().handle_auth_success(home, password, msg_login)

            def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
                refusal = owner._take_refusal(cmd)
                if refusal is not None:
                    self._rnfr = None  # a refused RNTO ends the rename, as on a real server
                    self.respond(refusal)
                    return
                released = owner._take_hold(cmd)
                run = super().process_command
                if released is None:
                    run(cmd, *args, **kwargs)
                else:
                    self._run_once(released, run, cmd, *args, **kwargs)

            def _run_once(
                self, released: threading.Event, run: Callable[..., None], *args: Any, **kwargs: Any
            ) -> None:
                """Run the held command once released; poll from the IO loop, never block it."""
                if released.is_set():
                    run(*args, **kwargs)
                else:
                    self.ioloop.call_later(
                        _POLL_SECONDS, self._run_once, released, run, *args, **kwargs
                    )

            # pyftpdlib dispatches commands to methods named ftp_<COMMAND>.
            def ftp_STOR(self, file: str, mode: str = "w") -> Any:  # noqa: N802
                owner._record(owner._stored, self.fs.fs2ftp(file))
                owner._record(owner._stored_protected, bool(getattr(self, "_prot", False)))
                return super().ftp_STOR(file, mode)

        Handler.authorizer = authorizer
        Handler.abstracted_fs = FileSystem
        Handler.timeout = self.idle_timeout
        Handler.auth_failed_timeout = 0  # answer a wrong password at once
        Handler.banner = "FTP test server ready."
        if self.tls_pem is not None:
            Handler.certfile = str(self.tls_pem)
            Handler.tls_control_required = self.tls_required
            Handler.tls_data_required = self.tls_required
        return Handler
