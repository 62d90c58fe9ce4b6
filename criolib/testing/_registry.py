"""A real distribution registry (Debian's docker-registry, v2.8) for tests.

Writes the registry's own configuration (distribution docs/configuration.md, config
``version: 0.1``) into a work directory, starts ``docker-registry serve`` on
127.0.0.1 and a free port, and waits until ``GET /v2/`` answers (distribution
docs/spec/api.md "API Version Check": 200, or 401 when auth is on).

Three auth set-ups: ``"none"``; ``"basic"`` (``auth.htpasswd`` with bcrypt hashes,
the only kind the registry accepts); ``"token"`` (``auth.token`` pointing at a
:class:`~criolib.testing.TokenServer` started alongside).

The free port is probed, then bound by the registry: another process may take it
in between. The config's ``http.headers`` makes the registry send a per-start nonce
(``X-Criolib-Registry``) that readiness checks for, so a foreign server on the port
is never taken for ours; a start that loses the port race is retried on a new one.
The registry is spawned with a parent-death signal: it dies with the test process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from criolib._exec import spawn, stop
from criolib.errors import ExecError
from criolib.testing._errors import (
    MissingHostPart,
    RegistryStartError,
    TestbedError,
    TestbedValueError,
    missing_python_package,
)
from criolib.testing._push import RegistryAuth
from criolib.testing._tokens import TokenServer

__all__ = ["RegistryServer"]

log = logging.getLogger("criolib.testing")

AuthKind = Literal["none", "basic", "token"]

DEFAULT_USERS: Mapping[str, str] = {"tester": "criolib-secret"}
_DEBIAN_PACKAGE = "docker-registry"
_LOG_TAIL = 3000
_STOP_GRACE = 5.0
# bcrypt's cost 4 is its minimum; 5 keeps a test's many Basic checks fast.
_BCRYPT_COST = 5
#: The response header carrying the per-start nonce (docs/configuration.md http.headers).
NONCE_HEADER = "X-Criolib-Registry"
#: Starts on a free port that another process took first are retried this often.
_PORT_ATTEMPTS = 3
_ADDRESS_IN_USE = "address already in use"


def _free_port() -> int:
    # The registry binds the port itself, so another process may take it first;
    # start() then retries on a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scratch_parent() -> str | None:
    """Where to make a registry's work directory when none is given.

    ``/dev/shm`` when it is a writable tmpfs with a GiB free and ``TMPDIR`` is not
    set: the registry writes many small files, and on this project's machines file
    creation on the root ext4 costs up to 1 ms each (MACHINE-NOTES.md), which made
    pushes three times slower. ``None`` means tempfile's default (``TMPDIR``, /tmp).
    """
    shm = "/dev/shm"  # noqa: S108 - only a parent for mkdtemp, which is safe there
    if os.environ.get("TMPDIR") or not os.access(shm, os.W_OK | os.X_OK):
        return None
    try:
        with open("/proc/self/mounts") as mounts:
            tmpfs = any(line.split()[1:3] == [shm, "tmpfs"] for line in mounts)
        free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    except OSError:
        return None
    return shm if tmpfs and free >= 1 << 30 else None


def htpasswd_lines(users: Mapping[str, str]) -> str:
    """An htpasswd file with bcrypt hashes, the only kind distribution's registry accepts."""
    try:
        import bcrypt
    except ImportError as exc:
        raise missing_python_package("bcrypt", "the registry's htpasswd file", exc) from exc
    return "".join(
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(_BCRYPT_COST)).decode()}\n"
        for user, pw in users.items()
    )


