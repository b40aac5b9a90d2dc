"""Quality gates: metrics of a compressed model against its teacher, and the thresholds they must meet.

A gate's config field name says its metric and direction (`mouth_psnr_min`, `mel_l1_max`); a
threshold of None reports the metric without gating on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel


@dataclass
class GateResult:
    model: str
    metric: str
    value: float
    threshold: float | None
    kind: str  # "min" | "max"
    passed: bool

    def describe(self) -> str:
        if self.threshold is None:
            return f"{self.model}: {self.metric} = {self.value:.4g} (reported, not gated)"
        op = ">=" if self.kind == "min" else "<="
        verdict = "passes" if self.passed else "FAILS"
        return f"{self.model}: {self.metric} = {self.value:.4g} {verdict} (must be {op} {self.threshold:g})"

    def as_dict(self) -> dict:
        return asdict(self)


class GateFailure(RuntimeError):
    def __init__(self, failed: list[GateResult]):
        self.failed = failed
        super().__init__("quality gate failed: " + "; ".join(r.describe() for r in failed))


def check(model: str, metrics: dict[str, float], gates: BaseModel) -> list[GateResult]:
    """One result per gate field; a metric missing from `metrics` is a programming error."""
    results = []
    for field, threshold in gates.model_dump().items():
        metric, _, kind = field.rpartition("_")
        value = float(metrics[metric])
        ok = threshold is None or (value >= threshold if kind == "min" else value <= threshold)
        ok = ok and bool(np.isfinite(value))
        results.append(GateResult(model, metric, value, threshold, kind, ok))
    return results


def failed(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


# ---- metrics -------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Mean SSIM of (…, H, W) images (Wang et al. 2004: 11×11 Gaussian, σ 1.5)."""
    import cv2

    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    a = a.reshape(-1, *a.shape[-2:]).astype(np.float64)
    b = b.reshape(-1, *b.shape[-2:]).astype(np.float64)
    scores = []
    for x, y in zip(a, b, strict=True):
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        scores.append(np.mean(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    return float(np.mean(scores))


def snr(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def stoi(reference: np.ndarray, test: np.ndarray, sr: int) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(reference, test, sr, extended=False))


def pesq_wb(reference: np.ndarray, test: np.ndarray, sr: int) -> float:
    """Wide-band PESQ at 16 kHz; NaN when PESQ finds no speech in the reference (e.g. random-init output)."""
    from pesq import PesqError, pesq

    from talkserve.voice.audio import resample

    ref, deg = resample(reference, sr, 16000), resample(test, sr, 16000)
    return float(pesq(16000, ref, deg, "wb", on_error=PesqError.RETURN_VALUES)) if len(ref) else float("nan")


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    import jiwer

    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return float(jiwer.wer(reference, hypothesis, reference_transform=norm, hypothesis_transform=norm))


# ---- lip-sync measures (no SyncNet weights reach us: landmarks against the speech) -----------


def mouth_openings(faces_rgb: np.ndarray, upscale: int = 3) -> np.ndarray:
    """(n,) inner-lip opening (mouth widths) per 96×96 RGB face crop, by the same 68-point landmark
    detector avatars are registered with; the crop is upscaled and the predictor starts from the
    whole crop (a face crop is its own face box)."""
    import cv2

    from talkserve.lipsync import landmarks as L

    out = []
    for face in faces_rgb:
        big = cv2.resize(face, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        h, w = big.shape[:2]
        box = (int(0.05 * w), int(0.05 * h), int(0.95 * w), int(0.95 * h))
        out.append(L.mouth_opening(L.detect_in_box(big, box)))
    return np.array(out, np.float32)


def best_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 5) -> tuple[float, int]:
    """Pearson r of x against y shifted by each lag in ±max_lag frames; (best r, its lag). A
    positive lag means x (the mouth) trails y (the audio)."""
    best = (-1.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        a, b = (x[lag:], y[: len(y) - lag]) if lag >= 0 else (x[:lag], y[-lag:])
        if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best[0] + 1e-9 or (abs(r - best[0]) <= 1e-9 and abs(lag) < abs(best[1])):
            best = (r, lag)
    return best


def lip_sync(openings: np.ndarray, envelope: np.ndarray, rest_opening: float, closed_margin: float = 0.04
             ) -> dict[str, float]:
    """sync_r / sync_lag: mouth opening vs the speech envelope (`warp.speech_envelope`, dB above
    silence); silent_closed: share of silent frames whose mouth is no more open than the
    portrait's own at rest (+ margin)."""
    r, lag = best_lag(openings.astype(np.float64), envelope.astype(np.float64))
    silent = envelope <= 0
    closed = openings <= rest_opening + closed_margin
    return {"sync_r": r, "sync_lag": float(lag),
            "silent_closed": float(closed[silent].mean()) if silent.any() else float("nan")}


def identity(faces_rgb: np.ndarray, reference_rgb: np.ndarray, mouth: tuple[int, int, int, int]) -> dict[str, float]:
    """PSNR (dB) / SSIM of 96×96 faces vs the portrait's own crop, outside the mouth box (x1, y1, x2, y2)."""
    keep = np.ones(reference_rgb.shape[:2], bool)
    x1, y1, x2, y2 = mouth
    keep[y1:y2, x1:x2] = False
    f = faces_rgb.astype(np.float64) / 255.0
    ref = reference_rgb.astype(np.float64) / 255.0
    gray = lambda z: z @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    masked_f, masked_r = gray(f) * keep, np.broadcast_to(gray(ref) * keep, f.shape[:3])
    return {"identity_psnr": psnr(f[:, keep], np.broadcast_to(ref[keep], f[:, keep].shape)),
            "identity_ssim": ssim(masked_f, masked_r)}
