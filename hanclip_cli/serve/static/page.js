// hanclip serve: the page. Plain JS modules, no build step; the server's CSP allows no
// inline script or style, so everything is wired here. A search is a URL
// (/?q=바다+위+노을&sort=date), and so is each view of the library (views.js), so
// back/forward, reload and bookmarks all work. Its words come with the page (common.js).

import {
  $,
  getJson,
  fileName,
  longDate,
  marked,
  matchPercent,
  copyText,
  say,
  shortDate,
  spansInText,
  TRUE,
} from "./common.js";
import {
  duplicatesStatus,
  folderHead,
  foldersStatus,
  loadDuplicates,
  loadFolders,
  loadPhotos,
  photosStatus,
  viewOf,
  viewUrl,
} from "./views.js";

const DEFAULT_PAGE = 30;
const SIMILAR_PAGE = 12;
const PRELOAD_PX = 300; // start loading the next page this far before the end is seen

const el = {
  info: $("#library-info"),
  q: $("#q"),
  search: $("#search"),
  after: $("#after"),
  before: $("#before"),
  folder: $("#in"),
  minScore: $("#min-score"),
  sort: $("#sort"),
  includeOffline: $("#include-offline"),
  status: $("#status"),
  grid: $("#grid"),
  view: $("#view"),
  tabs: $("#views"),
  sentinel: $("#sentinel"),
  viewer: $("#viewer"),
  viewerTitle: $("#viewer-title"),
  viewerClose: $("#viewer-close"),
  stage: $("#viewer .stage"),
  large: $("#viewer img.large"),
  path: $("#viewer-path"),
  date: $("#viewer-date"),
  size: $("#viewer-size"),
  score: $("#viewer-score"),
  offline: $("#viewer-offline"),
  original: $("#viewer-original"),
  text: $("#viewer-text"),
  textBody: $("#viewer-text-body"),
  textCopy: $("#viewer-text-copy"),
  similar: $("#similar"),
  similarStatus: $("#similar-status"),
};

const library = { maxPage: 200, maxDepth: 2000 };

// -- the URL ---------------------------------------------------------------------------

/** The page's state as its URL says it: the search, its filters, the photo on view. */

function readUrl() {
  const p = new URLSearchParams(location.search);
  return {
    q: (p.get("q") || "").trim(),
    after: p.get("after") || "",
    before: p.get("before") || "",
    folders: p.getAll("in").filter(Boolean),
    minScore: p.get("min_score") || "",
    sort: p.get("sort") || "score",
    includeOffline: TRUE.includes((p.get("include_offline") || "").toLowerCase()),
    // Text alone or look alone (the API's switches): no control, a URL may say them.
    textOnly: TRUE.includes((p.get("text_only") || "").toLowerCase()),
    noText: TRUE.includes((p.get("no_text") || "").toLowerCase()),
    n: p.get("n") || "",
    photo: p.get("photo") || "",
    view: p.get("view") || "", // the library's views (views.js); none: search or timeline
    path: p.get("path") || "",
  };
}

/** The search's parameters, defaults left out: for both the page's URL and the API. */
function searchParams(state) {
  const p = new URLSearchParams();
  if (state.view) p.set("view", state.view);
  if (state.path) p.set("path", state.path);
  if (state.q) p.set("q", state.q);
  if (state.after) p.set("after", state.after);
  if (state.before) p.set("before", state.before);
  for (const folder of state.folders) p.append("in", folder);
  if (state.minScore !== "") p.set("min_score", state.minScore);
  if (state.sort && state.sort !== "score") p.set("sort", state.sort);
  if (state.includeOffline) p.set("include_offline", "1");
  if (state.textOnly) p.set("text_only", "1");
  if (state.noText) p.set("no_text", "1");
  if (state.n) p.set("n", state.n);
  return p;
}

function pageUrl(state, photo = state.photo) {
  const p = searchParams(state);
  if (photo) p.set("photo", String(photo));
  const text = p.toString();
  return text ? `/?${text}` : "/";
}

const here = () => location.pathname + location.search;

// -- the form --------------------------------------------------------------------------

// Folders the URL named (it may name several; the field shows the first). They stay in the
// search until the field is changed.
let urlFolders = [];

function fillForm(state) {
  el.q.value = state.q;
  el.after.value = state.after;
  el.before.value = state.before;
  urlFolders = state.folders;
  el.folder.value = state.folders[0] || "";
  const others = state.folders.slice(1);
  el.folder.title = others.length
    ? say("folders_more", { n: others.length, list: others.join(", ") })
    : "";
  el.minScore.value = state.minScore;
  el.sort.value = state.sort;
  el.includeOffline.checked = state.includeOffline;
}

