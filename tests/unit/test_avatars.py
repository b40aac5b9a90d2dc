import shutil
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from talkserve.lipsync.avatars import AvatarError, AvatarStore, portraits_in
from talkserve.recipe import SAMPLE_PORTRAIT


@pytest.fixture
def store(tmp_path):
    return AvatarStore(tmp_path / "avatars.db")


def rows(store):
    con = store._connect()  # creates the table, so "nothing stored" reads as an empty list
    try:
        return con.execute("SELECT id, x1, y1, x2, y2 FROM avatars ORDER BY id").fetchall()
    finally:
        con.close()


def test_sample_portrait_face_is_found_where_it_is(store):
    avatar = store.add(SAMPLE_PORTRAIT, "sample")
    x1, y1, x2, y2 = avatar.box
    # The published face box of this photo is roughly x 170-290, y 60-190.
    assert 150 <= x1 <= 200 and 260 <= x2 <= 310 and 40 <= y1 <= 90 and 150 <= y2 <= 210
    back = store.get("sample")
    assert back.box == avatar.box
    assert (back.portrait == cv2.cvtColor(cv2.imread(str(SAMPLE_PORTRAIT)), cv2.COLOR_BGR2RGB)).all()
    assert back.face.shape == (96, 96, 3)


def test_landmarks_are_stored_with_the_avatar(store):
    avatar = store.add(SAMPLE_PORTRAIT, "sample")
    lm = avatar.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    x1, _, x2, _ = avatar.box
    assert (lm[:, 0] > x1 - 10).all() and (lm[:, 0] < x2 + 10).all()
    assert lm[36:48, 1].max() < lm[48:68, 1].min()  # eyes above the mouth
    assert lm[8, 1] > lm[57, 1]  # chin below the lower lip
    con = store._connect()
    try:
        (blob,) = con.execute("SELECT landmarks FROM avatars WHERE id = 'sample'").fetchone()
    finally:
        con.close()
    assert len(blob) == 68 * 2 * 4
    np.testing.assert_array_equal(AvatarStore(store.path).get("sample").landmarks, lm)  # a fresh reader


def test_a_store_made_before_landmarks_still_serves_its_avatars(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    AvatarStore(db).add(SAMPLE_PORTRAIT, "sample")
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE avatars DROP COLUMN landmarks")  # the schema of the previous release
    con.commit()
    con.close()
    avatar = AvatarStore(db).get("sample")  # migrates the table, finds the landmarks on read
    assert avatar.landmarks.shape == (68, 2)
    assert AvatarStore(db).add(SAMPLE_PORTRAIT, "again").landmarks.shape == (68, 2)


def test_not_an_image_is_refused_and_nothing_stored(store, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_text("this is not a picture")
    with pytest.raises(AvatarError, match="not a readable image"):
        store.add(bad, "x")
    assert rows(store) == []


def test_photo_without_a_face_is_refused(store, tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 200, np.uint8))
    with pytest.raises(AvatarError, match="no face found"):
        store.add(blank, "wall")
    assert rows(store) == []


def test_existing_id_needs_replace_and_is_kept_intact(store, tmp_path):
    store.add(SAMPLE_PORTRAIT, "me")
    before = rows(store)
    with pytest.raises(AvatarError, match="already exists"):
        store.add(SAMPLE_PORTRAIT, "me")
    assert rows(store) == before
    # A failing replacement (no face) must not damage the stored avatar either.
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 200, np.uint8))
    with pytest.raises(AvatarError):
        store.add(blank, "me", replace=True)
    assert rows(store) == before
    flipped = tmp_path / "flipped.png"
    cv2.imwrite(str(flipped), cv2.flip(cv2.imread(str(SAMPLE_PORTRAIT)), 1))
    store.add(flipped, "me", replace=True)
    assert rows(store) != before and len(rows(store)) == 1


@pytest.mark.parametrize("bad_id", ["", "a b", "../etc", "x" * 65])
def test_bad_ids_are_refused(store, bad_id):
    with pytest.raises(AvatarError, match="avatar id"):
        store.add(SAMPLE_PORTRAIT, bad_id)


def test_unknown_avatar_names_the_field(store):
    with pytest.raises(AvatarError, match="avatar_id 'ghost' is not registered"):
        store.get("ghost")


def test_concurrent_registration_and_reads_lose_nothing(store):
    store.add(SAMPLE_PORTRAIT, "base")
    errors: list[Exception] = []

    def register(i):
        try:
            store.add(SAMPLE_PORTRAIT, f"a{i}")
        except Exception as e:
            errors.append(e)

    def read():
        try:
            for _ in range(5):
                assert store.get("base").portrait.shape == (512, 512, 3)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r[0] for r in rows(store)] == ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "base"]


