"""Recipes: which public datasets on the Hugging Face hub fill the corpora HanCLIP trains from,
and what each one holds out.

The method needs three unpaired corpora: English captions (the pivot, encoded by both text
towers), captions in the target language (the K bank) and images (the V bank). A recipe names
a hub dataset for each (the images may be left to the user's own photos: `--images DIR` or
`--images-from-library`), with the files to fetch, the column that holds the text or the
image, the licence, the size and the pages that document it. Every detail comes from those
pages; a `note` says where one was not documented and is assumed.

Nothing a benchmark scores is trained on. Where a corpus draws on COCO, its rows carry the
COCO image id and every image of `COCO_EVALUATION` is dropped by that id: the COCO 2014
validation images (which `hanclip bench --dataset mscoco-ko` scores, split `karpathy-test` or
`val`) and XTD10's images. A row whose id cannot be read is dropped too, so a wrong guess
about a column leaves a corpus empty (an error), never unfiltered. Where a dataset ships its
evaluation split as separate files (KoCC3M's validation split), those files are simply not
fetched. `load_recipe` reads the corpora (`trainer.hub` fetches or finds the files),
NFC-normalised, without empty or repeated captions, at most `limit` rows each, and says in
`RecipeCorpora.info` what it read, from which revision or file hash, and what it left out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hanclip_model.errors import HanclipError
from hanclip_model.files import atomic_write_bytes
from hanclip_model.storage import storage_error
from hanclip_model.texts import clean_text
from trainer.hub import (
    IMAGE_BATCH_ROWS,
    TEXT_BATCH_ROWS,
    FileFormat,
    FoundFiles,
    HubFiles,
    file_rows,
    find_files,
)

Role = Literal["english", "target", "images"]
RowProgress = Callable[[str, int, int | None], None]  # (corpus, rows kept, row cap)
PROGRESS_EVERY = 10_000


@dataclass(frozen=True)
class HeldOutIds:
    """Image ids no recipe trains on: those in `column` of the hub `files`, and those within
    the inclusive `ranges`."""

    name: str
    description: str
    files: HubFiles | None = None
    column: str | None = None
    ranges: tuple[tuple[int, int], ...] = ()


# The Karpathy split of COCO 2014: test (5,000), validation (5,000) and restval (30,504)
# together are the 40,504 images of COCO's val2014. Columns as read in public code that loads
# this dataset (filepath, sentids, filename, imgid, sentences, cocoid, url); the card lists none.
KARPATHY_VAL2014 = HubFiles(
    "yerevann/coco-karpathy",
    ("data/test-*.parquet", "data/validation-*.parquet", "data/restval-*.parquet"),
)
# XTD10/test_image_names.txt (github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10)
# names 1,000 COCO 2014 images that fall in these id ranges; every COCO id inside them is
# held out, a superset that needs no copy of the file.
XTD10_COCO_ID_RANGES = (
    (61844, 63252),
    (64627, 65965),
    (127068, 129945),
    (171179, 172805),
    (435433, 436698),
)
COCO_EVALUATION = (
    HeldOutIds(
        "coco2014-val",
        "the 40,504 COCO 2014 validation images: the Karpathy test and val images that "
        "`hanclip bench --dataset mscoco-ko` scores (karpathy-test, val) and the Karpathy "
        "restval images, by the cocoid of yerevann/coco-karpathy's test, validation and "
        "restval files",
        files=KARPATHY_VAL2014,
        column="cocoid",
    ),
    HeldOutIds(
        "xtd10",
        "XTD10's 1,000 COCO 2014 images (`hanclip bench --dataset xtd10-ko`): every COCO id "
        "in the five id ranges they lie in",
        ranges=XTD10_COCO_ID_RANGES,
    ),
)


@dataclass(frozen=True)
class Source:
    """One corpus of a recipe: a hub dataset's files and the column to read."""

    name: str
    files: HubFiles
    column: str  # a caption, a list of captions, or an image ({bytes, path})
    licence: str
    size: str  # rows, as the documentation gives them
    docs: tuple[str, ...]  # where the ids, files, columns, licence and size were read
    holds_out: str  # what is not trained on, and how, in words
    file_format: FileFormat = "parquet"
    id_column: str | None = None  # the COCO image id (a number, or a name holding it)
    held_out: tuple[HeldOutIds, ...] = ()
    take: int | None = None  # rows read when no --limit is given (None: all)
    note: str = ""  # what the documentation did not say, and the recipe assumes