function readForm() {
  const url = readUrl();
  const folder = el.folder.value.trim();
  let folders = folder ? [folder] : [];
  if (urlFolders.length && folder === urlFolders[0]) folders = urlFolders;
  const q = el.q.value.trim();
  return {
    q,
    after: el.after.value.trim(),
    before: el.before.value.trim(),
    folders,
    minScore: el.minScore.value.trim(),
    sort: el.sort.value || "score",
    includeOffline: el.includeOffline.checked,
    textOnly: url.textOnly, // as a page size, the switches given in the URL stay
    noText: url.noText,
    n: url.n,
    photo: "",
    // Words make a search; with none, the filters apply to the view on the page.
    view: q ? "" : url.view,
    path: q ? "" : url.path,
  };
}

function submit() {
  const state = readForm();
  go(pageUrl(state));
}

/** Shows the page of `url` (the history gets it), as a click on a link would. */
function go(url) {
  if (url !== here()) history.pushState(null, "", url);
  applyUrl();
}

// Enter searches, but not while an IME is composing: with a Korean IME the Enter that ends
// a composition arrives as a keydown too (isComposing, or keyCode 229 in some browsers), and
// searching then would send a half-typed word.
let composing = false;
for (const input of [el.q, el.after, el.before, el.folder, el.minScore]) {
  input.addEventListener("compositionstart", () => {
    composing = true;
  });
  input.addEventListener("compositionend", () => {
    composing = false;
  });
  input.addEventListener("blur", () => {
    composing = false;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    if (event.isComposing || event.keyCode === 229 || composing) return;
    event.preventDefault();
    submit();
  });
}
el.search.addEventListener("click", submit);
el.sort.addEventListener("change", () => {
  if (el.q.value.trim()) submit();
});
el.includeOffline.addEventListener("change", submit);

function setStatus(text, kind = "") {
  el.status.textContent = text;
  el.status.className = `status ${kind}`.trim();
}

// -- tiles -----------------------------------------------------------------------------

function makeTile(hit, state) {
  const tile = document.createElement("a");
  tile.className = "tile";
  tile.dataset.id = String(hit.id);
  tile.href = pageUrl(state, hit.id);
  tile.title = hit.path;

  const frame = document.createElement("span");
  frame.className = "frame";
  const img = document.createElement("img");
  img.loading = "lazy"; // before src, or it loads at once
  img.decoding = "async";
  img.alt = fileName(hit.path);
  img.addEventListener("error", () => tile.classList.add("broken"), { once: true });
  img.src = hit.thumbnail;
  frame.append(img);
  if (hit.offline) {
    tile.classList.add("offline");
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = say("offline_badge");
    frame.append(badge);
  }

  const meta = document.createElement("span");
  meta.className = "meta";
  const score = document.createElement("span");
  score.className = "score";
  score.title = say("score_title");
  // A photo of a view has no score: nothing was asked.
  score.textContent = typeof hit.score === "number" ? hit.score.toFixed(3) : "";
  if (typeof hit.match_probability === "number") {
    // A calibrated model: the score as a match probability too.
    score.textContent += ` · ${matchPercent(hit.match_probability)}`;
    score.title = say("score_probability_title");
  }
  const date = document.createElement("time");
  date.className = "date";
  if (hit.taken_at) date.dateTime = hit.taken_at;
  date.textContent = shortDate(hit.taken_at);
  meta.append(score, date);

  tile.append(frame, meta);
  if (hit.text_match) {
    // Found by the words in it: the words, where they stand in its text.
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.title = say("snippet_title");
    snippet.append(...marked(hit.text_match.snippet, hit.text_match.spans));
    tile.append(snippet);
  }
  return tile;
}

function onTileClick(event, fromViewer) {
  const tile = event.target.closest(".tile");
  if (!tile) return;
  const modified = event.metaKey || event.ctrlKey || event.shiftKey || event.altKey;
  if (event.button !== 0 || modified) return; // a new tab, a download: the browser's
  event.preventDefault();
  const photo = known.get(Number(tile.dataset.id));
  if (photo) openViewer(photo, fromViewer ? "replace" : "push");
}

// -- the search and the views -----------------------------------------------------------

