"""`warp`: an audio-driven procedural mouth, a lip-sync model with no network.

From the portrait's 68 landmarks (stored with the avatar), each video frame opens the jaw and
shapes the lips from that frame's speech: loudness sets the opening, the spectral centroid sets
spread ("ee", high second formant) vs rounded ("oo", low). The lower face moves by a smooth
thin-plate-spline warp (the lips, corners and chin are its control points; the nose, eyes and the
border of the mouth region stay put), and a mouth cavity with a hint of teeth is drawn between
the inner lips. Only the mouth region (`WarpRig.box`) ever changes; every other pixel is the
portrait's own.

The warp is linear in its two parameters, so a rig precomputes one displacement field per
parameter once per avatar, and a frame costs two multiply-adds over the region, one `cv2.remap`
and one polygon fill: hundreds of frames per second on one core. It is the degradation path
under load and the teacher the starter Wav2Lip is distilled from (`talkserve train-lipsync`).
"""

from __future__ import annotations

import cv2
import numpy as np

from talkserve.lipsync import landmarks as L
from talkserve.lipsync.config import WarpConfig
from talkserve.voice.audio import resample

FEATURE_SR = 16000


# ---- audio → per-frame mouth shape ---------------------------------------------------------


def _frames(audio: np.ndarray, sr: int, fps: float, n: int) -> np.ndarray:
    """(n, hop) 16 kHz samples of each video frame's span."""
    y = resample(np.asarray(audio, np.float32), sr, FEATURE_SR)
    hop = FEATURE_SR / fps
    size = round(hop)
    y = np.pad(y, (0, max(0, int(np.ceil(n * hop)) + size - len(y))))
    starts = np.round(np.arange(n) * hop).astype(np.int64)
    return y[starts[:, None] + np.arange(size)[None, :]]


def frame_loudness(audio: np.ndarray, sr: int, fps: float, n: int) -> np.ndarray:
    """(n,) RMS level of each video frame's audio, in dBFS."""
    rms = np.sqrt(np.mean(_frames(audio, sr, fps, n).astype(np.float64) ** 2, axis=1))
    return (20 * np.log10(rms + 1e-9)).astype(np.float32)


def speech_envelope(audio: np.ndarray, sr: int, fps: float, n: int, range_db: float = 40.0) -> np.ndarray:
    """(n,) loudness per frame in dB above a floor `range_db` below the loud frames (90th
    percentile); 0 = silence. What the sync gates correlate mouth opening with."""
    db = frame_loudness(audio, sr, fps, n)
    voiced = db[db > -70]
    ref = float(np.percentile(voiced, 90)) if voiced.size else -20.0
    return np.clip(db - (ref - range_db), 0.0, range_db).astype(np.float32)


def _centroid(frames: np.ndarray) -> np.ndarray:
    spec = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frames.shape[1], 1 / FEATURE_SR)
    band = (freqs >= 250) & (freqs <= 4000)
    power = spec[:, band]
    return (power @ freqs[band]) / np.maximum(power.sum(axis=1), 1e-12)