@dataclass(frozen=True)
class Recipe:
    name: str
    language: str  # the target captions' language code
    description: str
    english: Source
    target: Source
    images: Source | None = None  # None: the user gives --images or --images-from-library

    def sources(self) -> list[tuple[Role, Source]]:
        named: list[tuple[Role, Source | None]] = [
            ("english", self.english),
            ("target", self.target),
            ("images", self.images),
        ]
        return [(role, source) for role, source in named if source is not None]

    @property
    def holds_out(self) -> str:
        return "; ".join(f"{role}: {source.holds_out}" for role, source in self.sources())

    def summary(self) -> RecipeSummary:
        """What `hanclip train --list-recipes` shows."""
        return RecipeSummary(
            name=self.name,
            language=self.language,
            description=self.description,
            images="from the recipe" if self.images else "--images or --images-from-library",
            holds_out=self.holds_out,
            sources=[SourceSummary(role, source) for role, source in self.sources()],
        )


@dataclass(frozen=True)
class SourceSummary:
    """One corpus of a recipe as `--list-recipes` shows it."""

    role: Role
    source: Source

    def as_json(self) -> dict[str, Any]:
        source = self.source
        return {
            "role": self.role,
            "name": source.name,
            "repo_id": source.files.repo_id,
            "repo_type": source.files.repo_type,
            "revision": source.files.revision,
            "allow_patterns": list(source.files.allow_patterns),
            "format": source.file_format,
            "column": source.column,
            "id_column": source.id_column,
            "licence": source.licence,
            "size": source.size,
            "default_rows": source.take,
            "holds_out": source.holds_out,
            "held_out_ids": [asdict(held) for held in source.held_out],
            "docs": list(source.docs),
            "note": source.note,
        }


@dataclass(frozen=True)
class RecipeSummary:
    """A recipe as `--list-recipes` shows it: name, language, sources, what it holds out."""

    name: str
    language: str
    description: str
    images: str  # where the images come from, in words
    holds_out: str
    sources: list[SourceSummary]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "language": self.language,
            "description": self.description,
            "images": self.images,
            "holds_out": self.holds_out,
            "sources": [source.as_json() for source in self.sources],
        }


_COCO_HOLDS_OUT = (
    "by COCO image id, the COCO 2014 validation images (the Karpathy test/val/restval "
    "images; bench mscoco-ko scores its karpathy-test and val splits on them) and XTD10's "
    "images (bench xtd10-ko)"
)

COYO_ENGLISH = Source(
    name="COYO-700M (English alt-texts)",
    files=HubFiles(
        "kakaobrain/coyo-700m",
        ("data/part-00000-*.snappy.parquet",),
        revision="54ee2d8c64d3d80a5e10ef6952a4466551834fc1",  # "COYO-700M v1.0.0"
    ),
    column="text",
    licence="CC-BY-4.0 (the dataset; each image and text keeps the licence of its page)",
    size="747M image-text pairs in parquet parts of about 1 GB; the recipe fetches one part",
    docs=(
        "https://huggingface.co/datasets/kakaobrain/coyo-700m",
        "https://huggingface.co/datasets/kakaobrain/coyo-700m/commit/"
        "54ee2d8c64d3d80a5e10ef6952a4466551834fc1",
        "https://github.com/kakaobrain/coyo-dataset",
    ),
    holds_out=(
        "nothing by id: COYO itself dropped the pairs whose image duplicates (by pHash) one "
        "of ImageNet, Flickr30K, MS-COCO, CC-3M or CC-12M, COCO's benchmark images among "
        "them; Crossmodal-3600's Open Images photos are not filtered"
    ),
    take=1_000_000,
    note="1M alt-texts by default, as in the paper; how many rows one part holds is not documented",
)

MSCOCO_KOREAN = Source(
    name="MSCOCO-Korean (AI Hub's Korean captions of COCO 2014)",
    files=HubFiles("kimdeoldeol/COCO_dataset", ("data/train-*.parquet",)),
    column="caption_ko",
    id_column="source",
    held_out=COCO_EVALUATION,
    licence="not stated on the card (AI Hub's terms cover the original MSCOCO-Korean)",
    size="122,256 images, a list of Korean captions each",
    docs=(
        "https://huggingface.co/datasets/kimdeoldeol/COCO_dataset/blob/main/README.md",
        "https://huggingface.co/datasets/kimdeoldeol/COCO_image/blob/main/data/info.json",
    ),
    holds_out=_COCO_HOLDS_OUT,
    note=(
        "unverified: what the string column `source` holds. Its last number is taken as "
        "the COCO image id, as in AI Hub's file_path (val2014/COCO_val2014_000000391895.jpg); "
        "a row without a number is dropped, so a wrong guess leaves no captions"
    ),
)

