"""Start and stop PostgreSQL, moto_server (the S3 stand-in) and `mlflow server` on 127.0.0.1.

Every process is started in its own process group (setsid); `down` kills the groups and
waits until nothing listens on the ports `up` chose. State lives in `.stack/` (gitignored):
`state.json` (pids, pgids, ports) and `env` (the export lines a shell needs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BUCKET = "mlpipe"
REMOTE = "team"
S3_KEY = "testing"  # moto accepts any credentials; a real deployment sets its own
S3_SECRET = "testing"
DB = "mlflow"
DB_USER = "mlpipe"
TUNE_DB = "optuna"


class StackError(RuntimeError):
    """A one-line reason the stack could not start or stop."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pg_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries (initdb, pg_ctl), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((r for r in roots if (r / "initdb").exists()), None)


def _as_user() -> list[str]:
    """initdb refuses root: run PostgreSQL as nobody when we are root."""
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise StackError(f"{what} did not come up within {timeout:.0f} s")


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    out = log.open("ab")
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return int(proc.pid)


def _dead(pid: int) -> bool:
    """True when our child `pid` has exited (reaped here so it is not a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def up(root: Path, *, fast: bool = False, auth: bool = False) -> dict[str, Any]:
    """Start the stack; write root/.stack/state.json and root/.stack/env. Returns the state."""
    stack = root / ".stack"
    if (stack / "state.json").exists():
        raise StackError(f"a stack is already up ({stack / 'state.json'}): make stack-down")
    bindir = pg_bin()
    if bindir is None:
        raise StackError("PostgreSQL is not installed: run make postgres-deps")
    stack.mkdir(exist_ok=True)
    t0 = time.monotonic()
    state: dict[str, Any] = {"root": str(root), "procs": {}}
    try:
        _start(stack, bindir, state, fast=fast, auth=auth)
    except BaseException:
        _write_state(stack, state)
        down(root)
        raise
    state["up_seconds"] = round(time.monotonic() - t0, 2)
    _write_state(stack, state)
    _write_env(stack, state)
    _dvc_remote(root, state)
    return state


def _write_state(stack: Path, state: dict[str, Any]) -> None:
    (stack / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def _start(stack: Path, bindir: Path, state: dict[str, Any], *, fast: bool, auth: bool) -> None:
    # PostgreSQL: data and socket in a directory the unprivileged user owns
    # (in the system temp dir: the project's parents may be closed to the unprivileged user,
    # e.g. pytest's 0700 tmp_path)
    pgdir = Path(tempfile.mkdtemp(prefix="mlpipe-pg-"))
    pgdir.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(pgdir, "nobody")
    state["pgdir"] = str(pgdir)
    data, sock = pgdir / "data", pgdir
    run_as = _as_user()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, "-A", "trust"],
        check=True,
        capture_output=True,
    )
    pg_port = free_port()
    opts = f"-p {pg_port} -k {sock} -c listen_addresses=127.0.0.1"
    if fast:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(pgdir / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        start_new_session=True,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    state["procs"]["postgres"] = {"pid": pid, "pgid": os.getpgid(pid), "port": pg_port}
    subprocess.run(
        [
            str(bindir.parent / "bin" / "createdb")
            if (bindir / "createdb").exists()
            else "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(pg_port),
            "-U",
            DB_USER,
            DB,
        ],
        check=True,
        capture_output=True,
    )
    db_uri = f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg_port}/{DB}"
    state["backend_store_uri"] = db_uri
    # a second database for Optuna studies (mlpipe tune), on the same server
    createdb = bindir / "createdb" if (bindir / "createdb").exists() else Path("createdb")
    subprocess.run(
        [str(createdb), "-h", "127.0.0.1", "-p", str(pg_port), "-U", DB_USER, TUNE_DB],
        check=True, capture_output=True,
    )  # fmt: skip
    state["tune_storage"] = f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg_port}/{TUNE_DB}"

    # moto_server: the S3 stand-in, in memory
    s3_port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    pid = _spawn([moto, "-H", "127.0.0.1", "-p", str(s3_port)], stack / "moto.log")
    state["procs"]["moto"] = {"pid": pid, "pgid": pid, "port": s3_port}
    endpoint = f"http://127.0.0.1:{s3_port}"
    state["s3_endpoint"] = endpoint
    _wait(lambda: listening(s3_port), "moto_server")
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    state["bucket"] = BUCKET

    # mlflow server, its own process group; proxied artifacts so clients hold no S3 secrets
    port = free_port()
    env = dict(os.environ)
    env.update(
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_S3_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        db_uri,
        "--artifacts-destination",
        f"s3://{BUCKET}/mlartifacts",
        "--workers",
        "1",
    ]
    if auth:
        ini = stack / "auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {db_uri}\n"
            f"admin_username = {os.environ.get('MLFLOW_AUTH_ADMIN_USERNAME', 'admin')}\n"
            f"admin_password = {os.environ['MLFLOW_AUTH_ADMIN_PASSWORD']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", os.urandom(16).hex())
        cmd += ["--app-name", "basic-auth"]
    pid = _spawn(cmd, stack / "mlflow.log", env)
    state["procs"]["mlflow"] = {"pid": pid, "pgid": pid, "port": port}
    uri = f"http://127.0.0.1:{port}"
    state["tracking_uri"] = uri

    def healthy() -> bool:
        if _dead(pid):
            raise StackError(f"mlflow server exited at start: see {stack / 'mlflow.log'}")
        return _http_ok(f"{uri}/health")

    _wait(healthy, "mlflow server", timeout=120)


def _write_env(stack: Path, state: dict[str, Any]) -> None:
    lines = [
        f"export MLFLOW_TRACKING_URI={state['tracking_uri']}",
        f"export MLPIPE_DVC_REMOTE={REMOTE}",
        f"export MLPIPE_S3_ENDPOINT={state['s3_endpoint']}",
        f"export MLPIPE_S3_BUCKET={state['bucket']}",
        f"export MLPIPE_TUNE_STORAGE={state['tune_storage']}",  # mlpipe tune's studies
    ]
    (stack / "env").write_text("\n".join(lines) + "\n")


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    return subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True)


def _dvc_remote(root: Path, state: dict[str, Any]) -> None:
    """The DVC remote `team` on the same bucket; credentials only in .dvc/config.local."""
    if not (root / ".dvc").is_dir():
        return
    _drop_remote(root)
    url = f"s3://{state['bucket']}/dvc"
    for args in (
        ("remote", "add", "--local", REMOTE, url),
        ("remote", "modify", "--local", REMOTE, "endpointurl", state["s3_endpoint"]),
        ("remote", "modify", "--local", REMOTE, "access_key_id", S3_KEY),
        ("remote", "modify", "--local", REMOTE, "secret_access_key", S3_SECRET),
    ):
        proc = _dvc(root, *args)
        if proc.returncode != 0:
            raise StackError(f"dvc {' '.join(args[:3])} failed: {proc.stderr.strip()[-300:]}")


def _drop_remote(root: Path) -> None:
    """Remove the `team` remote's whole section from config.local (dvc remote remove leaves
    credentials behind, which then break every dvc command)."""
    local = root / ".dvc" / "config.local"
    if not local.exists():
        return
    keep: list[str] = []
    skipping = False
    for line in local.read_text().splitlines():
        if line.strip().startswith("["):
            skipping = line.strip() == f"['remote \"{REMOTE}\"']"
        if not skipping:
            keep.append(line)
    text = "\n".join(keep).strip()
    if text:
        local.write_text(text + "\n")
    else:
        local.unlink()


def down(root: Path) -> list[str]:
    """Stop every process group `up` started; remove .stack state. Returns what was stopped."""
    stack = root / ".stack"
    path = stack / "state.json"
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    stopped: list[str] = []
    procs = state.get("procs", {})
    # the server first (it holds PostgreSQL connections), PostgreSQL last
    for name in sorted(procs, key=lambda n: n == "postgres"):
        info = procs[name]
        _kill_group(int(info["pgid"]))
        stopped.append(name)
    for info in procs.values():
        port = int(info.get("port", 0))
        if port:
            end = time.monotonic() + 10
            while listening(port) and time.monotonic() < end:
                time.sleep(0.1)
    _drop_remote(root)
    if state.get("pgdir"):
        shutil.rmtree(state["pgdir"], ignore_errors=True)
    for f in ("state.json", "env", "auth.ini"):
        (stack / f).unlink(missing_ok=True)
    return stopped


def _kill_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            _dead(pgid)  # the leader is our child when up ran in this process: reap it
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def status(root: Path) -> str:
    path = root / ".stack" / "state.json"
    if not path.exists():
        return "stack: down"
    state = json.loads(path.read_text())
    lines = [f"stack: up ({state.get('tracking_uri')})"]
    for name, info in state.get("procs", {}).items():
        alive = True
        try:
            os.killpg(int(info["pgid"]), 0)
        except ProcessLookupError:
            alive = False
        port = info.get("port")
        lines.append(
            f"  {name}: pid {info['pid']} port {port} "
            f"{'running' if alive and listening(int(port)) else 'NOT running'}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from mlpipe.errors import redact

    root = Path.cwd()
    cmd = argv[0] if argv else "status"
    try:
        if cmd == "up":
            state = up(
                root, fast=os.environ.get("STACK_FAST") == "1", auth=os.environ.get("AUTH") == "1"
            )
            print(
                f"stack up in {state['up_seconds']} s: {state['tracking_uri']} (source .stack/env)"
            )
        elif cmd == "down":
            stopped = down(root)
            print(f"stack down: stopped {', '.join(stopped)}" if stopped else "stack: was not up")
        elif cmd == "status":
            print(status(root))
        else:
            print(f"error: unknown command {cmd!r}: use up, down or status", file=sys.stderr)
            return 2
    except (StackError, subprocess.CalledProcessError, KeyError) as exc:
        detail = (
            exc.stderr.decode(errors="replace").strip()[-300:]
            if isinstance(exc, subprocess.CalledProcessError) and exc.stderr
            else str(exc)
        )
        print(f"error: stack {cmd}: {redact(detail)}", file=sys.stderr)
        return 1
    return 0
