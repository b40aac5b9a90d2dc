"""Lip-sync quality of a whole sentence on one avatar, for either kind: the sync and identity
measures of `gates` on 96×96 face crops (what the generator draws; for `warp`, its frame cropped
the same way), so a Wav2Lip checkpoint and the procedural mouth are judged alike."""

from __future__ import annotations

import numpy as np

from talkserve.compress import gates as G
from talkserve.lipsync import face_input
from talkserve.lipsync.avatars import Avatar
from talkserve.lipsync.frames import Generator, crop_face, faces_rgb, identity_pixels, match_colour, mouth_in_crop
from talkserve.lipsync.warp import WarpConfig, WarpRig, mouth_shapes, speech_envelope
from talkserve.voice.audio import frame_count, mel_windows, wav2lip_mel


def wav2lip_faces(generator: Generator, avatar: Avatar, audio: np.ndarray, sr: int, fps: float = 25.0,
                  batch: int = 32, colour: bool = True) -> np.ndarray:
    """(n, 96, 96, 3) uint8 RGB: the generator's faces for every frame of the sentence, colour
    matched to the photo as served (`colour=False`: the network's raw output)."""
    n = frame_count(len(audio), sr, fps)
    mels = mel_windows(wav2lip_mel(audio, sr), n, fps)
    face = face_input(avatar.face, 1)
    outs = np.concatenate([generator(mels[i:i + batch], np.repeat(face, len(mels[i:i + batch]), 0))
                           for i in range(0, n, batch)])
    if colour:
        outs = match_colour(outs, face[0, 3:], identity_pixels(avatar))
    return faces_rgb(outs)


def delivered_faces(generator: Generator, avatar: Avatar, audio: np.ndarray, sr: int, fps: float = 25.0
                    ) -> np.ndarray:
    """(n, 96, 96, 3): the served Wav2Lip frames (colour matched, feathered paste-back) cropped back
    to the face box, i.e. what a viewer sees of the face."""
    from talkserve.lipsync import animate

    frames = np.concatenate([p.frames for p in animate(audio, sr, avatar, generator, fps, 32, 32)])
    return np.stack([crop_face(f, avatar.box) for f in frames])


def warp_faces(avatar: Avatar, audio: np.ndarray, sr: int, fps: float = 25.0, cfg: WarpConfig | None = None
               ) -> np.ndarray:
    rig = WarpRig(avatar.portrait, avatar.landmarks, cfg)
    shapes = mouth_shapes(audio, sr, fps, frame_count(len(audio), sr, fps), rig.cfg)
    return np.stack([crop_face(rig.render(o, s), avatar.box) for o, s in shapes])


def evaluate_sentences(faces_for, avatar: Avatar, clips: list[tuple[np.ndarray, int]], fps: float = 25.0
                       ) -> dict[str, float]:
    """The measures over several sentences at once (frames concatenated: one r over all of them)."""
    faces = [faces_for(a, sr) for a, sr in clips]
    env = np.concatenate([speech_envelope(a, sr, fps, len(f)) for (a, sr), f in zip(clips, faces, strict=True)])
    all_faces = np.concatenate(faces)
    rest = float(G.mouth_openings(avatar.face[None])[0])
    return {**G.lip_sync(G.mouth_openings(all_faces), env, rest),
            **G.identity(all_faces, avatar.face, mouth_in_crop(avatar)), "frames": float(len(all_faces))}
