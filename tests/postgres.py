"""A real PostgreSQL for the tests: Debian's package, a throwaway cluster on loopback.

The cluster lives in a temporary folder, listens on 127.0.0.1 at a free port (and on a Unix
socket in that folder), trusts local connections, runs without fsync, and is stopped and
removed when the session ends. Debian's ``postgresql`` package is installed when no server
binaries are found (as root, under a file lock so that concurrent sessions do not run apt at
once). PostgreSQL refuses to run as root, so as root the cluster runs as the package's
``postgres`` user.

``database_url`` (imported into ``tests/conftest.py``) runs a test once on a SQLite file and
once on a fresh PostgreSQL database of its own::

    def test_something(database_url: str) -> None:
        engine = create_db_engine(database_url)
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.engine import free_port

INSTALL_LOCK = Path(tempfile.gettempdir()) / "tuneloop-postgresql-install.lock"
INSTALL_TIMEOUT_S = 900
DEBIAN_BIN = Path("/usr/lib/postgresql")  # Debian keeps pg_ctl and initdb off PATH, here
ROLE = "tuneloop"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, and no way to install them (needs root and apt)."""


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: on PATH, else Debian's
    newest ``/usr/lib/postgresql/<major>/bin``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = [path.parent for path in DEBIAN_BIN.glob("*/bin/pg_ctl")]
    versions.sort(
        key=lambda bin_dir: int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0
    )
    return versions[-1] if versions else None


def ensure_postgresql() -> Path:
    """The server binaries' folder, installing Debian's ``postgresql`` first when missing."""
    found = find_bin_dir()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PostgresUnavailable(
            "PostgreSQL's server binaries are not installed and cannot be installed here "
            "(needs root and apt-get)"
        )
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing it right now
        found = find_bin_dir()
        if found:
            return found
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-q"],
            [
                "apt-get", "install", "-y", "-q", "--no-install-recommends",
                "-o", "DPkg::Lock::Timeout=300", "postgresql",
            ],
        ):  # fmt: skip
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
            )
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    found = find_bin_dir()
    if not found:
        raise RuntimeError("apt-get installed 'postgresql' but no pg_ctl was found")
    return found


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``url(database)`` is a SQLAlchemy URL for it."""

    bin_dir: Path
    folder: Path
    port: int
    run_as: dict[str, Any]  # subprocess user/group when we are root, else empty

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = ensure_postgresql()
        folder = Path(tempfile.mkdtemp(prefix="tuneloop-pg-"))
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # postgres refuses root: run it as the package's user
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable("running as root and no 'postgres' user exists") from exc
            os.chown(folder, user.pw_uid, user.pw_gid)
            run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        server = cls(bin_dir, folder, free_port(), run_as)
        server._run(
            "initdb", "-D", str(server.data), "-U", ROLE, "--auth=trust", "--encoding=UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-h 127.0.0.1 -p {server.port} -k {folder} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        try:
            server._run(
                "pg_ctl", "-D", str(server.data), "-l", str(server.log), "-o", options,
                "-w", "-t", "60", "start",
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return server

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even while connections are open (engines a test did not dispose)."""
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _sql(self, statement: str) -> None:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=ROLE, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(statement)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            **self.run_as,
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stderr}\n{log}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One cluster for the session (skipped where PostgreSQL cannot be installed)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tuneloop.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
