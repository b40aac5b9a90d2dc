"""The procedural mouth's settings: pydantic only, so the recipe and the served models' contract
(talkserve.spec) load it without OpenCV or dlib."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WarpConfig(BaseModel):
    """How far and how the procedural mouth moves; distances in mouth widths."""

    model_config = ConfigDict(extra="forbid")

    max_open: float = Field(0.34, gt=0, le=0.8, description="Inner-lip gap at full opening, in mouth widths")
    jaw_follow: float = Field(0.8, ge=0, le=1.5, description="How far the chin drops per unit of lower-lip drop")
    upper_lift: float = Field(0.12, ge=0, le=0.5, description="Share of the opening taken by lifting the upper lip")
    spread: float = Field(0.07, ge=0, le=0.3, description="Lip-corner shift for spread (+) / rounded (-) vowels")
    range_db: float = Field(32.0, gt=6, description="Loudness range mapped to closed..open, below the loud frames")
    gamma: float = Field(0.9, gt=0, description="Curve from loudness to opening (<1 opens sooner)")
    gate_dbfs: float = Field(-55.0, description="Frames quieter than this (dBFS) are silent: mouth closed")
    teeth: bool = Field(True, description="Draw a band of upper teeth in the open mouth")
