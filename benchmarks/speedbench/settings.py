"""How big each measurement of `speed.py` is, and the sentences it embeds."""

from __future__ import annotations

from dataclasses import dataclass

SEED_PHOTO_SIZE = (640, 480)  # the few real rows of the search library
SEED_PHOTOS = 4
MODEL_BATCHES = 3  # timed ViT forwards for the ceiling, after one warm-up
HNSW_DIM = 512
HNSW_K = 10
# Within-cluster spread of the clustered vectors: a point's cosine to its centre is ~0.7 and
# to another point of its cluster ~0.5; a guess at CLIP photos of one topic, not a measurement.
CLUSTER_SPREAD = 1.0
DRAFT_PHOTOS = 8  # photos embedded twice (draft and full decode) for the image-path cosine
HEAD_ROWS = 256  # random raw embeddings run through the numpy and the torch heads
GB = 1024**3

# Korean, English and mixed sentences; one NFD, one far beyond max_seq_length (truncation).
SENTENCES = (
    "바다 위 노을",
    "누워있는 고양이",
    "공원에서 뛰는 강아지와 아이들",
    "눈 덮인 산 사진",
    "서울의 밤거리 야경",
    "해변에서 뛰어노는 아이들",
    "창가에 앉아 있는 고양이",
    "비 오는 날의 우산",
    "벚꽃이 핀 봄날의 공원",
    "가을 단풍이 물든 산길",
    "생일 케이크와 촛불",
    "기차역 플랫폼에 서 있는 사람들",
    "자전거를 타는 남자",
    "부엌에서 요리하는 할머니",
    "하늘을 나는 비행기",
    "강아지가 공을 물고 있다",
    "결혼식에서 찍은 가족 사진",
    "눈사람을 만드는 아이",
    "밤하늘의 별과 은하수",
    "제주도 바닷가의 돌담",
    "카페 테이블 위의 커피 한 잔",
    "축구 경기를 하는 학생들",
    "오래된 한옥 마을",
    "무지개가 뜬 들판",
    "호수에 비친 산 그림자",
    "시장에서 과일을 파는 상인",
    "a cat sleeping on the sofa by the window",
    "a dog running on the beach at sunset",
    "children playing in the snow",
    "a bowl of bibimbap on a wooden table",
    "city lights at night from a rooftop",
    "an old man reading a newspaper on a bench",
    "two people riding bicycles along the river",
    "a red car parked in front of a house",
    "mountains covered with snow under a blue sky",
    "a birthday party with balloons",
    "fireworks over the harbour",
    "a baby sleeping in a crib",
    "a train crossing a bridge",
    "  Sunset over the SEA, 2023!  ",
    "서울 야경 city lights at night",
    "우리 강아지 Max의 첫 생일 party",
    "제주 Jeju island 여행 2019",
    "고양이 cat 🐱",
    "KTX 열차 안에서",
    "N서울타워",
    "짜장면과 탕수육",
    "1998년 여름 가족 여행",
    "\u1107\u1161\u1103\u1161 \u110b\u1171 \u1102\u1169\u110b\u1173\u11af",  # 바다 위 노을, NFD
    " ".join(["해변에서 본 바다 노을 a beach at sunset"] * 120),
)


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is."""

    photos: int  # 12-MP JPEGs for index throughput
    library: int  # photos in the search library
    hnsw_vectors: int
    hnsw_queries: int
    hnsw_clusters: int
    runs: int  # cold-process repetitions of each timed command


FULL = Sizes(
    photos=96,  # three batches of 32: the steady state is measured too
    library=10_000,
    hnsw_vectors=100_000,
    hnsw_queries=1_000,
    hnsw_clusters=1_000,
    runs=3,
)
QUICK = Sizes(
    photos=4, library=1_000, hnsw_vectors=5_000, hnsw_queries=200, hnsw_clusters=50, runs=1
)
