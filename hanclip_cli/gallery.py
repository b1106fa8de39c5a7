"""`hanclip search --html`: the hits as one self-contained HTML page.

The page is a grid of tiles, best first: each an upright thumbnail embedded as a data: URI,
its rank, score, date and path, and a link to the original (a file:// URI); a photo found by
the words in it shows them where they stand in its text. It needs nothing
else: no network, no script, no file beside it, so it can be mailed or kept. A photo whose
thumbnail cannot be made (offline, unreadable) gets a placeholder tile. Its words are in the
language of the locale (`ui_text`: the web page's table and rule).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from hanclip_cli.ui_text import locale_language, say
from hanclip_library.photo_text import TextMatch
from hanclip_library.searcher import SearchHit
from hanclip_library.thumbnails import GRID_SIZE, ThumbnailCache, ThumbnailUnavailable
from hanclip_model.errors import HanclipError, StorageError
from hanclip_model.files import atomic_write_text

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

_STYLE = """\
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --card: #fff;
  --dim: #6e6e73; --line: #e3e3e8; --accent: #0a66c2; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #f2f2f7; --bg: #111113; --card: #1c1c1f; --dim: #a1a1a8; --line: #2e2e33;
    --accent: #6cb0ff; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 1.25rem; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Apple SD Gothic Neo", "Malgun Gothic",
    "Noto Sans KR", sans-serif; }
header { margin-bottom: 1.25rem; }
h1 { font-size: 1.5rem; margin: 0 0 .35rem; overflow-wrap: anywhere; }
.summary, .filters, footer { color: var(--dim); margin: .15rem 0; overflow-wrap: anywhere; }
.filters code { font-size: .9em; }
.grid { list-style: none; margin: 0; padding: 0; display: grid; gap: 1rem;
  grid-template-columns: repeat(auto-fill, minmax(min(180px, 100%), 1fr)); }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  overflow: hidden; display: flex; flex-direction: column; }
.tile > a { display: block; aspect-ratio: 1; background: var(--line);
  text-decoration: none; }
.tile img { display: block; width: 100%; height: 100%; object-fit: contain; }
.placeholder { display: flex; height: 100%; align-items: center; justify-content: center;
  text-align: center; padding: 1rem; color: var(--dim); font-size: .9rem; }
.meta { padding: .5rem .6rem .6rem; font-size: .85rem; }
.meta .line { display: flex; gap: .5rem; align-items: baseline; flex-wrap: wrap; }
.rank { font-weight: 600; }
.score { font-variant-numeric: tabular-nums; }
.date, .note { color: var(--dim); }
.path { display: block; margin-top: .2rem; color: var(--accent); text-decoration: none;
  overflow-wrap: anywhere; font-size: .8rem; }
