"""The readiness probe sees what Triton's own readiness misses: a dead python stub."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import start_serve, triton_under

from talkserve.runtime.drain import clear, start
from talkserve.runtime.turns import remove_stale_scratch, scratch_base
from talkserve.server.health import live_stubs, liveness_problems, problems, processes, python_instances

pytestmark = pytest.mark.server


def test_expected_instances_follow_the_configs(built):
    _, current = built
    names = python_instances(current)
    assert {"llm_0_0", "llm_0_1", "tts_0_0", "lipsync_0_0", "asr_0_0", "cancel_0_0", "wav2lip_0_0"} <= names
    assert not any(n.startswith("talking_head") for n in names)  # ensembles have no stub


def test_probe_fails_when_a_stub_dies_though_triton_still_says_ready(built, tmp_path):
    from talkserve.server.serve import Ports, Server

    _, current = built
    server = Server(current, Ports.free(), log=tmp_path / "triton.log").start()
    url = f"127.0.0.1:{server.ports.grpc}"
    try:
        pid = server.proc.pid
        assert problems(url, current, pid) == [] and liveness_problems(url, current, pid) == []
        start(pid)  # draining: out of the Service, but alive (the kubelet must not restart it mid-drain)
        assert problems(url, current, pid) == ["server is draining for shutdown"]
        assert liveness_problems(url, current, pid) == []
        clear(pid)
        stub = next(p for p, ppid, argv in processes() if ppid == pid and "tts_0_0" in argv)
        os.kill(stub, signal.SIGKILL)
        time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.ports.http}/v2/models/tts/ready", timeout=5) as r:
            assert r.status == 200  # Triton's own readiness does not notice
        assert "tts_0_0" not in live_stubs(pid)
        dead = ["python stub tts_0_0 is not running (Triton does not restart it)"]
        assert problems(url, current, pid) == dead
        assert liveness_problems(url, current, pid) == dead  # Triton's /v2/health/live stays green: ours restarts it
        for probe in ([], ["--live"]):
            run = subprocess.run([sys.executable, "-m", "talkserve.cli", "health", "--url", url, "--repository",
                                  str(current), "--server-pid", str(pid), *probe],
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 1 and "tts_0_0" in run.stderr
    finally:
        server.stop()
    assert not list(scratch_base().glob(f"talkserve-*-{pid}"))  # no turns or drain flag left in /dev/shm


def test_scratch_of_servers_that_are_gone_is_removed_and_a_live_ones_kept(tmp_path):
    dead = 2**22 + 12345  # above the kernel's pid_max: never a live process
    assert not Path(f"/proc/{dead}").exists()
    (scratch_base() / f"talkserve-turns-{dead}").mkdir()
    (scratch_base() / f"talkserve-turns-{dead}" / "x").write_text("1")
    (scratch_base() / f"talkserve-draining-{dead}").touch()
    mine = scratch_base() / f"talkserve-turns-{os.getpid()}"
    mine.mkdir(exist_ok=True)
    try:
        assert dead in remove_stale_scratch()
        assert not list(scratch_base().glob(f"talkserve-*-{dead}")) and mine.is_dir()
    finally:
        mine.rmdir()


def test_serve_restarts_the_server_when_a_stub_dies(built, tmp_path):
    from talkserve.client import TalkClient
    from talkserve.server.serve import Ports, is_ready

    _, current = built
    ports = Ports.free()
    serve = start_serve(current, ports, "--health-interval", "1")
    try:
        triton = triton_under(serve)
        stub = next(p for p, ppid, argv in processes() if ppid == triton and "tts_0_0" in argv)
        os.kill(stub, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:  # a new tritonserver, ready, with a tts stub of its own
            assert serve.poll() is None and time.monotonic() < deadline, "serve did not recover the server"
            pids = [p for p, ppid, argv in processes() if ppid == serve.pid and argv and "tritonserver" in argv[0]]
            if pids and pids[0] != triton and is_ready(ports) and "tts_0_0" in live_stubs(pids[0]):
                break
            time.sleep(0.5)
        with TalkClient(f"127.0.0.1:{ports.grpc}") as client:
            assert list(client.stream("Thanks.", "sample", max_new_tokens=6))
    finally:
        serve.send_signal(signal.SIGTERM)
        out, _ = serve.communicate(timeout=90)
    assert "tts_0_0 died; restarting tritonserver" in out
