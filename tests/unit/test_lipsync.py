from functools import lru_cache

import numpy as np
import pytest

from talkserve.lipsync import animate, animate_warp, face_input, frames_within, part_sizes, paste_back, paste_mask
from talkserve.lipsync.avatars import Avatar
from talkserve.lipsync.warp import WarpRig, mouth_shapes, speech_envelope
from talkserve.recipe import SAMPLE_PORTRAIT


@lru_cache(maxsize=1)
def sample_face() -> tuple[np.ndarray, tuple, np.ndarray]:
    """The sample portrait, its face box and landmarks (the real detectors)."""
    from talkserve.lipsync.avatars import decode_image, prepare_portrait

    rgb = decode_image(SAMPLE_PORTRAIT.read_bytes())
    box, lm = prepare_portrait(rgb)
    return rgb, box, lm


def face_landmarks(box) -> np.ndarray:
    """The sample portrait's 68 landmarks moved and scaled into `box`: a face filling that box."""
    _, (a1, b1, a2, b2), lm = sample_face()
    x1, y1, x2, y2 = box
    return ((lm - (a1, b1)) / (a2 - a1, b2 - b1) * (x2 - x1, y2 - y1) + (x1, y1)).astype(np.float32)


def make_avatar() -> Avatar:
    rng = np.random.default_rng(0)
    box = (20, 30, 70, 90)
    return Avatar("t", rng.integers(0, 255, (120, 100, 3), dtype=np.uint8), box, face_landmarks(box))


def test_face_input_masks_the_lower_half_and_keeps_the_reference():
    face = np.full((96, 96, 3), 255, np.uint8)
    face[..., 0] = 0  # RGB with no red → BGR with no last channel
    x = face_input(face, 3)
    assert x.shape == (3, 6, 96, 96) and x.dtype == np.float32
    assert (x[:, :3, 48:] == 0).all()  # masked half hidden from the generator
    assert (x[:, :3, :48] == x[:, 3:, :48]).all()
    assert (x[:, 2] [:, :48] == 0).all() and (x[:, 5] == 0).all() and (x[:, 3] == 1).all()  # BGR order


def test_paste_back_changes_only_the_lower_face_feathered():
    avatar = make_avatar()
    faces = np.zeros((4, 3, 96, 96), np.float32)
    frames = paste_back(avatar, faces)
    x1, y1, x2, y2 = avatar.box
    assert frames.shape == (4, 120, 100, 3) and frames.dtype == np.uint8
    outside = np.ones((120, 100), bool)
    outside[y1:y2, x1:x2] = False
    assert (frames[:, outside] == avatar.portrait[outside]).all()
    mask = paste_mask(avatar)[..., 0]
    box = frames[:, y1:y2, x1:x2]
    portrait = avatar.portrait[y1:y2, x1:x2]
    assert (box[:, mask == 0] == portrait[mask == 0]).all()  # eyes, forehead, box edges: the photo's pixels
    assert (box[:, mask > 0.999] <= 1).all()  # the mouth: the generator's (black) pixels
    eyes = avatar.landmarks[36:48] - (x1, y1)
    assert mask[int(eyes[:, 1].min()):int(eyes[:, 1].max()) + 1].max() == 0
    assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0  # no box seam
    inner = np.sort(np.unique(np.round(mask, 3)))
    assert len(inner) > 10  # a feathered ramp, not a hard edge


@pytest.mark.parametrize(("n", "expected"), [(1, [1]), (6, [6]), (7, [6, 1]), (60, [6, 25, 25, 4])])
def test_part_sizes(n, expected):
    assert part_sizes(n, 6, 25) == expected


@pytest.mark.parametrize(("side", "frames"), [(256, 25), (512, 15), (1024, 3), (4096, 1)])
def test_a_part_is_bounded_in_bytes_whatever_the_portrait(side, frames):
    """What a reader that stops reading leaves in the server is parts of raw frames: 12 MB each at most."""
    frame = side * side * 3
    assert frames_within(25, frame, 12e6) == frames
    assert frames == 1 or frames * frame <= 12e6


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


# ---- warp: the procedural mouth ------------------------------------------------------------


def tone_bursts(sr: int, fps: float, frames: int, loud: list[range]) -> np.ndarray:
    """Silence with a voiced tone (150 Hz + harmonics) in the given frame ranges."""
    t = np.arange(round(frames * sr / fps)) / sr
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12)) * 0.2
    gate = np.zeros_like(t)
    for r in loud:
        gate[round(r.start * sr / fps):round(r.stop * sr / fps)] = 1.0
    return (voice * gate).astype(np.float32)


def test_mouth_shapes_open_on_sound_and_close_in_silence():
    sr, fps = 16000, 25
    audio = tone_bursts(sr, fps, 50, [range(10, 20), range(30, 32)])
    shapes = mouth_shapes(audio, sr, fps, 50)
    assert shapes.shape == (50, 2)
    assert (shapes[:8, 0] == 0).all() and (shapes[22:28, 0] == 0).all() and (shapes[40:, 0] == 0).all()
    assert shapes[11:19, 0].min() > 0.5
    assert int(np.argmax(shapes[:, 0] > 0.2)) in (9, 10)  # opens with the sound, not frames later
    env = speech_envelope(audio, sr, fps, 50)
    assert (env[:9] == 0).all() and env[12:18].min() > 20


def test_warp_changes_nothing_outside_its_mouth_region():
    rgb, _, lm = sample_face()
    rig = WarpRig(rgb, lm)
    x1, y1, x2, y2 = rig.box
    outside = np.ones(rgb.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    rng = np.random.default_rng(0)
    shapes = np.stack([rng.uniform(0, 1, 12), rng.uniform(-1, 1, 12)], 1).astype(np.float32)
    frames = rig.animate(shapes)
    assert (frames[:, outside] == rgb[outside]).all()
    assert (rig.render(0.0) == rgb).all()  # a closed mouth is the portrait itself
    assert np.abs(frames[:, y1:y2, x1:x2].astype(int) - rgb[y1:y2, x1:x2]).mean() > 2  # and it did move
    # the region is the lower face: below the eyes, inside the face's width
    assert y1 > lm[36:48, 1].max() and x1 >= lm[:, 0].min() - 0.5 * (x2 - x1)


def test_warp_opening_is_seen_by_the_landmark_detector():
    from talkserve.lipsync.landmarks import detect, mouth_opening

    rgb, box, lm = sample_face()
    rig = WarpRig(rgb, lm)
    seen = [mouth_opening(detect(rig.render(o), near=box)) for o in (0.0, 0.5, 1.0)]
    assert seen[0] < seen[1] < seen[2] and seen[2] - seen[0] > 0.12


def test_animate_warp_streams_parts_with_their_audio():
    rgb, _, lm = sample_face()
    rig = WarpRig(rgb, lm)
    sr, fps = 22050, 25
    audio = tone_bursts(sr, fps, 40, [range(5, 30)])[: 882 * 40 - 100]
    parts = list(animate_warp(audio, sr, rig, fps, first_part=6, part=25))
    assert [len(p.frames) for p in parts] == [6, 25, 9]
    np.testing.assert_array_equal(np.concatenate([p.audio for p in parts]), audio)
    video = np.concatenate([p.frames for p in parts])
    x1, y1, x2, y2 = rig.box
    moved = np.abs(video[:, y1:y2, x1:x2].astype(int) - rgb[y1:y2, x1:x2]).mean(axis=(1, 2, 3))
    assert moved[:4].max() == 0 and moved[10:25].min() > 1  # closed in silence, open while it sounds
