"""The generated Korean test set: text rendered as screenshots and as photographed scenes,
mixed among photos without text, and the word queries made from the texts.

Screenshot-like images are text on a plain light or dark background, as a phone shows it
(glyphs 16 to 48 px, saved as PNG). Photo-like images put the text on a sign-like panel or
straight onto a textured, photo-like background (`benchkit.inputs.synthetic_photo`), then
turn it a few degrees, warp its perspective, blur it and save it as a noisy JPEG.
Text-free images are photo-like pictures and plain screens with no text. Everything is
seeded: one seed, one test set.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchkit.inputs import synthetic_photo
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SCREENSHOT, PHOTO, NO_TEXT = "screenshot", "photo", "no-text"
KINDS = (SCREENSHOT, PHOTO, NO_TEXT)
FONT_FOLDERS = ("/usr/share/fonts/truetype/nanum", "/usr/share/fonts/opentype/nanum")
# The Nanum family's shapes (Debian fonts-nanum): gothic, serif, rounded and square faces.
FONT_FILES = (
    "NanumGothic.ttf",
    "NanumGothicBold.ttf",
    "NanumMyeongjo.ttf",
    "NanumBarunGothic.ttf",
    "NanumSquareR.ttf",
    "NanumSquareRoundB.ttf",
    "NanumPen.ttf",
)
SIZES_PX = (16, 20, 24, 32, 40, 48)
SCREEN_SIZE = (720, 1280)
PHOTO_SIZE = (1024, 768)

# What a Korean library holds as text, by where it is seen. Each image shows the lines of
# one group.
TEXTS = {
    "receipt": (
        "스타벅스 영수증 아메리카노 4,500원",
        "카페라떼 5,000원 합계 9,500원",
        "이마트 성수점 영수증 우유 2,980원",
        "카드 승인 번호 12345678",
        "편의점 삼각김밥 1,200원 생수 900원",
    ),
    "sign": (
        "서울역 2번 출구",
        "강남역 방면 지하철 2호선",
        "주차장 입구 24시간 영업",
        "화장실 남자 여자",
        "부산 해운대 해수욕장",
    ),
    "chat": (
        "카톡 왔어요 내일 만나요",
        "오늘 저녁 몇 시에 볼까",
        "사진 보내줘 고마워",
        "엄마 생일 선물 뭐 사지",
        "회의 자료 메일로 보냈습니다",
    ),
    "menu": (
        "김치찌개 8,000원 된장찌개 7,500원",
        "비빔밥 불고기 냉면 떡볶이",
        "오늘의 메뉴 치킨 맥주 세트",
        "커피 녹차 라떼 아이스티",
    ),
    "ticket": (
        "KTX 승차권 서울 부산 10월 3일",
        "좌석 5호차 12A 출발 09:30",
        "영화 관람권 CGV 용산 3관",
        "공연 입장권 올림픽공원 R석",
    ),
}


@dataclass(frozen=True)
class Sample:
    """One image of the test set and the text it shows ("" for a text-free one)."""

    path: Path
    kind: str  # SCREENSHOT, PHOTO or NO_TEXT
    text: str  # the lines shown, separated by "\n"
    font: str
    size_px: int


@dataclass(frozen=True)
class Query:
    """Words taken from one text, and the images whose text holds every one of them."""

    words: tuple[str, ...]
    kind: str  # "1-syllable" ... "4-syllable", or "pair" (two neighbouring words)
    relevant: frozenset[int]  # indexes of samples


def fonts() -> list[Path]:
    """The Nanum fonts installed here (at least one, or the test set cannot be made)."""
    found = [Path(d) / name for name in FONT_FILES for d in FONT_FOLDERS]
    present = [path for path in found if path.is_file()]
    if not present:
        raise FileNotFoundError(
            "no Korean font found: apt-get install fonts-nanum (looked in "
            + ", ".join(FONT_FOLDERS)
            + ")"
        )
    return present


def _lines(rng: random.Random) -> list[str]:
    group = TEXTS[rng.choice(sorted(TEXTS))]
    return rng.sample(group, rng.randint(1, min(3, len(group))))


def screenshot(lines: Sequence[str], font: ImageFont.FreeTypeFont, rng: random.Random):
    dark = rng.random() < 0.3
    background = (30, 30, 34) if dark else rng.choice([(255, 255, 255), (246, 246, 248)])
    ink = (235, 235, 235) if dark else (20, 20, 20)
    image = Image.new("RGB", SCREEN_SIZE, background)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, SCREEN_SIZE[0], 90), fill=rng.choice([(254, 229, 0), (60, 90, 200)]))
    top = rng.randint(140, 500)
    step = round(font.size * 1.6)
    for i, line in enumerate(lines):
        width = draw.textlength(line, font=font)
        left = rng.randint(24, max(24, int(SCREEN_SIZE[0] - width - 24)))
        draw.text((left, top + i * step), line, font=font, fill=ink)
    return image


def photo(lines: Sequence[str], font: ImageFont.FreeTypeFont, rng: random.Random, seed: int):
    image = synthetic_photo(PHOTO_SIZE, seed=seed)
    draw = ImageDraw.Draw(image)
    step = round(font.size * 1.6)
    width = max(draw.textlength(line, font=font) for line in lines)
    left = rng.randint(30, max(30, int(PHOTO_SIZE[0] - width - 60)))
    top = rng.randint(30, max(30, PHOTO_SIZE[1] - step * len(lines) - 60))
    if rng.random() < 0.6:  # a sign: a panel behind the text
        panel = rng.choice([(250, 250, 245), (20, 70, 150), (30, 120, 60), (245, 200, 30)])
        pad = font.size // 2
        box = (left - pad, top - pad, left + width + pad, top + step * len(lines) + pad)
        draw.rectangle(box, fill=panel)
        ink = (20, 20, 20) if sum(panel) > 500 else (250, 250, 250)
        stroke = 0
    else:  # painted or printed straight onto the scene, with an outline to stay legible
        ink = rng.choice([(255, 255, 255), (15, 15, 15)])
        stroke = 1
    outline = (0, 0, 0) if ink[0] > 128 else (255, 255, 255)
    for i, line in enumerate(lines):
        draw.text(
            (left, top + i * step),
            line,
            font=font,
            fill=ink,
            stroke_width=stroke,
            stroke_fill=outline,
        )
    image = image.rotate(
        rng.uniform(-8, 8), resample=Image.BICUBIC, expand=False, fillcolor=(128, 128, 128)
    )
    image = _perspective(image, rng)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def _perspective(image: Image.Image, rng: random.Random) -> Image.Image:
    """A camera not square to the surface: each corner moved by up to 6% of the side."""
    w, h = image.size
    jitter = [rng.uniform(-0.06, 0.06) for _ in range(8)]
    corners = [
        (w * jitter[0], h * jitter[1]),
        (w * jitter[2], h * (1 + jitter[3])),
        (w * (1 + jitter[4]), h * (1 + jitter[5])),
        (w * (1 + jitter[6]), h * jitter[7]),
    ]
    quad = [coordinate for corner in corners for coordinate in corner]
    return image.transform(
        image.size, Image.QUAD, quad, resample=Image.BICUBIC, fillcolor=(128, 128, 128)
    )


def text_free(index: int, rng: random.Random, seed: int) -> Image.Image:
    """Most text-free photos are photo-like; one in four is a plain screen with shapes."""
    if index % 4 != 3:
        return synthetic_photo(PHOTO_SIZE, seed=seed)
    image = Image.new("RGB", SCREEN_SIZE, (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, 600), rng.randint(0, 1150)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.rounded_rectangle(
            (x, y, x + rng.randint(40, 300), y + rng.randint(30, 120)), 12, fill=colour
        )
    return image


def write_test_set(folder: Path, text_photos: int, text_free_photos: int, seed: int):
    """Half the text images screenshot-like, half photo-like, then the text-free ones;
    every font and size taken in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    faces = fonts()
    samples = []
    for i in range(text_photos):
        kind = SCREENSHOT if i % 2 == 0 else PHOTO
        face, size = faces[i % len(faces)], SIZES_PX[(i // 2) % len(SIZES_PX)]
        font = ImageFont.truetype(str(face), size)
        lines = _lines(rng)
        if kind == SCREENSHOT:
            path = folder / f"{i:03d}-{kind}.png"
            screenshot(lines, font, rng).save(path)
        else:
            path = folder / f"{i:03d}-{kind}.jpg"
            photo(lines, font, rng, seed * 10_000 + i).save(path, quality=rng.randint(50, 80))
        samples.append(Sample(path, kind, "\n".join(lines), face.stem, size))
    for j in range(text_free_photos):
        path = folder / f"{text_photos + j:03d}-{NO_TEXT}.jpg"
        text_free(j, rng, seed * 10_000 + 5_000 + j).save(path, quality=85)
        samples.append(Sample(path, NO_TEXT, "", "", 0))
    return samples


HANGUL_SYLLABLE = re.compile(r"[가-힣]")


def words_of(text: str) -> list[str]:
    """The text's words, punctuation at their ends left off."""
    return [w.strip(".,:;!?()") for w in text.split() if w.strip(".,:;!?()")]


def syllable_kind(word: str) -> str | None:
    """ "2-syllable" for a word of two Hangul syllables and nothing else; None otherwise."""
    if HANGUL_SYLLABLE.fullmatch(word[:1] or "x") and all(HANGUL_SYLLABLE.match(c) for c in word):
        return f"{len(word)}-syllable" if len(word) <= 4 else None
    return None


def make_queries(samples: Sequence[Sample]) -> list[Query]:
    """Every distinct Hangul word of one to four syllables, and every pair of neighbouring
    words, from the texts; each with the images whose text holds all its words."""
    found: dict[tuple[str, ...], str] = {}
    for sample in samples:
        for line in sample.text.splitlines():
            words = words_of(line)
            for word in words:
                kind = syllable_kind(word)
                if kind is not None:
                    found.setdefault((word,), kind)
            for pair in zip(words, words[1:], strict=False):
                found.setdefault(pair, "pair")
    queries = []
    for words, kind in sorted(found.items()):
        relevant = frozenset(
            i for i, s in enumerate(samples) if all(w in s.text.replace("\n", " ") for w in words)
        )
        queries.append(Query(words, kind, relevant))
    return queries
