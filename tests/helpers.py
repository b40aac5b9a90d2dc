"""Helpers shared by the server tests (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import time
import urllib.request


def metric(server, name: str, **labels: str) -> float:
    """Sum of a metric's series (those with `labels`) on the server's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    values = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + "{", name + " "))
              and all(f'{k}="{v}"' in line for k, v in labels.items())]
    assert values, f"{name} is not exported"
    return sum(values)


def wait_idle(server, timeout: float) -> float:
    """Seconds until no request is pending and no generation loop runs (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if metric(server, "nv_inference_pending_request_count") == 0 and \
                metric(server, "talkserve_llm_generations_active") == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"server still busy {timeout}s later")
