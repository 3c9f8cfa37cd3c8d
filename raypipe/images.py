"""Image helpers for everything that draws (reports, evaluation sheets, the pipeline's input previews):
grey images of a stack's slices, the read-back graph as a diagram, scale bars, contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from raypipe.chem.elements import COLORS
from raypipe.window import DEFAULT_WINDOW, Window


def contact_sheet(tiles: list[tuple[str, str, np.ndarray]], scale: int = 2, columns: int = 4) -> Image.Image:
    """A grid of depictions, each captioned with its name and extracted formula."""
    size = tiles[0][2].shape[0] * scale
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * size, rows * (size + 24)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (name, formula, image) in enumerate(tiles):
        x, y = (k % columns) * size, (k // columns) * (size + 24)
        sheet.paste(Image.fromarray(image).resize((size, size), Image.NEAREST), (x, y))
        draw.text((x + 4, y + size + 2), f"{name[:22]}  {formula}", fill="black")
    return sheet


def grey(image: np.ndarray) -> np.ndarray:
    """A 2D array scaled to its own range as a grey (H, W) uint8 image."""
    image = image.astype(np.float32)
    return ((image - image.min()) / max(float(np.ptp(image)), 1e-9) * 255).astype(np.uint8)


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """A 2D array scaled to its own range as a grey (H, W, 3) uint8 image."""
    return np.repeat(grey(image)[..., None], 3, axis=2)


def draw_graph(atoms: list[dict], bonds: list[dict], window: Window | None = None, scale: int = 2) -> np.ndarray:
    """The read-back graph as a diagram: bonds as lines (double/triple drawn as such where perceived),
    atoms as discs in element colours, heteroatom labels placed where they overlap neither another
    label nor an atom."""
    window = window or DEFAULT_WINDOW
    size = window.size * scale
    image = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(image)
    xy = window.to_pixels(np.array([[a["x"], a["y"]] for a in atoms]).reshape(-1, 2)) * scale
    for b in bonds:
        (x0, y0), (x1, y1) = xy[b["i"]], xy[b["j"]]
        order = b.get("order") or 1.0
        width = 2 if order < 1.4 else 4 if order < 2.5 else 6
        draw.line([(x0, y0), (x1, y1)], fill=(200, 200, 200), width=width)
    radius = [3 * scale // 2 if a["element"] == "H" else 4 * scale for a in atoms]
    for a, (x, y), r in zip(atoms, xy, radius):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in COLORS[a["element"]]))
    taken = [(x - r, y - r, x + r, y + r) for (x, y), r in zip(xy, radius)]
    for a, (x, y), r in zip(atoms, xy, radius):
        if a["element"] in ("H", "C"):
            continue
        w, h = 7 * len(a["element"]) + 2, 12
        for dx, dy in ((r + 1, -h / 2), (-r - w - 1, -h / 2), (-w / 2, -r - h - 1), (-w / 2, r + 1),
                       (r, -r - h), (r, r), (-r - w, -r - h), (-r - w, r)):
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            if not any(overlap(box, other) for other in taken):
                break
        taken.append(box)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((box[0] + 1, box[1] - 1), a["element"], fill=(255, 255, 255), font=font(12))
    return np.asarray(image)


def font(size: int):
    """DejaVu Sans (shipped with matplotlib, which raypipe installs: it has the Å), else Pillow's default."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def with_scale_bar(image: np.ndarray, pixel: float, scale: int = 2, length: float = 5.0, note: str = "") -> np.ndarray:
    """``image`` (H, W, 3) enlarged ``scale`` times (nearest) with a ``length`` Å bar and its label at the
    bottom left; ``pixel``: Å per pixel of the original image; ``note``: what the scale is where it is not
    measured ("assumed", "estimated"), written beside the length."""
    big = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    bar = length / pixel * scale
    label = f"{length:g} Å" + (f" ({note})" if note else "")
    x0, y0 = 6, big.height - 10
    width = draw.textlength(label, font=font(13))
    draw.rectangle([x0 - 2, y0 - 17, x0 + max(bar, width) + 2, y0 + 5], fill=(0, 0, 0))
    draw.rectangle([x0, y0, x0 + bar, y0 + 3], fill=(255, 255, 255))
    draw.text((x0, y0 - 16), label, fill=(255, 255, 255), font=font(13))
    return np.asarray(big)
