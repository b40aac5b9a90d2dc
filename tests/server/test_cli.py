"""The CLI's error paths: clear message, non-zero exit, nothing written."""

import cv2
import numpy as np
from typer.testing import CliRunner

from talkserve.cli import app
from talkserve.recipe import SAMPLE_PORTRAIT

runner = CliRunner()


def test_avatar_add_list_and_refusals(tmp_path):
    db = tmp_path / "a.db"
    ok = runner.invoke(app, ["avatar", "add", str(SAMPLE_PORTRAIT), "--id", "sample", "--db", str(db)])
    assert ok.exit_code == 0, ok.output
    assert "face box" in ok.output
    again = runner.invoke(app, ["avatar", "add", str(SAMPLE_PORTRAIT), "--id", "sample", "--db", str(db)])
    assert again.exit_code == 1 and "already exists (use --replace)" in again.output
    text = tmp_path / "notes.png"
    text.write_text("hello")
    bad = runner.invoke(app, ["avatar", "add", str(text), "--id", "x", "--db", str(db)])
    assert bad.exit_code == 1 and "not a readable image" in bad.output
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.zeros((200, 200, 3), np.uint8))
    noface = runner.invoke(app, ["avatar", "add", str(wall), "--id", "y", "--db", str(db)])
    assert noface.exit_code == 1 and "no face found" in noface.output
    listed = runner.invoke(app, ["avatar", "list", "--db", str(db)])
    assert listed.exit_code == 0 and listed.output.splitlines()[0].startswith("sample\t512x512")
    assert len(listed.output.splitlines()) == 1


def test_build_with_a_bad_recipe_names_the_key_and_writes_nothing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntts:\n  voice: nope\n")
    out = tmp_path / "repo"
    result = runner.invoke(app, ["build", str(recipe), "--output", str(out)])
    assert result.exit_code == 1 and "voice" in result.output and "Extra inputs" in result.output
    assert not out.exists()


def test_build_with_a_missing_checkpoint_keeps_the_repository(tmp_path):
    out = tmp_path / "repo"
    (out / "releases" / "old").mkdir(parents=True)
    (out / "current").symlink_to("releases/old")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nwav2lip:\n  checkpoint: missing.pth\n")
    result = runner.invoke(app, ["build", str(recipe), "--output", str(out)])
    assert result.exit_code == 1 and "previous repository untouched" in result.output and "missing.pth" in result.output
    assert (out / "current").resolve() == (out / "releases" / "old").resolve()
    assert sorted(p.name for p in (out / "releases").iterdir()) == ["old"]


def test_avatar_import_registers_a_folder_or_nothing(tmp_path):
    import shutil

    folder, db = tmp_path / "portraits", tmp_path / "avatars.db"
    folder.mkdir()
    shutil.copy(SAMPLE_PORTRAIT, folder / "anna.png")
    cv2.imwrite(str(folder / "wall.png"), np.full((128, 128, 3), 90, np.uint8))
    bad = runner.invoke(app, ["avatar", "import", str(folder), "--db", str(db)])
    assert bad.exit_code == 1 and "wall.png: no face found" in bad.output
    (folder / "wall.png").unlink()
    ok = runner.invoke(app, ["avatar", "import", str(folder), "--db", str(db)])
    assert ok.exit_code == 0 and "1 avatars" in ok.output
    assert runner.invoke(app, ["avatar", "list", "--db", str(db)]).output.startswith("anna\t")


def test_wait_returns_once_a_repository_is_published_and_times_out_before(tmp_path):
    import threading
    import time

    late = runner.invoke(app, ["wait", "--output", str(tmp_path), "--timeout", "1", "--interval", "0.1"])
    assert late.exit_code == 1 and "no published repository" in late.output

    def publish():
        time.sleep(0.5)
        release = tmp_path / "releases" / "r1"
        release.mkdir(parents=True)
        (release / "talkserve_build.json").write_text("{}")
        (tmp_path / "current").symlink_to("releases/r1")

    threading.Thread(target=publish).start()
    done = runner.invoke(app, ["wait", "--output", str(tmp_path), "--timeout", "30", "--interval", "0.1"])
    assert done.exit_code == 0 and "r1 is published" in done.output


def test_engines_check_fails_without_a_repository_or_without_engines(tmp_path, built):
    empty = runner.invoke(app, ["engines", "--check", "--output", str(tmp_path)])
    assert empty.exit_code == 1 and "no published repository" in empty.output
    _, current = built  # a CPU-target repository: a GPU pool's pod must not pass its check on it
    cpu = runner.invoke(app, ["engines", "--check", "--output", str(current.parent)])
    assert cpu.exit_code == 1 and "holds no TensorRT engines" in cpu.output
