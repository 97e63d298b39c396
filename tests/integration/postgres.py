"""A throwaway PostgreSQL on 127.0.0.1 for tests: initdb and pg_ctl as an unprivileged user
(initdb refuses root), data and socket in a temporary folder, fsync off; stopped (every
server process) on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and (PG_BIN / name).exists():
        found = str(PG_BIN / name)
    return found


def missing() -> str | None:
    """Why no PostgreSQL can be started here, or None."""
    for name in ("initdb", "pg_ctl"):
        if tool(name) is None:
            return f"{name} not found (Debian package postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres(database: str = "mlpipe") -> Iterator[str]:
    """Yields postgresql://postgres@127.0.0.1:<port>/<database> (trust auth, loopback)."""
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", _free_port()
    run = lambda cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    try:
        run([str(tool("initdb")), "-D", str(data), "-A", "trust", "-U", "postgres"])
        options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        run([str(tool("pg_ctl")), "-D", str(data), "-o", options, "-l", str(root / "log"),
             "-w", "start"])  # fmt: skip
        try:
            run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                 f"CREATE DATABASE {database}"])  # fmt: skip
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            run([str(tool("pg_ctl")), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
