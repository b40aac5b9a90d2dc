"""Train Wav2Lip at its published size, in the official checkpoint layout, on data this machine makes.

No Wav2Lip weights reach us (and the official ones are licensed for non-commercial research
only), so the starter is ours, reproducible with this script:

    talkserve train-lipsync --out talkserve/assets/starter_wav2lip

Default (distillation from a procedural teacher): speech of the built-in corpus from the Piper
voice (plus any `--audio` WAVs), the training portraits that ship with us (`assets/faces`, the
sample portrait; augmented by scale, shift, rotation, colour and flip), and as the target the
`warp` lip-sync model's frame for that audio. With `--video clip.mp4`: Wav2Lip's supervised
setting on a real talking video — its own frames are the targets, its own audio the input, a
random other frame the reference — how a user gets a model of their own presenter.

Writes `wav2lip.pth` ({"state_dict": {"module.…": fp16}}: what `load_wav2lip` reads, like the
official files) and `config.json` (this config + what it trained on) beside it; while it runs,
`train_state.pt` holds the resumable state (weights, optimizer, step; removed once it finishes).
Each step's batch is drawn from an RNG seeded by (seed, step), so a resumed run continues exactly
as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm import tqdm

from talkserve.lipsync.frames import crop_face
from talkserve.models.wav2lip import Wav2Lip, load_wav2lip, wav2lip_state_dict
from talkserve.spec import FACE_SIZE

FACES = Path(__file__).resolve().parent.parent / "assets" / "faces"
FPS = 25.0
CANVAS = 224  # augmented portraits are rendered at this size around the face


class LipsyncTrainConfig(BaseModel):
    """Schedule and data of a train-lipsync run; saved beside the weights."""

    steps: int = Field(1000, ge=1, description="Optimizer steps")
    batch_size: int = Field(16, ge=1, description="Frames per step")
    lr: float = Field(6e-4, gt=0, description="Peak Adam learning rate (warm-up, then cosine decay to 10 %)")
    warmup: int = Field(30, ge=0, description="Linear learning-rate warm-up steps")
    mouth_weight: float = Field(4.0, ge=0, description="Extra L1 weight inside the mouth region")
    seed: int = Field(0, description="Seed of the init and of every step's batch")
    variants: int = Field(24, ge=1, description="Augmented copies of each training portrait")
    sentences: int = Field(80, ge=1, description="Corpus sentences the Piper voice speaks for training")
    bf16: bool = Field(True, description="bfloat16 autocast (AMX/AVX-512 CPUs run it ~2x faster); weights stay fp32")
    save_every: int = Field(50, ge=1, description="Steps between resumable checkpoints")
    video: str | None = Field(None, description="Talking video to train on instead of the procedural teacher")
    init: str | None = Field(
        None, description="Checkpoint to start from (null: random init; with a video, the starter)")


@dataclass
class Clip:
    mels: np.ndarray  # (n, 1, 80, 16) Wav2Lip mel window per video frame
    shapes: np.ndarray  # (n, 2) the warp teacher's mouth shape per frame


# ---- data: the procedural teacher -----------------------------------------------------------


def training_portraits() -> list[tuple[str, np.ndarray]]:
    from talkserve.lipsync.avatars import decode_image
    from talkserve.recipe import SAMPLE_PORTRAIT

    files = [SAMPLE_PORTRAIT, *sorted(FACES.glob("*.jpg"))]
    return [(f.stem, decode_image(f.read_bytes(), str(f))) for f in files]


def speech_clips(cfg: LipsyncTrainConfig, wavs: list[Path]) -> list[Clip]:
    """The corpus spoken by the Piper voice (noise off: runs repeat) and any given WAVs, each with
    0.3 s of silence around it so closed mouths are learnt too."""
    from talkserve.compress.data import builtin_texts
    from talkserve.lipsync.warp import mouth_shapes
    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import TTSRecipe
    from talkserve.voice.audio import frame_count, mel_windows, read_wav, wav2lip_mel

    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    audio = [(tts.synthesize(t), tts.sample_rate) for t in builtin_texts()[: cfg.sentences]]
    audio += [read_wav(w) for w in wavs]
    clips = []
    for a, sr in tqdm(audio, desc="speech features", leave=False):
        pad = np.zeros(int(0.3 * sr), np.float32)
        a = np.concatenate([pad, a, pad])
        n = frame_count(len(a), sr, FPS)
        clips.append(Clip(mel_windows(wav2lip_mel(a, sr), n, FPS), mouth_shapes(a, sr, FPS, n)))
    return clips


def _augmented_rig(rgb: np.ndarray, box, lm: np.ndarray, rng: np.random.Generator):
    """The portrait moved, scaled, turned and recoloured onto a CANVAS² image around its face box,
    its landmarks moved alike; returns (rig, face box on the canvas)."""
    from talkserve.lipsync.warp import WarpRig

    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    scale = CANVAS * 0.55 / side * rng.uniform(0.9, 1.1)
    m = cv2.getRotationMatrix2D(((x1 + x2) / 2, (y1 + y2) / 2), rng.uniform(-5, 5), scale)
    m[:, 2] += CANVAS / 2 - np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + rng.uniform(-0.04, 0.04, 2) * CANVAS
    img = cv2.warpAffine(rgb, m, (CANVAS, CANVAS), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.85, 1.15)
    img = np.clip(img * gain, 0, 255).astype(np.uint8)
    lm2 = np.hstack([lm, np.ones((68, 1))]) @ m.T
    # the face box as the detector would draw it on the moved image, with its jitter
    c = np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1]) @ m.T
    w, h = (x2 - x1) * scale * rng.uniform(0.95, 1.05), (y2 - y1) * scale * rng.uniform(0.95, 1.05)
    b = np.round([c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2]).astype(int)
    return WarpRig(img, lm2.astype(np.float32)), tuple(np.clip(b, 0, CANVAS))


def _mouth_weight(rig, box, weight: float) -> np.ndarray:
    """(96, 96) loss weights: 1, plus `weight` over the mouth region mapped into the crop."""
    x1, y1, x2, y2 = box
    mx1, my1, mx2, my2 = rig.box
    sx, sy = FACE_SIZE / (x2 - x1), FACE_SIZE / (y2 - y1)
    w = np.ones((FACE_SIZE, FACE_SIZE), np.float32)
    rows = slice(max(0, int((my1 - y1) * sy)), int(np.ceil((my2 - y1) * sy)))
    cols = slice(max(0, int((mx1 - x1) * sx)), int(np.ceil((mx2 - x1) * sx)))
    w[rows, cols] += weight
    return w


class TeacherData:
    """Batches of (mel, face input, target, loss weight) from the warp teacher."""

    def __init__(self, cfg: LipsyncTrainConfig, wavs: list[Path]):
        from talkserve.lipsync.avatars import prepare_portrait

        self.cfg = cfg
        self.clips = speech_clips(cfg, wavs)
        rng = np.random.default_rng([cfg.seed, 1 << 20])
        self.rigs = []
        portraits = training_portraits()
        for name, rgb in tqdm(portraits, desc="portrait rigs", leave=False):
            box, lm = prepare_portrait(rgb, name)
            self.rigs += [_augmented_rig(rgb, box, lm, rng) for _ in range(cfg.variants)]
        self.summary = {"portraits": [n for n, _ in portraits], "clips": len(self.clips),
                        "frames": int(sum(len(c.mels) for c in self.clips)), "rigs": len(self.rigs)}

    def batch(self, step: int):
        rng = np.random.default_rng([self.cfg.seed, step])
        mels, faces, targets, weights = [], [], [], []
        for _ in range(self.cfg.batch_size):
            rig, box = self.rigs[rng.integers(len(self.rigs))]
            clip = self.clips[rng.integers(len(self.clips))]
            i = rng.integers(len(clip.mels))
            target = crop_face(rig.render(*clip.shapes[i]), box)
            # the reference's mouth is random half the time, so the mouth must come from the audio
            ref_shape = (rng.uniform(0, 1), rng.uniform(-1, 1)) if rng.random() < 0.5 else (0.0, 0.0)
            ref = crop_face(rig.render(*ref_shape), box)
            w = _mouth_weight(rig, box, self.cfg.mouth_weight)
            if rng.random() < 0.5:
                target, ref, w = target[:, ::-1], ref[:, ::-1], w[:, ::-1]
            faces.append(pair_input(target, ref))
            targets.append(target[..., ::-1].transpose(2, 0, 1) / 255.0)
            mels.append(clip.mels[i])
            weights.append(w)
        return _tensors(mels, faces, targets, weights)


def pair_input(target_rgb: np.ndarray, ref_rgb: np.ndarray) -> np.ndarray:
    """(6, 96, 96): the target with its lower half masked ++ the reference, BGR in [0, 1]."""
    masked = target_rgb[..., ::-1].astype(np.float32) / 255.0
    masked[FACE_SIZE // 2:] = 0.0
    ref = ref_rgb[..., ::-1].astype(np.float32) / 255.0
    return np.concatenate([masked, ref], axis=2).transpose(2, 0, 1)


def _tensors(mels, faces, targets, weights):
    def t(x):
        return torch.from_numpy(np.ascontiguousarray(np.stack(x), dtype=np.float32))

    return t(mels), t(faces), t(targets), t(weights)[:, None]


# ---- data: a real talking video -------------------------------------------------------------


def read_video(path: Path) -> tuple[list[np.ndarray], np.ndarray, int, float]:
    """RGB frames, mono float32 audio, its sample rate and the frame rate of a video file."""
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises several types for unreadable input
        raise ValueError(f"{path}: not a readable video file ({e})") from e
    with container:
        if not container.streams.video or not container.streams.audio:
            raise ValueError(f"{path}: needs a video and an audio stream")
        fps = float(container.streams.video[0].average_rate or FPS)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        container.seek(0)
        sr = container.streams.audio[0].rate
        mono = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in mono.resample(f)]
        chunks += [r.to_ndarray().reshape(-1) for r in mono.resample(None)]
    return frames, np.concatenate(chunks).astype(np.float32), int(sr), fps


class VideoData:
    """Batches from a talking video: target = the frame's face, reference = another frame's."""

    def __init__(self, cfg: LipsyncTrainConfig, path: Path):
        from talkserve.lipsync.avatars import AvatarError, detect_face
        from talkserve.voice.audio import mel_windows, wav2lip_mel

        self.cfg = cfg
        frames, audio, sr, fps = read_video(path)
        boxes = []
        for i, f in enumerate(tqdm(frames, desc="faces in video", leave=False)):
            try:
                boxes.append(detect_face(f, f"{path} frame {i}"))
            except AvatarError:
                boxes.append(boxes[-1] if boxes else None)
        if not any(boxes):
            raise ValueError(f"{path}: no face found in any frame")
        first = next(b for b in boxes if b)
        boxes = [b or first for b in boxes]
        box = np.median(np.array(boxes), axis=0).astype(int)  # a presenter's box: steady, not jittered
        self.faces = [crop_face(f, box) for f in frames]
        self.mels = mel_windows(wav2lip_mel(audio, sr), len(frames), fps)
        self.summary = {"video": str(path), "frames": len(frames), "fps": fps, "sample_rate": sr}

    def batch(self, step: int):
        rng = np.random.default_rng([self.cfg.seed, step])
        n = len(self.faces)
        idx = rng.integers(n, size=self.cfg.batch_size)
        refs = [(i + rng.integers(1, n)) % n if n > 1 else i for i in idx]
        w = np.ones((FACE_SIZE, FACE_SIZE), np.float32)
        w[FACE_SIZE // 2:] += self.cfg.mouth_weight
        faces = [pair_input(self.faces[i], self.faces[r]) for i, r in zip(idx, refs, strict=True)]
        targets = [self.faces[i][..., ::-1].transpose(2, 0, 1) / 255.0 for i in idx]
        return _tensors([self.mels[i] for i in idx], faces, targets, [w] * len(idx))


# ---- the loop -------------------------------------------------------------------------------


def _lr(cfg: LipsyncTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return float(cfg.lr * (step + 1) / cfg.warmup)
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return float(cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t))))


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def initial_model(cfg: LipsyncTrainConfig) -> Wav2Lip:
    torch.manual_seed(cfg.seed)
    if cfg.init:
        return load_wav2lip(cfg.init).float()
    if cfg.video:
        return load_wav2lip(None).float()  # fine-tune the starter on the presenter
    return Wav2Lip()


def train(out: Path, cfg: LipsyncTrainConfig, wavs: list[Path] = (), resume: bool = True) -> Path:
    """Train and write `out/wav2lip.pth` + `out/config.json`; returns the checkpoint path."""
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    data = VideoData(cfg, Path(cfg.video)) if cfg.video else TeacherData(cfg, list(wavs))
    model = initial_model(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))  # Wav2Lip's betas
    start, losses = 0, []
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["config"] != cfg.model_dump(mode="json"):
            raise ValueError(f"{state_path} was written by another config; remove it or pass --no-resume")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, losses = state["step"], state["losses"]
    for step in tqdm(range(start, cfg.steps), desc="train-lipsync", initial=start, total=cfg.steps):
        mel, face, target, weight = data.batch(step)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(mel, face)
        loss = (weight * (pred.float() - target).abs()).mean() / weight.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                          "losses": losses, "config": cfg.model_dump(mode="json")}, state_path)
    path = write_starter(model, out, cfg, data.summary, losses)
    state_path.unlink(missing_ok=True)  # ~440 MB that only an unfinished run needs
    return path


def write_starter(model: Wav2Lip, out: Path, cfg: LipsyncTrainConfig, summary: dict, losses: list[float]) -> Path:
    """fp16 weights in the official layout (half the bytes; the loader casts back to fp32)."""
    ckpt = wav2lip_state_dict(model.eval())
    ckpt["state_dict"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    path = out / "wav2lip.pth"
    _save_atomic(ckpt, path)
    meta = {"config": cfg.model_dump(mode="json"), "data": summary, "steps": len(losses),
            "loss_first": losses[0] if losses else None,
            "loss_last_50": float(np.mean(losses[-50:])) if losses else None, "torch": torch.__version__}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path
