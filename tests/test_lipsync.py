import numpy as np
import pytest

from talkserve.avatars import Avatar
from talkserve.lipsync import animate, face_input, part_sizes, paste_back


def make_avatar() -> Avatar:
    rng = np.random.default_rng(0)
    return Avatar("t", rng.integers(0, 255, (120, 100, 3), dtype=np.uint8), (20, 30, 70, 90))


def test_face_input_masks_the_lower_half_and_keeps_the_reference():
    face = np.full((96, 96, 3), 255, np.uint8)
    face[..., 0] = 0  # RGB with no red → BGR with no last channel
    x = face_input(face, 3)
    assert x.shape == (3, 6, 96, 96) and x.dtype == np.float32
    assert (x[:, :3, 48:] == 0).all()  # masked half hidden from the generator
    assert (x[:, :3, :48] == x[:, 3:, :48]).all()
    assert (x[:, 2] [:, :48] == 0).all() and (x[:, 5] == 0).all() and (x[:, 3] == 1).all()  # BGR order


def test_paste_back_changes_only_the_face_box():
    avatar = make_avatar()
    faces = np.zeros((4, 3, 96, 96), np.float32)
    frames = paste_back(avatar, faces)
    x1, y1, x2, y2 = avatar.box
    assert frames.shape == (4, 120, 100, 3) and frames.dtype == np.uint8
    outside = np.ones((120, 100), bool)
    outside[y1:y2, x1:x2] = False
    assert (frames[:, outside] == avatar.portrait[outside]).all()
    assert (frames[:, y1:y2, x1:x2] == 0).all()


@pytest.mark.parametrize(("n", "expected"), [(1, [1]), (6, [6]), (7, [6, 1]), (60, [6, 25, 25, 4])])
def test_part_sizes(n, expected):
    assert part_sizes(n, 6, 25) == expected


def test_animate_streams_parts_whose_audio_and_frames_line_up():
    avatar = make_avatar()
    sr, fps = 22050, 25
    audio = np.random.default_rng(1).standard_normal(882 * 40 + 100).astype(np.float32)
    calls = []

    def generator(mel, face):
        calls.append((mel.shape, face.shape))
        return np.full((len(mel), 3, 96, 96), 0.5, np.float32)

    parts = list(animate(audio, sr, avatar, generator, fps, first_part=6, part=25))
    assert [p.index for p in parts] == [0, 1, 2]
    assert [len(p.frames) for p in parts] == [6, 25, 9]
    assert calls[0] == ((6, 1, 80, 16), (6, 6, 96, 96))
    for p in parts[:-1]:
        assert len(p.audio) == len(p.frames) * 882  # each part carries exactly its frames' audio
    np.testing.assert_array_equal(np.concatenate([p.audio for p in parts]), audio)
