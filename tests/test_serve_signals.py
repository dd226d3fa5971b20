"""`clipft serve` and `clipft demo` stop everything they started on SIGTERM, SIGINT and SIGHUP.

Each signal is sent once to a real process (a serve takes seconds to start): SIGTERM and SIGHUP
to serve (what docker, systemd and a closed terminal send), SIGINT to the demo (Ctrl-C); serve's
Ctrl-C is tests/test_cli.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.core.embedded_redis import free_tcp_port

# Part of the fault suite (`make test-faults`).
pytestmark = pytest.mark.faults


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    family, grew = {root}, True
    while grew:
        grew = False
        for pid in pids:
            if pid not in family and parent_of(pid) in family:
                family.add(pid)
                grew = True
    return family - {root}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def still_alive(pids: set[int], timeout_seconds: float = 30) -> list[int]:
    """The processes of `pids` still alive once they had `timeout_seconds` to go."""
    deadline = time.monotonic() + timeout_seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


def kill_what_is_left(process: subprocess.Popen[bytes]) -> None:
    """After a test, whatever it asserted: the process and everything under it go."""
    if process.poll() is None:
        process.kill()
    for pid in descendants(process.pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP])
def test_serve_leaves_no_child_behind(stop_signal: signal.Signals, tmp_path: Path) -> None:
    port = free_tcp_port()
    env = {
        **os.environ,
        "CLIPFT_DATA_DIR": str(tmp_path),
        "CLIPFT_DATABASE_URL": "",
        "CLIPFT_REDIS_URL": "",
    }
    env = {name: value for name, value in env.items() if value != ""}
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become healthy"
            time.sleep(0.5)
        children = descendants(serve.pid)
        assert len(children) >= 2  # at least the worker and the embedded Redis

        serve.send_signal(stop_signal)
        serve.wait(timeout=60)
        assert not still_alive(children)
    finally:
        kill_what_is_left(serve)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("stop_signal", [signal.SIGINT])
def test_demo_stopped_half_way_leaves_no_child_behind(
    stop_signal: signal.Signals, tmp_path: Path
) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"CLIPFT_DATABASE_URL", "CLIPFT_REDIS_URL"}
    }
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "demo", "--data-dir", str(tmp_path / "data")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Stopped while it trains: the api, the worker (and its training process) and Redis.
        deadline = time.monotonic() + 120
        while len(children := descendants(demo.pid)) < 3:
            assert demo.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the demo never started its stack"
            time.sleep(0.3)
        time.sleep(2)
        children = descendants(demo.pid)
        demo.send_signal(stop_signal)
        demo.wait(timeout=60)
        assert not still_alive(children), log_path.read_text()[-2000:]
    finally:
        kill_what_is_left(demo)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_running(parent: int, marker: str, timeout: float = 60) -> int:
    """The pid of `parent`'s live child whose command line holds `marker`, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in descendants(parent):
            if parent_of(pid) == parent and marker in command_line(pid) and alive(pid):
                return pid
        assert time.monotonic() < deadline, f"no {marker} under {parent}"
        time.sleep(0.1)


def replaced(parent: int, marker: str, dead: int) -> int:
    """`parent`'s new child for `marker` after `dead` was killed; `dead` was reaped meanwhile."""
    deadline = time.monotonic() + 60
    while (pid := child_running(parent, marker)) == dead or Path(f"/proc/{dead}").exists():
        assert time.monotonic() < deadline, f"{marker} {dead} was not replaced (or not reaped)"
        time.sleep(0.1)
    return pid


def start_serve(tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    from tests.clipft_process import start_clipft, wait_until_answering

    env = {"CLIPFT_DATA_DIR": str(tmp_path / "data"), **settings}
    serve, url = start_clipft("serve", env=env, log_path=tmp_path / "serve.log")
    wait_until_answering(serve, f"{url}/health", tmp_path / "serve.log")
    return serve, url


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_serve_restarts_a_dead_worker_and_redis_and_exits_1_on_one_that_keeps_dying(
    tmp_path: Path,
) -> None:
    serve, url = start_serve(
        tmp_path,
        CLIPFT_SERVE_RESTART_DELAY_SECONDS="0.1",
        CLIPFT_SERVE_RESTART_LIMIT="2",
    )
    try:
        redis_pid = child_running(serve.pid, "redis-server")
        os.kill(redis_pid, signal.SIGKILL)
        replaced(serve.pid, "redis-server", redis_pid)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the broker never came back"
            time.sleep(0.2)

        worker_pid = child_running(serve.pid, "app.cli worker")
        for _ in range(2):  # the restarts the limit allows
            os.kill(worker_pid, signal.SIGKILL)
            worker_pid = replaced(serve.pid, "app.cli worker", worker_pid)
        children = descendants(serve.pid)
        os.kill(worker_pid, signal.SIGKILL)  # once too often: serve gives up, and says so
        assert serve.wait(timeout=60) == 1, (tmp_path / "serve.log").read_text()[-3000:]
        assert "giving up" in (tmp_path / "serve.log").read_text()
        assert not still_alive(children)
    finally:
        kill_what_is_left(serve)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_a_serve_killed_by_sigkill_leaves_no_child_and_frees_its_redis_folder(
    tmp_path: Path,
) -> None:
    from app.core.embedded_redis import EmbeddedRedis

    serve, _ = start_serve(tmp_path)
    children = descendants(serve.pid)
    try:
        assert len(children) >= 2  # at least the worker and the embedded Redis
        serve.kill()  # the OOM killer: no cleanup of its own runs
        serve.wait()
        assert not still_alive(children)
        # The next serve gets the broker's folder: no second Redis writes beside an orphan.
        EmbeddedRedis(tmp_path / "data" / "redis").start(lock_wait_seconds=5).stop()
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
