"""Drawing for generated datasets: a class *look* (shape, colour, texture) rendered at a random pose on a noisy scene.

Every generated image is a pure function of its inputs: a :class:`Look` and a ``numpy.random.Generator`` seeded from
``(seed, dataset, split, index)``. Drawing uses PIL only and JPEGs are saved with fixed settings, so the same seed
gives the same bytes on any machine with the same Pillow/libjpeg.

Signal design: the shape carries most of the class information, the hue is shared by pairs of classes (colour alone is
ambiguous), the texture inside the shape adds a third cue. Pose, scale, background, clutter and pixel noise are random,
so a network has to learn the shape to do well -- a random network's features are clearly worse than a trained one's.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon", "diamond", "ring")
TEXTURES = ("plain", "stripes", "dots", "checker")
HUES = (0.0, 0.60, 0.33, 0.13, 0.80, 0.48)  # red, blue, green, orange, purple, cyan
JPEG_KW = {"format": "JPEG", "quality": 90, "subsampling": 0, "optimize": False, "progressive": False}


@dataclass(frozen=True)
class Look:
    shape: str
    hue: float
    texture: str
    stripe_angle: float = 0.0


def family_look(position: int) -> Look:
    """The look of the ``position``-th wnid of the shared ImageNet-R ∩ ImageNet-A list (same in every generated set)."""
    p = int(position)
    return Look(SHAPES[p % 8], HUES[(p // 2) % 6], TEXTURES[(p // 3) % 4], stripe_angle=(p * 37) % 180)


def voc_look(q: int) -> Look:
    """VOC class ``q`` (0..19): 5 shapes x 4 hues, all distinct; a texture as an extra cue."""
    shapes = ("circle", "square", "triangle", "star", "cross")
    hues = (0.02, 0.58, 0.30, 0.12)
    return Look(shapes[q % 5], hues[q // 5], TEXTURES[(q * 3) % 4], stripe_angle=(q * 29) % 180)


def coco_look(c: int) -> Look:
    shapes = ("triangle", "square", "hexagon", "star", "diamond")
    return Look(shapes[c % len(shapes)], HUES[c % len(HUES)], "plain")


@dataclass(frozen=True)
class SceneLook:
    """Places-style class: sky/ground colours, the horizon height, a texture over the ground, a landmark shape."""

    top_hue: float
    bottom_hue: float
    horizon: float
    texture: str
    landmark: str


def places_look(c: int) -> SceneLook:
    """Scene class ``c`` (0..204): a mixed-radix code, so all 205 looks differ (8 x 5 x 6 > 205)."""
    top = c % 8
    bottom = (c // 8) % 5
    tex = (c // 40) % 6
    textures = ("plain", "stripes", "dots", "checker", "waves", "grid")
    return SceneLook(top_hue=top / 8.0, bottom_hue=(top / 8.0 + 0.15 + bottom * 0.17) % 1.0, horizon=0.3 + 0.1 * (bottom % 4),
                     texture=textures[tex], landmark=SHAPES[(c * 5) % 8])


def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a filled polygonal shape (used for drawing and as COCO segmentation)."""
    def ring_pts(n: int, rad: float, off: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + rad * math.cos(angle + off + 2 * math.pi * k / n), cy + rad * math.sin(angle + off + 2 * math.pi * k / n))
                for k in range(n)]

    if shape in ("circle", "ring"):
        return ring_pts(24, r)
    if shape == "square":
        return ring_pts(4, r, math.pi / 4)
    if shape == "triangle":
        return ring_pts(3, r, -math.pi / 2)
    if shape == "diamond":
        pts = ring_pts(4, r)
        f = [1.0, 0.6, 1.0, 0.6]
        return [(cx + (x - cx) * f[k], cy + (y - cy) * f[k]) for k, (x, y) in enumerate(pts)]
    if shape == "hexagon":
        return ring_pts(6, r)
    if shape == "star":
        outer, inner = ring_pts(5, r, -math.pi / 2), ring_pts(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        w = r * 0.38
        base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in base]
    raise ValueError(f"unknown shape {shape}")


