"""The README's first command ends in `talkserve demo`: build, register, serve, speak, stop — run as a
user runs it, in a fresh home, and check what it leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys

import av
import cv2
import pytest

pytestmark = pytest.mark.server


def test_demo_writes_a_talking_mp4_and_its_frame_strip(tmp_path):
    env = {**os.environ, "TALKSERVE_HOME": str(tmp_path / "home")}
    env.pop("TALKSERVE_ADMIN_KEY", None)
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "demo", "-o", str(tmp_path / "demo.mp4"),
                          "--repository", str(tmp_path / "repo")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "registered avatar 'sample'" in out and "time to first chunk" in out and "demo done in" in out
    assert "server compute per stage" in out  # the admin key the demo made opened the statistics
    with av.open(str(tmp_path / "demo.mp4")) as f:
        assert f.streams.video and f.streams.audio
        frames = sum(1 for _ in f.decode(video=0))
    assert frames > 25  # more than a second of video
    strip = cv2.imread(str(tmp_path / "demo-frames.png"))
    assert strip is not None and strip.shape[1] > strip.shape[0]  # a strip: wider than tall
    assert (tmp_path / "home" / "avatars.db").is_file()  # registered in the user's home, nowhere else