KOCC3M = Source(
    name="KoCC3M (Conceptual Captions 3M translated to Korean)",
    files=HubFiles("QuoQA-NLP/KoCC3M", ("data/train-*.parquet",)),
    column="korean_caption",
    licence="not stated (dataset_infos.json leaves it empty; CC3M's terms cover the original)",
    size="3,318,333 train and 15,840 validation rows (image_url, english_caption, korean_caption)",
    docs=(
        "https://huggingface.co/datasets/QuoQA-NLP/KoCC3M/blob/main/dataset_infos.json",
        "https://huggingface.co/datasets/QuoQA-NLP/KoCC3M/tree/main/data",
    ),
    holds_out=(
        "the validation split (15,840 rows): only data/train-* is fetched, so score "
        "`hanclip bench --dataset kocc3m` on the validation file"
    ),
    take=600_000,
    note="600k captions by default, the size of the paper's Korean memory",
)

COCO_VIETNAMESE = Source(
    name="COCO 2017 captions in Vietnamese (translated with VinAI's tools)",
    files=HubFiles(
        "dinhanhx/coco-2017-vi",
        ("vi/captions_train2017_trans.json",),
        revision="794ce580bb7b3a341962b95e2ca433dd9e82c034",  # "Add data"
    ),
    file_format="coco-json",
    column="caption",
    id_column="image_id",
    held_out=COCO_EVALUATION,
    licence="unknown (so says the card; COCO's English captions are CC-BY-4.0)",
    size="the captions of COCO train2017 (118,287 images, about five each), 108 MB",
    docs=(
        "https://huggingface.co/datasets/dinhanhx/coco-2017-vi",
        "https://github.com/dinhanhx/VisualRoBERTa/blob/main/src/data.py",
    ),
    holds_out=(
        _COCO_HOLDS_OUT + "; COCO train2017 holds most val2014 images, so this filter matters"
    ),
    note=(
        "the caption count of the translated file is not documented; "
        "captions_train2017_trans_plus.json (the same plus UIT-ViIC) is not used"
    ),
)

COCO_TRAIN_IMAGES = Source(
    name="COCO 2017 train images",
    files=HubFiles("AKCIT/coco2017-captioning", ("data/train-0000[0-3]-*.parquet",)),
    column="image",
    id_column="image_id",
    held_out=COCO_EVALUATION,
    licence="not stated on the card; COCO's images keep their Flickr licences (cocodataset.org)",
    size="118,287 train images (image, image_id, text, captions, split), 19.7 GB; the recipe "
    "fetches the first four parquet shards",
    docs=("https://huggingface.co/datasets/AKCIT/coco2017-captioning/blob/main/README.md",),
    holds_out=_COCO_HOLDS_OUT,
    note="unverified: the shard names (train-00000-of-…); the card gives only data/train-*",
)

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "coyo-mscoco-ko",
            "ko",
            "The paper's corpora as far as the hub holds them: 1M English alt-texts from "
            "COYO-700M and AI Hub's Korean MSCOCO captions. The paper's images were 1.5M from "
            "ImageNet; give your own (--images DIR or --images-from-library).",
            english=COYO_ENGLISH,
            target=MSCOCO_KOREAN,
        ),
        Recipe(
            "coyo-kocc3m-ko",
            "ko",
            "Korean from KoCC3M, web alt-texts like the English side: 1M COYO-700M alt-texts "
            "and 600k machine-translated CC3M captions; images from --images or "
            "--images-from-library.",
            english=COYO_ENGLISH,
            target=KOCC3M,
        ),
        Recipe(
            "coyo-coco-vi",
            "vi",
            "Vietnamese, the language of PhoCLIP (which needed 844k Vietnamese–image pairs; "
            "this needs none): 1M COYO-700M alt-texts, the Vietnamese translation of COCO 2017's "
            "captions, and COCO 2017 train images.",
            english=COYO_ENGLISH,
            target=COCO_VIETNAMESE,
            images=COCO_TRAIN_IMAGES,
        ),
    )
}


