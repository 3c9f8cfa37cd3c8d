"""ScanStack: one constant-height AFM stack, closest tip-sample distance first."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from raypipe.errors import ScanError


@dataclass
class ScanStack:
    """Images (n, H, W) float32 ordered closest tip-sample distance first.

    ``heights``: relative tip heights in Å (same order, increasing) where known, else None.
    ``metadata``: ``source`` (path), ``format``, ``fov`` ((width, height) in Å or None), ``mode``
    ("FM df", "AM amplitude", "AM phase" or "unknown"), ``amplitude`` (Å), ``stiffness`` (N/m) and what
    the reader did (``order_rule``, ``size_adjust``...). ``scan_id`` is stable: the reader's name for
    the stack plus a hash of the image values.
    """

    images: np.ndarray
    heights: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    scan_id: str = ""

    def __post_init__(self) -> None:
        source = self.metadata.get("source", "<memory>")
        images = np.asarray(self.images)
        if images.ndim != 3:
            raise ScanError(source, f"a stack needs 3 dimensions (n, H, W), got shape {images.shape}")
        if images.shape[0] < 2:
            raise ScanError(source, f"a stack needs at least 2 images, got {images.shape[0]}")
        if min(images.shape[1:]) < 8:
            raise ScanError(source, f"images of {images.shape[1]}x{images.shape[2]} pixels are too small")
        if not np.isfinite(images).all():
            raise ScanError(source, "images contain NaN or infinite values")
        self.images = images.astype(np.float32, copy=False)
        if self.heights is not None:
            self.heights = np.asarray(self.heights, dtype=np.float64)
            if self.heights.shape != (images.shape[0],) or not np.isfinite(self.heights).all():
                raise ScanError(source, f"heights {self.heights.tolist()} do not fit {images.shape[0]} images")
        self.metadata.setdefault("source", source)
        if not self.scan_id:
            digest = hashlib.sha1(np.ascontiguousarray(self.images).tobytes()).hexdigest()[:12]
            name = self.metadata.get("name", "scan")
            self.scan_id = f"{name}-{digest}"

    @property
    def n(self) -> int:
        return int(self.images.shape[0])
