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

    from talkserve.audio import resample

    ref, deg = resample(reference, sr, 16000), resample(test, sr, 16000)
    return float(pesq(16000, ref, deg, "wb", on_error=PesqError.RETURN_VALUES)) if len(ref) else float("nan")


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    import jiwer

    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return float(jiwer.wer(reference, hypothesis, reference_transform=norm, hypothesis_transform=norm))
