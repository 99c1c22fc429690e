"""Draws the bundled sample images: simple seeded face-like pictures, 256x256 RGB PNG.

They exist so the sample job has real image files to read; regenerate with
``python samples/make_faces.py`` (the output is deterministic).
"""

from pathlib import Path
import random

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
COUNT = 6


def draw_face(seed: int) -> Image.Image:
    rng = random.Random(seed)
    background = tuple(rng.randrange(40, 220) for _ in range(3))
    skin = rng.choice([(241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)])
    hair = rng.choice([(20, 20, 20), (90, 56, 37), (181, 137, 76), (200, 200, 200), (120, 40, 20)])
    img = Image.new("RGB", (SIZE, SIZE), background)
    d = ImageDraw.Draw(img)
    cx, cy = 128 + rng.randint(-6, 6), 136 + rng.randint(-6, 6)
    w, h = rng.randint(70, 84), rng.randint(92, 104)
    d.ellipse([cx - w - 6, cy - h - 14, cx + w + 6, cy + h // 3], fill=hair)  # hair behind the head
    d.rectangle([cx - 28, cy + h - 20, cx + 28, SIZE], fill=skin)  # neck
    d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    eye_y, eye_dx = cy - h // 5, rng.randint(26, 34)
    iris = rng.choice([(60, 90, 160), (70, 50, 30), (60, 120, 70)])
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        d.ellipse([ex - 13, eye_y - 7, ex + 13, eye_y + 7], fill=(250, 250, 250))
        d.ellipse([ex - 6, eye_y - 6, ex + 6, eye_y + 6], fill=iris)
        d.line([ex - 14, eye_y - 16, ex + 14, eye_y - 18 + rng.randint(-2, 2)], fill=hair, width=4)
    d.polygon([(cx, eye_y + 10), (cx - 9, cy + 22), (cx + 9, cy + 22)], fill=tuple(max(0, c - 30) for c in skin))
    mouth_y, mouth_w = cy + h // 2, rng.randint(18, 30)
    smile = rng.randint(-4, 12)
    d.chord([cx - mouth_w, mouth_y - 10, cx + mouth_w, mouth_y + 6 + smile], 0, 180, fill=(170, 60, 70))
    return img.filter(ImageFilter.GaussianBlur(1.2))


def main() -> None:
    out = Path(__file__).resolve().parent / "faces"
    out.mkdir(exist_ok=True)
    for i in range(COUNT):
        draw_face(i).save(out / f"face_{i:02d}.png", optimize=True)


if __name__ == "__main__":
    main()