.path:hover { text-decoration: underline; }
.snippet { margin: .3rem 0 0; color: var(--dim); font-size: .8rem; overflow-wrap: anywhere; }
mark { background: #ffd866; color: #1d1d1f; border-radius: 2px; padding: 0 1px; }
.empty { font-size: 1.1rem; color: var(--dim); }
footer { margin-top: 1.5rem; font-size: .8rem; }
"""


def _text(value: object) -> str:
    """`value` as HTML text or attribute value: escaped, and the lone surrogates of an
    undecodable file name shown as U+FFFD (UTF-8 cannot hold them)."""
    return html.escape(_LONE_SURROGATE.sub("\ufffd", str(value)), quote=True)


def _snippet(match: TextMatch, language: str) -> str:
    """A hit's snippet as HTML: each piece of the text escaped, the words found in <mark>
    (spans that overlap, two query words sharing letters, are one mark)."""
    merged: list[list[int]] = []
    for start, end in sorted(match.spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts, at = [], 0
    for start, end in merged:
        parts.append(_text(match.snippet[at:start]))
        parts.append(f"<mark>{_text(match.snippet[max(start, at) : end])}</mark>")
        at = max(at, end)
    parts.append(_text(match.snippet[at:]))
    title = _text(say(language, "snippet_title"))
    return f'<p class="snippet" title="{title}">{"".join(parts)}</p>'


def file_uri(path: str | os.PathLike) -> str:
    """The file:// URI of `path` made absolute, percent-encoded from its bytes: Korean names
    are UTF-8 escapes, and an undecodable name keeps its own bytes."""
    return Path(os.path.abspath(path)).as_uri()


def make_thumbnails(
    library_dir: Path, hits: Iterable[SearchHit], size: int = GRID_SIZE
) -> dict[int, bytes | None]:
    """Grid thumbnails (JPEG bytes) of the hits' photos by photo id, from the library's
    thumbnail cache or made now; None for a photo that cannot be shown."""
    cache = ThumbnailCache.for_library(library_dir)
    thumbnails: dict[int, bytes | None] = {}
    for hit in hits:
        if hit.record is None:
            continue
        try:
            thumbnails[hit.record.id] = cache.get(hit.record, size).data
        except (ThumbnailUnavailable, OSError):
            thumbnails[hit.record.id] = None
    return thumbnails


def _tile(hit: SearchHit, thumbnail: bytes | None, language: str) -> str:
    uri = _text(file_uri(hit.path))
    name = _text(os.path.basename(hit.path) or hit.path)
    if thumbnail is not None:
        data = base64.b64encode(thumbnail).decode("ascii")
        picture = f'<img src="data:image/jpeg;base64,{data}" alt="{name}" loading="lazy">'
    else:
        why = say(language, "why_offline" if hit.offline else "why_unreadable")
        no_preview = _text(say(language, "no_preview"))
        picture = f'<span class="placeholder">{no_preview}<br>({_text(why)})</span>'
    date = ""
    if hit.taken_at:
        shown = hit.taken_at.replace("T", " ")
        source = f" {say(language, 'file_date')}" if hit.date_source == "mtime" else ""
        date = f'<time class="date" datetime="{_text(hit.taken_at)}">{_text(shown + source)}</time>'
    offline = _text(say(language, "offline_badge"))
    notes = f'<span class="note">{offline}</span>' if hit.offline else ""
    preview = "placeholder" if thumbnail is None else "thumbnail"
    snippet = "" if hit.text_match is None else _snippet(hit.text_match, language)
    return (
        f'<li class="tile" id="rank-{hit.rank}" data-rank="{hit.rank}" data-preview="{preview}">'
        f'<a href="{uri}" title="{_text(hit.path)}">{picture}</a>'
        f'<div class="meta"><div class="line"><span class="rank">#{hit.rank}</span>'
        f'<span class="score">{hit.score:.3f}</span>{date}{notes}</div>'
        f'<a class="path" href="{uri}">{_text(hit.path)}</a>{snippet}</div></li>'
    )


def render_gallery(
    query: str,
    hits: Sequence[SearchHit],
    thumbnails: Mapping[int, bytes | None],
    *,
    filters: Iterable[str] = (),
    offline_left_out: int = 0,
    written_at: datetime | None = None,
    language: str | None = None,
) -> str:
    """The page: `query` as given (its heading), the `filters` used (option words such as
    `--after 2023-07`), and a tile per hit in the order given; `thumbnails` by photo id
    (missing or None: a placeholder). In `language` (default: the locale's)."""
    language = language or locale_language()
    filters = list(filters)
    heading = query.strip() or say(language, "gallery_no_query")
    count = say(language, "photos", n=len(hits))
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{language}">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="hanclip search --html">',
        f"<title>{_text(heading)} — {count} · hanclip</title>",
        f"<style>\n{_STYLE}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{_text(heading)}</h1>",
        f'<p class="summary">{count}</p>',
    ]
    if filters:
        shown = " ".join(f"<code>{_text(f)}</code>" for f in filters)
        parts.append(f'<p class="filters">{_text(say(language, "gallery_filters"))} {shown}</p>')
    parts += ["</header>", "<main>"]
    if hits:
        parts.append('<ol class="grid">')
        for hit in hits:
            thumbnail = thumbnails.get(hit.photo_id) if hit.photo_id is not None else None
            parts.append(_tile(hit, thumbnail, language))
        parts.append("</ol>")
    else:
        offline = (
            say(
                language,
                "gallery_offline_left_out",
                photos=say(language, "photos", n=offline_left_out),
            )
            if offline_left_out
            else ""
        )
        parts.append(
            f'<p class="empty">{_text(say(language, "gallery_empty", offline=offline))}</p>'
        )
    when = (written_at or datetime.now()).isoformat(timespec="seconds")
    # The footer's words are escaped before its <time> goes into them.
    footer = _text(say(language, "gallery_footer", when="{when}")).format(
        when=f'<time datetime="{when}">{when.replace("T", " ")}</time>'
    )
    parts += [
        "</main>",
        f"<footer>{footer}</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def check_target(path: str | os.PathLike) -> Path:
    """`path` made absolute; a HanclipError when it plainly cannot be written (a folder, or
    in a folder that does not exist), so a search need not run first to find out."""
    target = Path(os.path.abspath(path))
    where = str(path)
    if target.is_dir():
        raise HanclipError(f"cannot write the page {where}: it is a folder")
    if not target.parent.is_dir():
        raise HanclipError(
            f"cannot write the page {where}: the folder {target.parent} does not exist"
        )
    return target


def write_gallery(
    path: str | os.PathLike,
    query: str,
    hits: Sequence[SearchHit],
    thumbnails: Mapping[int, bytes | None],
    *,
    filters: Iterable[str] = (),
    offline_left_out: int = 0,
) -> Path:
    """Write the page to `path` atomically; return its absolute path. A path that cannot be
    written is a HanclipError that says why."""
    target = check_target(path)
    page = render_gallery(
        query, hits, thumbnails, filters=filters, offline_left_out=offline_left_out
    )
    where = str(path)
    try:
        atomic_write_text(target, page)
    except StorageError as exc:
        raise HanclipError(f"cannot write the page {where}: {exc.cause} ({exc.remedy})") from None
    except OSError as exc:
        raise HanclipError(f"cannot write the page {where}: {exc.strerror or exc}") from None
    return target