def mouth_shapes(audio: np.ndarray, sr: int, fps: float, n: int, cfg: WarpConfig | None = None) -> np.ndarray:
    """(n, 2) float32 per video frame: opening in [0, 1] and spread in [-1, 1]."""
    cfg = cfg or WarpConfig()
    frames = _frames(audio, sr, fps, n)
    db = frame_loudness(audio, sr, fps, n)
    voiced = db[db > cfg.gate_dbfs]
    ref = float(np.percentile(voiced, 90)) if voiced.size else 0.0
    opening = np.clip((db - (ref - cfg.range_db)) / cfg.range_db, 0.0, 1.0) ** cfg.gamma
    opening[db <= cfg.gate_dbfs] = 0.0
    if n >= 3:  # zero-lag smoothing while it sounds (lips do not jump); a silent frame stays closed
        smooth = np.convolve(np.pad(opening, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
        opening = np.where(opening > 0, smooth, 0.0)
    spread = np.clip((_centroid(frames) - 1500.0) / 900.0, -1.0, 1.0) * (opening > 0.05)
    return np.stack([opening, spread], axis=1).astype(np.float32)


# ---- the rig: landmarks → two displacement fields ------------------------------------------


def _tps(src: np.ndarray, values: np.ndarray, query: np.ndarray, smooth: float = 1e-3) -> np.ndarray:
    """Thin-plate spline through `values` (N, 2) at `src` (N, 2), evaluated at `query` (M, 2)."""

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.where(r2 > 0, 0.5 * r2 * np.log(np.maximum(r2, 1e-12)), 0.0)

    n = len(src)
    p = np.hstack([np.ones((n, 1)), src])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = kernel(src, src) + smooth * np.eye(n)
    a[:n, n:], a[n:, :n] = p, p.T
    coef = np.linalg.solve(a, np.vstack([values, np.zeros((3, 2))]))
    return kernel(query, src) @ coef[:n] + np.hstack([np.ones((len(query), 1)), query]) @ coef[n:]


def displacements(lm: np.ndarray, cfg: WarpConfig) -> tuple[np.ndarray, np.ndarray]:
    """(68, 2) pixel displacement of every landmark at full opening, and at full spread."""
    mw = L.mouth_width(lm)
    drop = cfg.max_open * mw
    opened = np.zeros((68, 2), np.float32)
    lower = [55, 56, 57, 58, 59, 65, 66, 67]
    upper = [49, 50, 51, 52, 53, 61, 62, 63]
    opened[lower, 1] = (1 - cfg.upper_lift) * drop
    opened[upper, 1] = -cfg.upper_lift * drop
    opened[[48, 54, 60, 64], 1] = 0.3 * drop
    chin = cfg.jaw_follow * (1 - cfg.upper_lift) * drop
    for idx, share in {(7, 8, 9): 1.0, (6, 10): 0.75, (5, 11): 0.45, (4, 12): 0.2}.items():
        opened[list(idx), 1] = share * chin
    spread = np.zeros((68, 2), np.float32)
    spread[[48, 60], 0], spread[[54, 64], 0] = -cfg.spread * mw, cfg.spread * mw
    spread[[49, 59], 0], spread[[53, 55], 0] = -0.5 * cfg.spread * mw, 0.5 * cfg.spread * mw
    return opened, spread


class WarpRig:
    """One avatar's precomputed mouth warp; `render(opening, spread)` gives a frame."""

    MOVING = (*range(3, 14), *range(48, 68))  # jaw and lips: the control points that move
    ANCHORS = (2, 14, 29, 30, 31, 32, 33, 34, 35)  # jaw sides and nose: held still

    def __init__(self, portrait: np.ndarray, lm: np.ndarray, cfg: WarpConfig | None = None):
        self.cfg = cfg = cfg or WarpConfig()
        self.portrait = portrait
        self.lm = lm.astype(np.float32)
        opened, spread = displacements(self.lm, cfg)
        self.box = L.mouth_box(self.lm, portrait.shape, open_room=cfg.max_open * cfg.jaw_follow)
        x1, y1, x2, y2 = self.box
        if x2 - x1 < 8 or y2 - y1 < 8:
            raise L.LandmarkError("landmarks give a mouth region too small to animate")
        self.disp = {"open": opened, "spread": spread}
        self.fields = self._fields(opened, spread)
        gx, gy = np.meshgrid(np.arange(x1, x2, dtype=np.float32), np.arange(y1, y2, dtype=np.float32))
        self.grid = np.stack([gx, gy], -1)  # (h, w, 2) absolute pixel coordinates
        self.roi = portrait[y1:y2, x1:x2]
        self.lip_colour = self._lip_colour()

    def _fields(self, opened: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """(2, h, w, 2) displacement fields over the box, tapered to exactly 0 at its border."""
        x1, y1, x2, y2 = self.box
        h, w = y2 - y1, x2 - x1
        border = np.concatenate([
            np.stack([np.linspace(x1, x2, 9), np.full(9, y1)], 1),
            np.stack([np.linspace(x1, x2, 9), np.full(9, y2)], 1),
            np.stack([np.full(7, x1), np.linspace(y1, y2, 9)[1:-1]], 1),
            np.stack([np.full(7, x2), np.linspace(y1, y2, 9)[1:-1]], 1)])
        pts = np.concatenate([self.lm[list(self.MOVING)], self.lm[list(self.ANCHORS)], border])
        scale = L.mouth_width(self.lm)
        gx, gy = np.meshgrid(np.arange(x1, x2), np.arange(y1, y2))
        query = (np.stack([gx.ravel(), gy.ravel()], 1) - (x1, y1)) / scale
        src = (pts - (x1, y1)) / scale
        zeros = np.zeros((len(self.ANCHORS) + len(border), 2))
        out = []
        for disp in (opened, spread):
            vals = np.concatenate([disp[list(self.MOVING)], zeros])
            out.append(_tps(src, vals, query).reshape(h, w, 2))
        # taper to 0 over the outer 20 % so the region's edge is seamless and exact
        ty = np.minimum(np.arange(h), np.arange(h)[::-1]) / max(1.0, 0.2 * h)
        tx = np.minimum(np.arange(w), np.arange(w)[::-1]) / max(1.0, 0.2 * w)
        taper = np.clip(ty[:, None], 0, 1) * np.clip(tx[None, :], 0, 1)
        taper = taper * taper * (3 - 2 * taper)  # smoothstep
        return (np.stack(out) * taper[None, :, :, None]).astype(np.float32)

    def _lip_colour(self) -> np.ndarray:
        mask = np.zeros(self.portrait.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(self.lm[L.OUTER_LIPS]).astype(np.int32)], 1)
        cv2.fillPoly(mask, [np.round(self.lm[L.INNER_LIPS]).astype(np.int32)], 0)
        pix = self.portrait[mask.astype(bool)]
        return pix.mean(0) if len(pix) else np.array([150.0, 80.0, 80.0])

    def landmarks_at(self, opening: float, spread: float) -> np.ndarray:
        return self.lm + opening * self.disp["open"] + spread * opening * self.disp["spread"]

    def render_region(self, opening: float, spread: float = 0.0) -> np.ndarray:
        """(h, w, 3) uint8 RGB of the mouth region for one frame."""
        opening = float(np.clip(opening, 0.0, 1.0))
        spread = float(np.clip(spread, -1.0, 1.0))
        if opening <= 1e-4:
            return self.roi.copy()
        d = opening * self.fields[0] + (spread * opening) * self.fields[1]
        src = self.grid - d
        out = cv2.remap(self.portrait, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._cavity(out, self.landmarks_at(opening, spread), opening)
        return out

    def _cavity(self, region: np.ndarray, lm: np.ndarray, opening: float) -> None:
        """Dark mouth interior (and upper teeth) between the inner lips, anti-aliased."""
        x1, y1 = self.box[:2]
        shift = 4  # sub-pixel polygon coordinates for fillPoly
        inner = lm[L.INNER_LIPS] - (x1, y1)
        alpha = float(np.clip((opening - 0.02) / 0.15, 0.0, 1.0))
        mask = np.zeros(region.shape[:2], np.float32)
        cv2.fillPoly(mask, [np.round(inner * (1 << shift)).astype(np.int32)], 1.0, cv2.LINE_AA, shift)
        colour = np.empty_like(region, dtype=np.float32)
        colour[:] = self.lip_colour * 0.22
        if self.cfg.teeth:
            gap = float(np.mean(lm[L.INNER_LOWER, 1] - lm[L.INNER_UPPER, 1]))
            upper = inner[[0, 1, 2, 3, 4]]  # corner, upper inner lip, corner
            band = np.concatenate([upper, upper[::-1] + np.array([0.0, 0.28 * gap])])
            teeth = np.zeros_like(mask)
            cv2.fillPoly(teeth, [np.round(band * (1 << shift)).astype(np.int32)], 1.0, cv2.LINE_AA, shift)
            t = (teeth * 0.9)[..., None]
            colour = colour * (1 - t) + np.array([236.0, 230.0, 218.0]) * t
        a = (cv2.GaussianBlur(mask, (3, 3), 0) * alpha)[..., None]
        region[:] = np.clip(region * (1 - a) + colour * a, 0, 255).astype(np.uint8)

    def render(self, opening: float, spread: float = 0.0) -> np.ndarray:
        """(H, W, 3) uint8 RGB portrait with this frame's mouth; outside `box` it is the portrait."""
        frame = self.portrait.copy()
        x1, y1, x2, y2 = self.box
        frame[y1:y2, x1:x2] = self.render_region(opening, spread)
        return frame

    def animate(self, shapes: np.ndarray) -> np.ndarray:
        """(n, 2) mouth shapes → (n, H, W, 3) uint8 frames."""
        frames = np.broadcast_to(self.portrait, (len(shapes), *self.portrait.shape)).copy()
        x1, y1, x2, y2 = self.box
        for i, (o, s) in enumerate(shapes):
            frames[i, y1:y2, x1:x2] = self.render_region(float(o), float(s))
        return frames