const known = new Map(); // id -> the last record seen of it (search hits, similar photos)
let current = null; // the search or view on the page
const observer = new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMore();
  },
  { rootMargin: `0px 0px ${PRELOAD_PX}px 0px` },
);

// Each kind of page: how it loads its next page into the view, and what its status says.
const LOADERS = {
  search: { load: loadSearchPage, status: searchStatus, failed: "search_failed" },
  timeline: { load: loadPhotos, status: photosStatus, failed: "photos_failed" },
  folder: { load: loadPhotos, status: photosStatus, failed: "photos_failed" },
  folders: { load: loadFolders, status: foldersStatus, failed: "folders_failed" },
  duplicates: { load: loadDuplicates, status: duplicatesStatus, failed: "dup_failed" },
};

function start(state) {
  if (current && current.controller) current.controller.abort();
  const kind = viewOf(state);
  el.grid.replaceChildren();
  el.view.replaceChildren();
  el.grid.hidden = kind !== "search";
  el.view.hidden = kind === "search";
  el.view.dataset.view = kind;
  el.sentinel.textContent = "";
  showTabs(kind, state);
  current = {
    kind,
    key: searchParams(state).toString(),
    state,
    offset: 0,
    cursor: null, // the views' next page (timeline, folder)
    more: true,
    loading: false,
    controller: new AbortController(),
    ids: [], // in the order shown
    scores: new Map(),
    offlineLeftOut: 0,
    goneLeftOut: 0,
    notice: "", // what went wrong besides the search (a photo that could not be opened)
    box: el.view,
  };
  setStatus(say(kind === "search" ? "searching" : "loading"), "busy");
  if (kind === "folder") {
    const run = current;
    const head = document.createElement("div");
    head.className = "folder-head";
    run.box = document.createElement("div");
    el.view.append(head, run.box);
    folderHead(run, head, hooksOf(run)).catch(() => {}); // its photos say what went wrong
  }
  loadMore();
}

/** What a view's loader may ask of the page: a tile for a photo (kept for the large
 * view and its arrow keys), and whether it is still the one on the page. */
function hooksOf(run) {
  return {
    isCurrent: () => run === current,
    tile(photo) {
      known.set(photo.id, photo);
      run.ids.push(photo.id);
      return makeTile(photo, run.state);
    },
  };
}

function showTabs(kind, state) {
  const browsing = kind === "folder" ? "folders" : kind;
  for (const tab of el.tabs.querySelectorAll("a")) {
    tab.href = viewUrl(tab.dataset.view, state);
    if (tab.dataset.view === browsing) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
}

function pageSize(offset) {
  const asked = current.state.n;
  if (asked && !/^\d+$/.test(asked)) return asked; // not a number: the API says so
  const n = asked ? Number(asked) : DEFAULT_PAGE;
  // Paging reaches down to max_depth: the last page is cut to fit.
  return String(Math.min(n, library.maxDepth - offset));
}

async function loadMore() {
  const run = current;
  if (!run || run.loading || !run.more) return;
  run.loading = true;
  const loader = LOADERS[run.kind];
  if (run.ids.length > 0) el.sentinel.textContent = say("loading_more");
  try {
    await loader.load(run, run.box, hooksOf(run));
    if (run !== current) return;
    const text = loader.status(run);
    if (run.notice) setStatus(`${run.notice} · ${text}`, "error");
    else setStatus(text, run.ids.length === 0 && run.kind !== "folders" ? "empty" : "");
  } catch (err) {
    if (err.name === "AbortError" || run !== current) return;
    run.more = false;
    setStatus(say(loader.failed, { why: err.message }), "error");
  } finally {
    run.loading = false;
    if (run === current) el.sentinel.textContent = "";
  }
  // The observer tells only of changes: if the end of the grid is still in sight (a short
  // page, a tall window), load on without waiting for a scroll.
  if (run === current && run.more) requestAnimationFrame(loadIfEndInSight);
}

async function loadSearchPage(search) {
  const params = searchParams({ ...search.state, view: "", path: "" });
  params.set("n", pageSize(search.offset));
  params.set("offset", String(search.offset));
  const data = await getJson(`/api/search?${params}`, search.controller.signal);
  if (search !== current) return;
  search.offset = data.offset + data.results.length;
  search.more =
    Boolean(data.more) && data.results.length > 0 && search.offset < library.maxDepth;
  search.offlineLeftOut = Math.max(search.offlineLeftOut, data.offline_left_out || 0);
  search.goneLeftOut = Math.max(search.goneLeftOut, data.gone_left_out || 0);
  const tiles = document.createDocumentFragment();
  for (const hit of data.results) {
    if (search.scores.has(hit.id)) continue; // a ranking that moved between pages
    search.scores.set(hit.id, hit.score);
    search.ids.push(hit.id);
    known.set(hit.id, hit);
    tiles.append(makeTile(hit, search.state));
  }
  el.grid.append(tiles);
}

function loadIfEndInSight() {
  if (el.sentinel.getBoundingClientRect().top < innerHeight + PRELOAD_PX) loadMore();
}

function searchStatus(search) {
  const shown = search.ids.length;
  let text;
  if (shown === 0) {
    text = say("no_match");
  } else if (search.more) {
    text = say("shown_more", { n: shown });
  } else if (search.state.sort !== "score" && shown >= Number(pageSize(0))) {
    text = say("best_by_date", { n: shown });
  } else {
    text = say("found", { n: shown });
  }
  if (search.offlineLeftOut > 0) text += say("offline_left_out", { n: search.offlineLeftOut });
  if (search.goneLeftOut > 0) text += say("gone_left_out", { n: search.goneLeftOut });
  return text;
}

function showCount(run) {
  const text = LOADERS[run.kind].status(run);
  if (run.notice) setStatus(`${run.notice} · ${text}`, "error");
  else setStatus(text, run.ids.length === 0 ? "empty" : "");
}

el.grid.addEventListener("click", (event) => onTileClick(event, false));
el.view.addEventListener("click", (event) => onTileClick(event, false));

// A link to another view (the tabs, a folder) is followed without reloading the page.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  const modified = event.metaKey || event.ctrlKey || event.shiftKey || event.altKey;
  if (!link || event.button !== 0 || modified) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});