def list_recipes() -> list[RecipeSummary]:
    """Every recipe's name, language, sources, licences, sizes and what it holds out."""
    return [recipe.summary() for recipe in RECIPES.values()]


def get_recipe(name: str) -> Recipe:
    recipe = RECIPES.get(name)
    if recipe is None:
        raise HanclipError(f"no recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return recipe


@dataclass
class RecipeCorpora:
    """The corpora a recipe read: captions, and photo files where it has an image source."""

    english: list[str]
    target: list[str]
    photos: list[str] | None
    language: str
    info: dict[str, object]  # sources, revisions or file hashes, rows read and left out


@dataclass
class CorpusCounts:
    rows: int = 0  # rows read (a row may hold several captions)
    held_out: int = 0  # rows of a held-out image
    without_id: int = 0  # rows dropped because no image id could be read
    empty: int = 0
    duplicates: int = 0
    not_images: int = 0  # image cells whose bytes are no JPEG, PNG, GIF or WebP
    kept: int = 0


@dataclass(frozen=True)
class IdFilter:
    ids: frozenset[int]
    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, image_id: int) -> bool:
        return image_id in self.ids or any(low <= image_id <= high for low, high in self.ranges)


def coco_image_id(value: object) -> int | None:
    """A COCO image id from an id cell: the number itself, or the last number in a name
    (`val2014/COCO_val2014_000000391895.jpg` → 391895)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        numbers = re.findall(r"\d+", value)
        return int(numbers[-1]) if numbers else None
    return None


@dataclass
class _HeldOutIndex:
    """Held-out id lists, each read once per run, and what was read for the card."""

    data_dir: Path | None
    filters: dict[str, IdFilter] = field(default_factory=dict)
    records: dict[str, dict[str, object]] = field(default_factory=dict)

    def filter_for(self, source: Source) -> IdFilter | None:
        if not source.held_out:
            return None
        parts = [self._resolve(held) for held in source.held_out]
        return IdFilter(
            frozenset().union(*(part.ids for part in parts)),
            tuple(r for part in parts for r in part.ranges),
        )

    def _resolve(self, held: HeldOutIds) -> IdFilter:
        if held.name in self.filters:
            return self.filters[held.name]
        ids: set[int] = set()
        record: dict[str, object] = {"description": held.description}
        if held.files is not None and held.column is not None:
            found = find_files(held.files, self.data_dir)
            for path in found.paths:
                for (value,) in file_rows(path, "parquet", [held.column], batch_rows=65536):
                    image_id = coco_image_id(value)
                    if image_id is not None:
                        ids.add(image_id)
            if not ids:
                raise HanclipError(
                    f"no image ids in column {held.column} of {held.files.repo_id}: "
                    f"cannot hold out {held.name}"
                )
            record.update(ids=len(ids), source=found.record())
        if held.ranges:
            record["id_ranges"] = [list(r) for r in held.ranges]
        self.filters[held.name] = IdFilter(frozenset(ids), held.ranges)
        self.records[held.name] = record
        return self.filters[held.name]


def load_recipe(
    recipe: str | Recipe,
    *,
    data_dir: Path | None = None,
    limit: int | None = None,
    with_images: bool = True,
    image_dir: Path | None = None,
    progress: RowProgress | None = None,
) -> RecipeCorpora:
    """Read a recipe's corpora: from the hub (cached), or from `data_dir` laid out as
    `<data_dir>/<owner>__<name>/<path in the repo>`. `limit` caps each corpus (else each
    source's default); `with_images` False skips the recipe's image source (the user gives
    photos); images are written once, named by content hash, below `image_dir` (default
    `<hanclip cache>/recipe-images`)."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if limit is not None and limit < 1:
        raise HanclipError(f"--limit must be at least 1, not {limit}")
    if data_dir is not None and not data_dir.is_dir():
        raise HanclipError(f"data folder not found: {data_dir}")
    held = _HeldOutIndex(data_dir)
    info: dict[str, object] = {"recipe": recipe.name}
    corpora: dict[Role, list[str]] = {}
    for role, source in recipe.sources():
        if role == "images" and not with_images:
            continue
        cap = limit if limit is not None else source.take
        found = find_files(source.files, data_dir)
        counts = CorpusCounts()
        batch_rows = IMAGE_BATCH_ROWS if role == "images" else TEXT_BATCH_ROWS
        cells = _cells(found, source, held.filter_for(source), counts, batch_rows)
        if role == "images":
            if image_dir is None:
                from hanclip_model.cache import cache_root

                image_dir = cache_root() / "recipe-images"
            folder = image_dir / source.files.folder_name
            kept = _image_files(cells, folder, _Cap(role, cap, counts, progress))
        else:
            kept = _captions(cells, _Cap(role, cap, counts, progress))
        if not kept:
            raise HanclipError(
                f"no {role} rows left in {source.files.repo_id} after filtering "
                f"({_counts_text(counts)})"
            )
        corpora[role] = kept
        info[role] = {
            "name": source.name,
            **found.record(),
            "column": source.column,
            "licence": source.licence,
            "holds_out": source.holds_out,
            "row_cap": cap,
            **asdict(counts),
        }
    if held.records:
        info["held_out"] = held.records
    return RecipeCorpora(
        english=corpora["english"],
        target=corpora["target"],
        photos=corpora.get("images"),
        language=recipe.language,
        info=info,
    )


def _counts_text(counts: CorpusCounts) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in asdict(counts).items())


