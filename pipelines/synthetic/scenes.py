"""Drawn scenes a model can learn from: coloured shapes, sometimes a word, with ground truth.

Each scene is a pure function of (seed, index): its objects with boxes, its rendered text, a
clean description (what a good teacher would say) and a noisy LAION-style alt-text.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (140, 60, 170), "orange": (245, 140, 30), "black": (20, 20, 20),
    "white": (245, 245, 245),
}  # fmt: skip
BACKGROUNDS = ("white", "black", "blue", "yellow", "green")
SHAPES = ("circle", "square", "triangle")
WORDS = ("SALE", "OPEN", "EVIP", "HELLO", "STOP", "CAFE", "2024", "MONO")
_FILLERS = ("stock photo", "image", "picture of", "hd wallpaper", "free download", "best", "new")
_CREDITS = ("photo by John Smith", "© Getty Images", "Shutterstock ID 123456", "credit: AP Photo")
_UNRELATED = ("cheap flights to paris", "click here for more", "IMG_2041.JPG", "untitled")


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape: its kind, colour name and pixel box (x0, y0, x1, y1)."""

    shape: str
    colour: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    """Everything about one synthetic image; the picture itself comes from `render_jpeg`."""

    index: int
    width: int
    height: int
    background: str
    objects: tuple[SceneObject, ...]
    text: str | None
    text_box: tuple[int, int, int, int] | None
    description: str
    alt_text: str


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"evip-scene-{seed}-{index}")


def _describe(objects: tuple[SceneObject, ...], background: str, text: str | None) -> str:
    parts = [f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.colour} {o.shape}" for o in objects]
    things = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    sentence = f"{things[0].upper()}{things[1:]} on a {background} background"
    return sentence + (f', with the word "{text}" written on it.' if text else ".")


def _noisy(description: str, rng: random.Random) -> str:
    """LAION-like noise: filler, wrong casing, credits, and sometimes nothing related at all."""
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(_UNRELATED)
    words = description.rstrip(".").split()
    keep = sorted(rng.sample(range(len(words)), k=max(2, int(len(words) * rng.uniform(0.4, 0.9)))))
    text = " ".join(words[i] for i in keep)  # words dropped, the rest in order
    if rng.random() < 0.5:
        text = f"{rng.choice(_FILLERS)} {text}"
    if rng.random() < 0.4:
        text = f"{text} - {rng.choice(_CREDITS)}"
    casing = rng.random()
    return text.upper() if casing < 0.2 else text.lower() if casing < 0.6 else text.title()


def make_scene(seed: int, index: int, min_side: int = 160, max_side: int = 640) -> Scene:
    """The scene at `index` of the synthetic web with this `seed` (deterministic)."""
    rng = _rng(seed, index)
    width, height = rng.randint(min_side, max_side), rng.randint(min_side, max_side)
    background = rng.choice(BACKGROUNDS)
    objects = []
    for _ in range(rng.randint(1, 3)):
        side = rng.randint(min(width, height) // 5, min(width, height) // 2)
        x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
        colour = rng.choice([c for c in COLOURS if c != background])
        objects.append(SceneObject(rng.choice(SHAPES), colour, (x0, y0, x0 + side, y0 + side)))
    text = rng.choice(WORDS) if rng.random() < 0.35 else None
    text_box = None
    if text:
        x, y = width // 10, height // 10
        left, top, right, bottom = _font(height).getbbox(text)
        text_box = (x + left, y + top, x + right, y + bottom)
    objects = tuple(objects)
    description = _describe(objects, background, text)
    alt_text = _noisy(description, rng)
    return Scene(index, width, height, background, objects, text, text_box, description, alt_text)


def _font(height: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(16, height // 8))


def render(scene: Scene) -> Image.Image:
    """Draws the scene."""
    image = Image.new("RGB", (scene.width, scene.height), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = COLOURS[obj.colour]
        x0, y0, x1, y1 = obj.box
        if obj.shape == "circle":
            draw.ellipse(obj.box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(obj.box, fill=fill)
        else:
            draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=fill)
    if scene.text:
        ink = "black" if scene.background in ("white", "yellow") else "white"
        position = (scene.width // 10, scene.height // 10)
        draw.text(position, scene.text, font=_font(scene.height), fill=ink)
    return image


def render_jpeg(scene: Scene, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    render(scene).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
