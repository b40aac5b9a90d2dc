"""Graceful shutdown that lets streaming replies finish.

Measured on the embedded Triton 2.51: SIGTERM cuts in-flight gRPC streams within 0.7 s instead of
draining them. So the drain happens before the signal: a flag (private to one tritonserver pid)
makes the entry model (`admit`) refuse new replies with UNAVAILABLE — clients retry those on
another replica — and the readiness probe fail, while replies already under way run to the end;
once no request is pending or executing, Triton gets its SIGTERM and exits at once.
`talkserve serve` does this on SIGTERM; in Kubernetes the preStop hook runs `talkserve drain`.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from talkserve.runtime.turns import server_scratch
from talkserve.text import DRAINING_MESSAGE

MESSAGE = DRAINING_MESSAGE
# Work in flight: requests queued in a scheduler, and requests a python model is executing.
BUSY_METRICS = ("nv_inference_pending_request_count", "talkserve_requests_executing")


class Draining(RuntimeError):
    """A new request reached a server that is shutting down (→ UNAVAILABLE)."""

    def __init__(self):
        super().__init__(MESSAGE)


def flag(server_pid: int | None = None) -> Path:
    return server_scratch("draining", server_pid)


def start(server_pid: int) -> None:
    """From now on the server refuses new replies (idempotent)."""
    flag(server_pid).touch()


def is_draining(server_pid: int | None = None) -> bool:
    """In a python stub: whether its tritonserver is draining."""
    return flag(server_pid).exists()


def refuse_if_draining() -> None:
    if is_draining():
        raise Draining


def clear(server_pid: int) -> None:
    flag(server_pid).unlink(missing_ok=True)


def busy(metrics_text: str) -> float:
    """Requests pending or executing, summed over models, from Triton's /metrics text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if re.split(r"[{ ]", line, maxsplit=1)[0] in BUSY_METRICS)


def scrape(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        return r.read().decode()


def wait_idle(metrics_url: str, timeout: float, settle: float = 1.0,
              read: Callable[[str], str] = scrape) -> bool:
    """True once nothing is pending or executing for `settle` seconds in a row (an ensemble hands a
    sentence from one step to the next between scrapes); False if `timeout` passes first."""
    deadline, idle_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            idle = busy(read(metrics_url)) == 0
        except OSError:  # the server is gone: nothing left to wait for
            return True
        now = time.monotonic()
        idle_since = (idle_since or now) if idle else None
        if idle_since is not None and now - idle_since >= settle:
            return True
        time.sleep(0.1)
    return False


def drain(server_pid: int, metrics_url: str, timeout: float) -> bool:
    """Refuse new replies, then wait for the ones in flight; True if they all finished in time."""
    start(server_pid)
    return wait_idle(metrics_url, timeout)