def _cells(
    found: FoundFiles,
    source: Source,
    held_out: IdFilter | None,
    counts: CorpusCounts,
    batch_rows: int,
) -> Iterator[Any]:
    """The cells of `source.column`, in file order, without the held-out images' rows."""
    columns = [source.column] + ([source.id_column] if source.id_column else [])
    for path in found.paths:
        for row in file_rows(path, source.file_format, columns, batch_rows=batch_rows):
            counts.rows += 1
            if held_out is not None:
                image_id = coco_image_id(row[1]) if len(row) > 1 else None
                if image_id is None:
                    counts.without_id += 1
                    continue
                if image_id in held_out:
                    counts.held_out += 1
                    continue
            yield row[0]


@dataclass
class _Cap:
    """Counts what a corpus keeps, reports it every PROGRESS_EVERY rows, stops at `cap`."""

    role: str
    cap: int | None
    counts: CorpusCounts
    progress: RowProgress | None

    def keep(self) -> bool:
        """Count one more kept row; whether the corpus is full."""
        self.counts.kept += 1
        if self.progress is not None and self.counts.kept % PROGRESS_EVERY == 0:
            self.progress(self.role, self.counts.kept, self.cap)
        return self.cap is not None and self.counts.kept >= self.cap

    def done(self) -> None:
        if self.progress is not None:
            self.progress(self.role, self.counts.kept, self.cap)


def _captions(cells: Iterator[Any], cap: _Cap) -> list[str]:
    """NFC captions, each once, until the cap; a cell holds one caption or a list of them."""
    kept: list[str] = []
    seen: set[str] = set()
    full = False
    for cell in cells:
        for text in cell if isinstance(cell, list) else [cell]:
            caption = clean_text(text)
            if caption is None:
                cap.counts.empty += 1
            elif caption in seen:
                cap.counts.duplicates += 1
            else:
                seen.add(caption)
                kept.append(caption)
                full = cap.keep()
                if full:
                    break
        if full:
            break
    cap.done()
    return kept


_IMAGE_SIGNATURES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"))


def image_suffix(data: bytes) -> str | None:
    """The file extension of encoded image bytes, from their signature; None for others."""
    for signature, suffix in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def _image_files(cells: Iterator[Any], folder: Path, cap: _Cap) -> list[str]:
    """Each image cell ({bytes, path}, as the hub's Image feature stores it) written once as
    `<folder>/<sha256[:2]>/<sha256><ext>`; the paths, each image once, until the cap."""
    paths: list[str] = []
    seen: set[str] = set()
    for cell in cells:
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not isinstance(data, bytes) or not data:
            cap.counts.empty += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        suffix = image_suffix(data)
        if digest in seen:
            cap.counts.duplicates += 1
            continue
        if suffix is None:
            cap.counts.not_images += 1
            continue
        seen.add(digest)
        path = folder / digest[:2] / f"{digest}{suffix}"
        if not path.is_file():
            _write_image(path, data, folder)
        paths.append(str(path))
        if cap.keep():
            break
    cap.done()
    return paths


def _write_image(path: Path, data: bytes, folder: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = storage_error(exc, folder, what="image cache folder")
        if error is None:
            raise
        raise error from exc
    atomic_write_bytes(path, data)
