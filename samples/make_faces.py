"""Draws the bundled sample inputs: simple seeded face-like pictures (``faces/``, 256x256 RGB PNG), and
for each the sketch (``sketches/``, black lines on white, greyscale) and the label map (``labels/``, one
class index per pixel) of the same drawing, the inputs of the two translation tasks.

They exist so the sample jobs have real image files to read; regenerate with
``python samples/make_faces.py`` (the output is deterministic).
"""

from dataclasses import dataclass
from pathlib import Path
import random

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
COUNT = 6

# Label map classes, numbered as in CelebAMask-HQ's list of 19 (0 is the background).
SKIN, NOSE, LEFT_EYE, RIGHT_EYE, LEFT_BROW, RIGHT_BROW, UPPER_LIP, LOWER_LIP, HAIR, NECK = 1, 2, 4, 5, 6, 7, 11, 12, 13, 17


@dataclass(frozen=True)
class Face:
    background: tuple
    skin: tuple
    hair: tuple
    iris: tuple
    cx: int
    cy: int
    w: int
    h: int
    eye_dx: int
    brow_tilts: tuple  # one per eye, left then right
    mouth_w: int
    smile: int

    @property
    def eye_y(self) -> int:
        return self.cy - self.h // 5

    @property
    def mouth_y(self) -> int:
        return self.cy + self.h // 2

    def hair_box(self) -> list:
        return [self.cx - self.w - 6, self.cy - self.h - 14, self.cx + self.w + 6, self.cy + self.h // 3]

    def neck_box(self) -> list:
        return [self.cx - 28, self.cy + self.h - 20, self.cx + 28, SIZE]

    def face_box(self) -> list:
        return [self.cx - self.w, self.cy - self.h, self.cx + self.w, self.cy + self.h]

    def eyes(self):
        """(x of the eye's centre, its brow's line) for the left, then the right eye."""
        for sx, tilt in zip((-1, 1), self.brow_tilts):
            ex = self.cx + sx * self.eye_dx
            yield ex, [ex - 14, self.eye_y - 16, ex + 14, self.eye_y - 18 + tilt]

    def nose(self) -> list:
        return [(self.cx, self.eye_y + 10), (self.cx - 9, self.cy + 22), (self.cx + 9, self.cy + 22)]

    def mouth_box(self) -> list:
        return [self.cx - self.mouth_w, self.mouth_y - 10, self.cx + self.mouth_w, self.mouth_y + 6 + self.smile]


def face(seed: int) -> Face:
    rng = random.Random(seed)
    background = tuple(rng.randrange(40, 220) for _ in range(3))
    skin = rng.choice([(241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)])
    hair = rng.choice([(20, 20, 20), (90, 56, 37), (181, 137, 76), (200, 200, 200), (120, 40, 20)])
    cx, cy = 128 + rng.randint(-6, 6), 136 + rng.randint(-6, 6)
    w, h = rng.randint(70, 84), rng.randint(92, 104)
    eye_dx = rng.randint(26, 34)
    iris = rng.choice([(60, 90, 160), (70, 50, 30), (60, 120, 70)])
    brow_tilts = (rng.randint(-2, 2), rng.randint(-2, 2))
    mouth_w = rng.randint(18, 30)
    smile = rng.randint(-4, 12)
    return Face(background, skin, hair, iris, cx, cy, w, h, eye_dx, brow_tilts, mouth_w, smile)


def draw_face(f: Face) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), f.background)
    d = ImageDraw.Draw(img)
    d.ellipse(f.hair_box(), fill=f.hair)  # hair behind the head
    d.rectangle(f.neck_box(), fill=f.skin)
    d.ellipse(f.face_box(), fill=f.skin)
    for ex, brow in f.eyes():
        d.ellipse([ex - 13, f.eye_y - 7, ex + 13, f.eye_y + 7], fill=(250, 250, 250))
        d.ellipse([ex - 6, f.eye_y - 6, ex + 6, f.eye_y + 6], fill=f.iris)
        d.line(brow, fill=f.hair, width=4)
    d.polygon(f.nose(), fill=tuple(max(0, c - 30) for c in f.skin))
    d.chord(f.mouth_box(), 0, 180, fill=(170, 60, 70))
    return img.filter(ImageFilter.GaussianBlur(1.2))


def draw_sketch(f: Face) -> Image.Image:
    img = Image.new("L", (SIZE, SIZE), 255)
    d = ImageDraw.Draw(img)
    d.arc(f.hair_box(), 180, 360, fill=0, width=3)
    d.line([f.cx - 28, f.cy + f.h - 6, f.cx - 28, SIZE], fill=0, width=2)
    d.line([f.cx + 28, f.cy + f.h - 6, f.cx + 28, SIZE], fill=0, width=2)
    d.ellipse(f.face_box(), outline=0, width=3)
    for ex, brow in f.eyes():
        d.ellipse([ex - 13, f.eye_y - 7, ex + 13, f.eye_y + 7], outline=0, width=2)
        d.ellipse([ex - 5, f.eye_y - 5, ex + 5, f.eye_y + 5], fill=0)
        d.line(brow, fill=0, width=3)
    d.line(f.nose()[1:] + [f.nose()[0]], fill=0, width=2)
    d.chord(f.mouth_box(), 0, 180, outline=0, width=2)
    return img


def draw_labels(f: Face) -> Image.Image:
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    d.ellipse(f.hair_box(), fill=HAIR)
    d.rectangle(f.neck_box(), fill=NECK)
    d.ellipse(f.face_box(), fill=SKIN)
    for (ex, brow), eye, brow_label in zip(f.eyes(), (LEFT_EYE, RIGHT_EYE), (LEFT_BROW, RIGHT_BROW)):
        d.ellipse([ex - 13, f.eye_y - 7, ex + 13, f.eye_y + 7], fill=eye)
        d.line(brow, fill=brow_label, width=4)
    d.polygon(f.nose(), fill=NOSE)
    d.chord(f.mouth_box(), 0, 180, fill=LOWER_LIP)
    top = f.mouth_y - 2
    d.line([f.cx - f.mouth_w + 2, top, f.cx + f.mouth_w - 2, top], fill=UPPER_LIP, width=4)
    return img


def main() -> None:
    root = Path(__file__).resolve().parent
    for folder, draw in (("faces", draw_face), ("sketches", draw_sketch), ("labels", draw_labels)):
        (root / folder).mkdir(exist_ok=True)
        for i in range(COUNT):
            draw(face(i)).save(root / folder / f"face_{i:02d}.png", optimize=True)


if __name__ == "__main__":
    main()