// -- the large view --------------------------------------------------------------------

let viewing = null; // the id on view
let similarRun = 0;
let textRun = 0;

function openViewer(photo, history_ = "push") {
  known.set(photo.id, photo);
  viewing = photo.id;
  const name = fileName(photo.path);
  el.viewerTitle.textContent = name;
  el.stage.classList.add("loading");
  el.stage.classList.remove("broken");
  el.large.alt = name;
  el.large.src = photo.large;
  el.path.textContent = photo.path;
  el.date.textContent = longDate(photo);
  const sized = photo.width && photo.height;
  el.size.textContent = sized ? `${photo.width} × ${photo.height}` : say("unknown");
  const score = current && current.scores.get(photo.id);
  el.score.textContent = score === undefined ? "" : score.toFixed(3);
  for (const row of el.viewer.querySelectorAll(".score-row")) row.hidden = score === undefined;
  el.offline.hidden = !photo.offline;
  el.original.href = photo.original;

  const url = pageUrl(current ? current.state : readUrl(), photo.id);
  if (history_ === "push" && url !== here()) history.pushState({ viewer: true }, "", url);
  else if (history_ === "replace" && url !== here()) history.replaceState(history.state, "", url);

  if (!el.viewer.open) el.viewer.showModal();
  el.viewer.scrollTop = 0;
  loadSimilar(photo);
  loadText(photo);
}

async function openById(id) {
  const known_ = known.get(Number(id));
  if (known_) {
    openViewer(known_, "none");
    return;
  }
  try {
    const photo = await getJson(`/api/photos/${encodeURIComponent(id)}`);
    if (readUrl().photo === String(id)) openViewer(photo, "none");
  } catch (err) {
    const notice = say("photo_failed", { why: err.message });
    if (current) current.notice = notice; // stays when the search's count comes
    if (current && current.ids.length) showCount(current);
    else setStatus(notice, "error");
    const state = readUrl();
    history.replaceState(null, "", pageUrl(state, ""));
  }
}

el.large.addEventListener("load", () => el.stage.classList.remove("loading"));
el.large.addEventListener("error", () => {
  if (!el.large.getAttribute("src")) return;
  el.stage.classList.remove("loading");
  el.stage.classList.add("broken");
});

async function loadSimilar(photo) {
  const run = ++similarRun;
  el.similar.replaceChildren();
  el.similarStatus.textContent = say("similar_searching");
  const url = new URL(photo.similar, location.origin);
  url.searchParams.set("n", String(SIMILAR_PAGE));
  if (current && current.state.includeOffline) url.searchParams.set("include_offline", "1");
  try {
    const data = await getJson(url.pathname + url.search);
    if (run !== similarRun) return;
    const state = current ? current.state : readUrl();
    const tiles = document.createDocumentFragment();
    for (const hit of data.results) {
      known.set(hit.id, hit);
      tiles.append(makeTile(hit, state));
    }
    el.similar.append(tiles);
    el.similarStatus.textContent = el.similar.childElementCount ? "" : say("no_similar");
  } catch (err) {
    if (run !== similarRun) return;
    el.similarStatus.textContent = say("similar_failed", { why: err.message });
  }
}