class RegistryServer:
    """Runs distribution's registry on 127.0.0.1 with its own config, for tests.

    distribution docs/configuration.md (config version 0.1); auth per
    docs/spec/auth/token.md for ``"token"``. ``users`` maps user names to passwords
    (used by ``"basic"`` and ``"token"``); ``workdir`` holds config, storage and
    ``registry.log`` and is removed on :meth:`stop` only when this object made it
    (by default in /dev/shm when that is a tmpfs and ``TMPDIR`` is unset, else in
    the temp directory).
    ``port`` pins the port (default: a free one). ``token_ttl``, ``acl`` and
    ``anonymous_pull`` configure the token server (see :class:`TokenServer`:
    ``acl`` maps a user to the only actions, such as ``["pull"]``, they may be
    granted). Bad arguments raise :class:`TestbedValueError` (a ValueError).

    The registry process gets a parent-death signal (prctl PR_SET_PDEATHSIG): it is
    killed when the *thread* that called :meth:`start` ends, or the whole process
    dies. Start it from a thread that outlives its use (the main thread, a session
    fixture), not from a short-lived worker.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        auth: AuthKind = "none",
        users: Mapping[str, str] | None = None,
        binary: str = "docker-registry",
        workdir: Path | None = None,
        port: int | None = None,
        token_ttl: int = 10,
        acl: Mapping[str, Collection[str]] | None = None,
        anonymous_pull: bool = False,
        startup_timeout: float = 15.0,
    ) -> None:
        if auth not in ("none", "basic", "token"):
            raise TestbedValueError(
                f"registry auth must be 'none', 'basic' or 'token', not {auth!r}"
            )
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 1 <= port <= 65535):
            raise TestbedValueError(f"registry port must be 1..65535, not {port!r}")
        if isinstance(token_ttl, bool) or not isinstance(token_ttl, int) or token_ttl < 1:
            raise TestbedValueError(f"token ttl must be an int >= 1 second, not {token_ttl!r}")
        self._auth: AuthKind = auth
        self._users = dict(users if users is not None else DEFAULT_USERS)
        if not all(isinstance(u, str) and isinstance(p, str) and ":" not in u
                   for u, p in self._users.items()):
            raise TestbedValueError("registry users must map str names (no ':') to str passwords")
        self._acl = acl
        self._binary = binary
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self._given_port = port
        self._port: int | None = None
        self._token_ttl = token_ttl
        self._anonymous_pull = anonymous_pull
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._token_server: TokenServer | None = None
        self._nonce = ""

    # -- properties --------------------------------------------------------

    @property
    def auth(self) -> AuthKind:
        """Which auth the registry demands: ``"none"``, ``"basic"`` or ``"token"``."""
        return self._auth

    @property
    def users(self) -> dict[str, str]:
        """User name to password, for ``"basic"`` and ``"token"``."""
        return dict(self._users)

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The first user's ``(name, password)``, or ``None`` when auth is ``"none"``."""
        if self._auth == "none" or not self._users:
            return None
        return next(iter(self._users.items()))

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of an image reference."""
        if self._port is None:
            raise TestbedError("registry: not started, so it has no address yet")
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        """The registry process's id, ``None`` when it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def token_server(self) -> TokenServer | None:
        """The token server behind ``"token"`` auth, else ``None``."""
        return self._token_server

    @property
    def workdir(self) -> Path:
        """The directory holding config, storage and the log."""
        if self._workdir is None:
            raise TestbedError("registry: not started, so it has no work directory yet")
        return self._workdir

    @property
    def log_path(self) -> Path:
        """The registry's stdout and stderr."""
        return self.workdir / "registry.log"

    @property
    def config_path(self) -> Path:
        """The YAML configuration the registry was started with."""
        return self.workdir / "config.yml"

    def client(
        self,
        *,
        authenticated: bool = True,
        credentials: tuple[str, str] | None = None,
        timeout: float = 30.0,
    ) -> httpx.Client:
        """An ``httpx.Client`` for this registry that answers its auth challenges.

        It logs in as ``credentials`` when given, else as the first user;
        ``authenticated=False`` makes it anonymous: it still fetches (anonymous)
        tokens, as docker does, so ``anonymous_pull`` registries let it pull.
        """
        creds = credentials or (self.credentials if authenticated else None)
        return httpx.Client(
            base_url=self.url,
            auth=RegistryAuth(*creds) if creds else RegistryAuth(),
            timeout=timeout,
            # A proxy from the environment must never see loopback test traffic.
            trust_env=False,
            # Plain HTTP on loopback: skip loading the CA store (15 ms a client).
            verify=False,  # noqa: S501
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Write the config, start the registry and wait until ``/v2/`` answers."""
        if self._proc is not None:
            return self
        binary = shutil.which(self._binary)
        if binary is None:
            raise MissingHostPart(
                f"registry: program {self._binary!r} not found on PATH; install the Debian "
                f"package {_DEBIAN_PACKAGE} (apt-get install {_DEBIAN_PACKAGE}) or pass binary="
            )
        try:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="criolib-registry-",
                                                      dir=_scratch_parent()))
        except OSError as exc:
            raise RegistryStartError(f"registry: cannot make its work directory: {exc}") from exc
        attempts = 1 if self._given_port is not None else _PORT_ATTEMPTS
        try:
            for attempt in range(1, attempts + 1):
                self._port = self._given_port if self._given_port is not None else _free_port()
                try:
                    try:
                        self._write_config()
                    except OSError as exc:
                        raise RegistryStartError(
                            f"registry {self.host}: cannot write its config in "
                            f"{self.workdir}: {exc}"
                        ) from exc
                    self._spawn(binary)
                    self._wait_ready()
                    break
                except RegistryStartError as exc:
                    if attempt == attempts or _ADDRESS_IN_USE not in str(exc):
                        raise
                    log.debug("registry: port %d was taken, retrying on another", self._port)
                    self._stop_processes()
        except BaseException:
            self.stop()
            raise
        log.debug("registry %s ready (auth %s)", self.host, self._auth)
        return self

    def _stop_processes(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and not stop(proc, grace=_STOP_GRACE):
            log.warning("registry %s: pid %d survived SIGKILL", self.host, proc.pid)
        if self._token_server is not None:
            self._token_server.stop()
            self._token_server = None

    def stop(self) -> None:
        """Terminate the registry (SIGTERM, then SIGKILL), reap it, clean up."""
        self._stop_processes()
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------

    def _write_config(self) -> None:
        """docs/configuration.md, with only what a loopback test registry needs."""
        workdir = self.workdir
        self._nonce = secrets.token_hex(16)
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(workdir / "storage")},
                "delete": {"enabled": True},
                # The purger would delete uploads of a paused test; it runs at startup too.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                # A fixed secret avoids the registry's "No HTTP secret provided" warning.
                "secret": secrets.token_hex(16),
                # Sent on every answer, 401s included: proves it is this registry answering.
                "headers": {NONCE_HEADER: [self._nonce]},
            },
        }
        if self._auth == "basic":
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text(htpasswd_lines(self._users))
            config["auth"] = {"htpasswd": {"realm": "criolib-testbed", "path": str(htpasswd)}}
        elif self._auth == "token":
            tokens = TokenServer(
                users=self._users,
                ttl=self._token_ttl,
                acl=self._acl,
                anonymous_pull=self._anonymous_pull,
                cert_path=workdir / "token-root.pem",
            )
            self._token_server = tokens.start()
            config["auth"] = {
                "token": {
                    "realm": tokens.realm,
                    "service": tokens.service,
                    "issuer": tokens.issuer,
                    "rootcertbundle": str(tokens.cert_path),
                }
            }
        # JSON is YAML (flow style); writing it avoids a YAML dependency for one file.
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def _spawn(self, binary: str) -> None:
        # REGISTRY_* variables override the config file; keep the test's config exact.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        argv = [binary, "serve", str(self.config_path)]
        with self.log_path.open("wb") as logf:  # each attempt's log starts afresh
            try:
                self._proc = spawn(
                    argv, env=env, cwd=self.workdir, stdout=logf, stderr=subprocess.STDOUT,
                    what=f"registry {self.host}",
                )
            except ExecError as exc:
                raise RegistryStartError(str(exc)) from exc

    def _wait_ready(self) -> None:
        """Poll ``GET /v2/`` until it answers 200 or 401, the process dies, or time is up."""
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        last: str = "no answer yet"
        with httpx.Client(timeout=1.0, trust_env=False) as http:
            while True:
                if self._proc.poll() is not None:
                    raise RegistryStartError(
                        f"registry {self.host}: exited with status {self._proc.returncode} "
                        f"during startup; log tail:\n{self._tail()}"
                    )
                try:
                    resp = http.get(f"{self.url}/v2/")
                    if resp.headers.get(NONCE_HEADER) != self._nonce:
                        last = f"GET /v2/ answered {resp.status_code} without our {NONCE_HEADER}"
                        last += " (another server holds the port?)"
                    elif resp.status_code in (200, 401):
                        return
                    else:
                        last = f"GET /v2/ answered {resp.status_code}"
                except httpx.TransportError as exc:
                    last = f"GET /v2/ failed: {exc}"
                if time.monotonic() > deadline:
                    raise RegistryStartError(
                        f"registry {self.host}: not ready after {self._startup_timeout} s "
                        f"({last}); log tail:\n{self._tail()}"
                    )
                time.sleep(0.02)

    def _tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        text = data[-_LOG_TAIL:].decode(errors="replace").strip()
        return text or "(empty)"