def _texture(size: tuple[int, int], texture: str, base: tuple[int, int, int], angle_deg: float, period: int,
             dark: float = 0.55) -> Image.Image:
    """An RGB image of ``size`` filled with ``base`` and a darker pattern."""
    w, h = size
    img = Image.new("RGB", size, base)
    if texture == "plain":
        return img
    shade = tuple(int(c * dark) for c in base)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if texture in ("stripes", "waves"):
        a = math.radians(angle_deg)
        u = xx * math.cos(a) + yy * math.sin(a)
        if texture == "waves":
            u = u + period * 0.5 * np.sin(2 * math.pi * (-xx * math.sin(a) + yy * math.cos(a)) / (2.5 * period))
        mask = (np.floor(u / (period / 2)) % 2) == 0
    elif texture == "dots":
        mask = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 < (period / 3.2) ** 2
    elif texture == "checker":
        mask = ((np.floor(xx / period) + np.floor(yy / period)) % 2) == 0
    elif texture == "grid":
        mask = ((xx % period) < max(1, period // 4)) | ((yy % period) < max(1, period // 4))
    else:
        raise ValueError(f"unknown texture {texture}")
    arr = np.asarray(img).copy()
    arr[mask] = shade
    return Image.fromarray(arr)


def draw_object(img: Image.Image, look: Look, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator,
                outline_only: bool = False, sat: float | None = None, val: float | None = None) -> list[tuple[float, float]]:
    """Draw ``look`` centred at (cx, cy) with radius r; returns the polygon drawn (for masks/boxes)."""
    poly = shape_polygon(look.shape, cx, cy, r, angle)
    hue = look.hue + rng.uniform(-0.025, 0.025)
    colour = rgb(hue, sat if sat is not None else rng.uniform(0.65, 1.0), val if val is not None else rng.uniform(0.65, 1.0))
    draw = ImageDraw.Draw(img)
    if outline_only:
        width = max(1, int(round(r * 0.16)))
        draw.line(poly + [poly[0]], fill=colour, width=width, joint="curve")
        return poly
    mask = Image.new("L", img.size, 0)
    mdraw = ImageDraw.Draw(mask)
    mdraw.polygon(poly, fill=255)
    if look.shape == "ring":
        inner = shape_polygon("circle", cx, cy, r * 0.5, angle)
        mdraw.polygon(inner, fill=0)
    period = max(4, int(round(r * 0.45)))
    tex = _texture(img.size, look.texture, colour, look.stripe_angle, period)
    img.paste(tex, (0, 0), mask)
    return poly


def background(size: tuple[int, int], rng: np.random.Generator, clutter: int = 3, dark: bool = False,
               paper: bool = False) -> Image.Image:
    """A low-saturation gradient with a few random blobs (class-independent)."""
    w, h = size
    if paper:
        base = np.array(rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.08), rng.uniform(0.85, 1.0)), np.float32)
        arr = np.broadcast_to(base, (h, w, 3)).copy()
    else:
        v0, v1 = (0.15, 0.45) if dark else (0.35, 0.85)
        c0 = np.array(rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(v0, v1)), np.float32)
        c1 = np.array(rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(v0, v1)), np.float32)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        arr = (c0 * (1 - t) + c1 * t) * np.ones((1, w, 1), np.float32)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(clutter):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        rr = rng.uniform(0.04, 0.12) * min(w, h)
        col = rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.9))
        if rng.random() < 0.5:
            draw.ellipse([x - rr, y - rr * rng.uniform(0.4, 1.0), x + rr, y + rr], fill=col)
        else:
            draw.line([(x, y), (x + rng.uniform(-2, 2) * rr, y + rng.uniform(-2, 2) * rr)], fill=col, width=max(1, int(rr / 3)))
    return img