def _read_only_mount(folder, code: str) -> subprocess.CompletedProcess:
    """Run python `code` with `folder` bind-mounted read-only over itself (a private mount namespace:
    as the pod's avatar volume; root gets EROFS there like anyone else)."""
    script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$0" -c "$1"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable, code],
                          capture_output=True, text=True, timeout=120)


def test_the_serving_side_reads_a_store_on_a_read_only_mount(tmp_path):
    folder = tmp_path / "avatars"
    AvatarStore(folder / "avatars.db").add(SAMPLE_PORTRAIT, "sample")
    before = sorted(p.name for p in folder.iterdir())
    code = f"""
from talkserve.lipsync.avatars import AvatarStore, AvatarError
store = AvatarStore({str(folder / "avatars.db")!r}, read_only=True)
assert store.exists("sample") and not store.exists("nobody")
assert store.get("sample").landmarks.shape == (68, 2)
try:
    AvatarStore({str(folder / "avatars.db")!r}).add({str(SAMPLE_PORTRAIT)!r}, "x")
except Exception as e:
    print("writer:", e)
"""
    run = _read_only_mount(folder, code)
    assert run.returncode == 0, run.stderr
    assert "readonly" in run.stdout or "read-only" in run.stdout  # the mount really is read-only
    assert sorted(p.name for p in folder.iterdir()) == before == ["avatars.db"]  # no journal, -wal or -shm


def test_a_store_made_in_wal_mode_is_converted_by_its_next_writer(tmp_path):
    import sqlite3

    db = tmp_path / "avatars.db"
    AvatarStore(db).add(SAMPLE_PORTRAIT, "sample")
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")  # how the previous release made stores
    con.close()
    code = f"from talkserve.lipsync.avatars import AvatarStore; AvatarStore({str(db)!r}, read_only=True).get('sample')"
    run = _read_only_mount(tmp_path, code)
    assert run.returncode != 0 and "WAL mode" in run.stderr and "talkserve avatar list" in run.stderr
    assert [a[0] for a in AvatarStore(db).list()] == ["sample"]  # a writer converts it
    assert _read_only_mount(tmp_path, code).returncode == 0


def test_a_read_only_store_that_is_not_there_creates_nothing_and_names_the_path(tmp_path):
    store = AvatarStore(tmp_path / "none" / "avatars.db", read_only=True)
    assert not store.exists("sample")
    with pytest.raises(AvatarError, match=r"avatar store .*avatars.db does not exist"):
        store.get("sample")
    with pytest.raises(AvatarError, match="read-only"):
        store.add(SAMPLE_PORTRAIT, "sample")
    assert not (tmp_path / "none").exists()


def test_a_folder_registers_in_one_transaction_or_not_at_all(store, tmp_path):
    folder = tmp_path / "portraits"
    folder.mkdir()
    shutil.copy(SAMPLE_PORTRAIT, folder / "alice.png")
    shutil.copy(SAMPLE_PORTRAIT, folder / "bob.png")
    (folder / "..data").mkdir()  # how a ConfigMap volume lays its files out: skipped
    assert [a.id for a in store.add_many(portraits_in(folder))] == ["alice", "bob"]
    cv2.imwrite(str(folder / "carol.png"), np.full((128, 128, 3), 90, np.uint8))  # no face
    shutil.copy(SAMPLE_PORTRAIT, folder / "dave.png")
    with pytest.raises(AvatarError, match=r"carol\.png: no face found"):
        store.add_many(portraits_in(folder), replace=True)
    assert [r[0] for r in rows(store)] == ["alice", "bob"]  # neither carol nor dave; alice and bob kept
    (folder / "carol.png").unlink()
    with pytest.raises(AvatarError, match="'alice' already exists"):
        store.add_many(portraits_in(folder))
    assert [r[0] for r in rows(store)] == ["alice", "bob"]  # dave, checked first, rolled back with it
    assert [a.id for a in store.add_many(portraits_in(folder), replace=True)] == ["alice", "bob", "dave"]
    with pytest.raises(AvatarError, match="no portraits"):
        portraits_in(tmp_path / "portraits" / "..data")


def test_the_built_repository_leaves_the_avatar_store_to_the_serving_process(tmp_path, monkeypatch):
    from talkserve.paths import avatar_db
    from talkserve.recipe import Recipe

    recipe = Recipe()
    assert recipe.serving.configured_avatar_db() == ""  # not this machine's path frozen into the configs
    monkeypatch.setenv("TALKSERVE_HOME", str(tmp_path / "home"))
    assert avatar_db("") == tmp_path / "home" / "avatars.db"  # read when the model starts
    recipe.serving.avatar_db = tmp_path / "mine.db"
    assert avatar_db(recipe.serving.configured_avatar_db()) == tmp_path / "mine.db"  # the recipe's override