/** The text read in the photo on view, the words of the search that found it by them
 * marked; or why there is none. A search hit carries no text: the photo's record does. */
async function loadText(photo) {
  const run = ++textRun;
  el.text.hidden = true;
  el.textBody.replaceChildren();
  let record = photo;
  if (!("text_status" in photo)) {
    try {
      record = await getJson(`/api/photos/${encodeURIComponent(photo.id)}`);
    } catch (err) {
      if (run !== textRun) return;
      record = { text_status: "unavailable", why: err.message };
    }
    if (run !== textRun) return;
  }
  const status = record.text_status;
  const hasText = status === "text" && typeof record.text === "string";
  if (hasText) {
    el.textBody.append(...marked(record.text, spansInText(record.text, photo.text_match)));
  } else {
    el.textBody.textContent = say(`text_status_${status}`, { why: record.why || "" });
  }
  el.textBody.classList.toggle("note", !hasText);
  el.textCopy.hidden = !hasText;
  el.textCopy.textContent = say("text_copy");
  el.text.hidden = false;
}

// No clipboard (refused, or an address the browser does not trust): the text is selected,
// to copy by hand.
el.textCopy.addEventListener("click", async () => {
  if (await copyText(el.textBody.textContent, el.textBody)) {
    el.textCopy.textContent = say("text_copied");
  }
});

el.similar.addEventListener("click", (event) => onTileClick(event, true));
el.viewerClose.addEventListener("click", () => el.viewer.close());
// A click on the backdrop (the dialog element itself, outside its content) closes it.
el.viewer.addEventListener("click", (event) => {
  if (event.target === el.viewer) el.viewer.close();
});

el.viewer.addEventListener("close", () => {
  const closed = viewing;
  viewing = null;
  similarRun++;
  textRun++;
  el.large.removeAttribute("src");
  el.similar.replaceChildren();
  // Closed by the user (Escape, the button): the URL loses its photo. Closed because the
  // URL lost it (back): nothing to do.
  const state = readUrl();
  if (state.photo) {
    if (history.state && history.state.viewer) history.back();
    else history.replaceState(null, "", pageUrl(state, ""));
  }
  const shown = el.grid.hidden ? el.view : el.grid;
  const tile = closed !== null && shown.querySelector(`.tile[data-id="${closed}"]`);
  if (tile) tile.focus({ preventScroll: false });
});

// Left and right step through the photos of the search or the view.
document.addEventListener("keydown", (event) => {
  if (!el.viewer.open || !current || viewing === null) return;
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  const at = current.ids.indexOf(viewing);
  if (at < 0) return;
  const next = current.ids[at + (event.key === "ArrowRight" ? 1 : -1)];
  if (next !== undefined) {
    event.preventDefault();
    openViewer(known.get(next), "replace");
  }
});

// -- the page --------------------------------------------------------------------------

function applyUrl() {
  const state = readUrl();
  fillForm(state);
  if (!current || searchParams(state).toString() !== current.key) start(state);
  if (state.photo) {
    if (viewing === null || String(viewing) !== state.photo) openById(state.photo);
  } else if (el.viewer.open) {
    el.viewer.close();
  }
}

async function loadInfo() {
  try {
    const info = await getJson("/api/info");
    library.maxPage = info.max_page;
    library.maxDepth = info.max_depth;
    el.info.textContent = say("library_info", { n: info.photos, model: info.model });
    el.info.title = info.library;
  } catch (err) {
    el.info.textContent = say("library_failed", { why: err.message });
    el.info.classList.add("error");
  }
}

// The month headers stay in sight below the page's header, where that one stays too.
const top = $(".top");
new ResizeObserver(() => {
  const sticky = getComputedStyle(top).position === "sticky";
  document.documentElement.style.setProperty("--top-h", `${sticky ? top.offsetHeight : 0}px`);
}).observe(top);

window.addEventListener("popstate", applyUrl);
observer.observe(el.sentinel);
loadInfo();
applyUrl();
if (!el.q.value) el.q.focus();