def add_noise(img: Image.Image, rng: np.random.Generator, std: float = 8.0) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, std, size=(img.size[1], img.size[0], 3)).astype(np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def object_image(look: Look, size: int, rng: np.random.Generator, style: str = "photo") -> Image.Image:
    """One object of ``look`` on a random scene. ``style``: ``photo`` | ``rendition`` (outline/cartoon on paper, for
    ImageNet-R) | ``adversarial`` (small, dark, cluttered, with a distractor, for ImageNet-A)."""
    w = h = int(size)
    if style == "rendition":
        img = background((w, h), rng, clutter=0, paper=True)
        scale = rng.uniform(0.25, 0.42)
    elif style == "adversarial":
        img = background((w, h), rng, clutter=7, dark=True)
        scale = rng.uniform(0.16, 0.26)
    else:
        img = background((w, h), rng, clutter=int(rng.integers(1, 4)))
        scale = rng.uniform(0.22, 0.40)
    r = scale * size
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    angle = rng.uniform(0, 2 * math.pi)
    if style == "adversarial":  # a distractor object with random shape and hue, smaller
        dl = Look(SHAPES[int(rng.integers(0, 8))], float(rng.uniform(0, 1)), "plain")
        dr = r * rng.uniform(0.5, 0.8)
        draw_object(img, dl, rng.uniform(dr, w - dr), rng.uniform(dr, h - dr), dr, rng.uniform(0, 6.3), rng, sat=0.5, val=0.5)
    if style == "rendition":
        draw_object(img, look, cx, cy, r, angle, rng, outline_only=rng.random() < 0.6, sat=rng.uniform(0.7, 1.0), val=0.8)
    else:
        draw_object(img, look, cx, cy, r, angle, rng, val=rng.uniform(0.45, 0.7) if style == "adversarial" else None)
    return add_noise(img, rng, 10.0 if style == "adversarial" else 6.0)


def ood_image(size: int, rng: np.random.Generator) -> Image.Image:
    """Out-of-distribution image for WebVision: random scribbles and a scene texture, no class shape."""
    w = h = int(size)
    top = places_look(int(rng.integers(0, 205)))
    img = scene_image(top, size, rng, landmark=False)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(int(rng.integers(3, 6)))]
        draw.line(pts, fill=rgb(rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.3, 1.0)), width=int(rng.integers(1, 4)))
    return add_noise(img, rng, 6.0)


def scene_image(look: SceneLook, size: int, rng: np.random.Generator, landmark: bool = True) -> Image.Image:
    """A Places-style scene: two-tone sky/ground split at a jittered horizon, textured ground, an optional landmark."""
    w = h = int(size)
    hz = int(round(h * min(max(look.horizon + rng.uniform(-0.06, 0.06), 0.15), 0.85)))
    top = rgb(look.top_hue + rng.uniform(-0.02, 0.02), rng.uniform(0.35, 0.8), rng.uniform(0.6, 0.95))
    bottom = rgb(look.bottom_hue + rng.uniform(-0.02, 0.02), rng.uniform(0.45, 0.9), rng.uniform(0.4, 0.85))
    img = Image.new("RGB", (w, h), top)
    period = max(4, int(round(size * rng.uniform(0.10, 0.16))))
    ground = _texture((w, h - hz), look.texture, bottom, angle_deg=float(rng.uniform(-20, 20)), period=period, dark=0.7)
    img.paste(ground, (0, hz))
    if landmark:
        r = size * rng.uniform(0.08, 0.14)
        draw_object(img, Look(look.landmark, (look.top_hue + 0.5) % 1.0, "plain"), rng.uniform(r, w - r),
                    max(r, hz - r * rng.uniform(0.2, 1.0)), r, rng.uniform(0, 6.3), rng, sat=0.6, val=0.5)
        img = add_noise(img, rng, 6.0)
    return img


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **JPEG_KW)
    return buf.getvalue()


def image_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """Independent generator for one image: a function of the seed and integer/string keys (order-independent)."""
    ints = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        if isinstance(k, str):
            ints.extend(k.encode("utf-8"))
            ints.append(0x5EED)
        else:
            ints.append(int(k) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(ints))
