// hanclip serve: the views of the library with nothing asked (issue 26). The timeline (the
// photos newest first, a header for each month that stays in sight while its photos scroll
// by), the folders with their counts, one folder's own photos (by month, as the timeline),
// and the groups of near-identical photos (`hanclip duplicates`: side by side, their sizes,
// dates and paths; hanclip deletes nothing). Each is a URL: /, /?view=folders,
// /?view=folder&path=..., /?view=duplicates, with the search's filters in it as search has
// them. page.js runs them: each loader fills `box` a page at a time, as the search does.

import { copyText, fileName, getJson, language, say, shortDate } from "./common.js";

const GROUPS_PAGE = 10;
export const VIEWS = ["timeline", "folders", "folder", "duplicates"];

/** Which view a state (the URL, read) shows: words make a search. */
export function viewOf(state) {
  if (state.q) return "search";
  if (state.view === "folder" && state.path) return "folder";
  if (state.view === "folders" || state.view === "duplicates") return state.view;
  return "timeline";
}

/** The page's URL of a view (filters kept where the view takes them). */
export function viewUrl(view, state, path = "") {
  const p = new URLSearchParams();
  if (view !== "timeline") p.set("view", view);
  if (path) p.set("path", path);
  if (view === "timeline" || view === "folder") {
    if (state.after) p.set("after", state.after);
    if (state.before) p.set("before", state.before);
  }
  if (view !== "folders") for (const folder of state.folders) p.append("in", folder);
  if (view !== "folders" && state.includeOffline) p.set("include_offline", "1");
  const text = p.toString();
  return text ? `/?${text}` : "/";
}

/** The API's parameters for a view's page: the filters a search has (dates, folders,
 * offline photos), as the page's URL says them. */
function filterParams(state) {
  const p = new URLSearchParams();
  if (state.after) p.set("after", state.after);
  if (state.before) p.set("before", state.before);
  for (const folder of state.folders) p.append("in", folder);
  if (state.includeOffline) p.set("include_offline", "1");
  if (state.n) p.set("n", state.n);
  return p;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A link that page.js follows without reloading (`data-nav`). */
function navLink(href, className, text) {
  const link = element("a", className, text);
  link.href = href;
  link.dataset.nav = "";
  return link;
}

// -- the timeline and a folder's photos ------------------------------------------------

const monthFormat = new Intl.DateTimeFormat(language, { year: "numeric", month: "long" });

export function monthLabel(month) {
  const [y, m] = month.split("-").map(Number);
  return y && m ? monthFormat.format(new Date(y, m - 1, 1)) : month;
}

/** A page's months into `box`: the month the last page ended in goes on in its section. */
function appendMonths(box, months, tile) {
  for (const month of months) {
    let section = box.lastElementChild;
    if (!section || section.dataset.month !== month.month) {
      section = element("section", "month");
      section.dataset.month = month.month;
      const grid = element("div", "grid");
      section.append(element("h2", "month-head", monthLabel(month.month)), grid);
      box.append(section);
    }
    const grid = section.lastElementChild;
    for (const photo of month.photos) grid.append(tile(photo));
  }
}

/** The next page of the timeline (or of the folder `run.state.path`) into `box`. */
export async function loadPhotos(run, box, hooks) {
  const params = filterParams(run.state);
  if (run.kind === "folder") params.set("path", run.state.path);
  if (run.cursor) params.set("cursor", run.cursor);
  const route = run.kind === "folder" ? "/api/folder" : "/api/timeline";
  const data = await getJson(`${route}?${params}`, run.controller.signal);
  if (!hooks.isCurrent()) return;
  run.cursor = data.cursor;
  run.more = Boolean(data.more && data.cursor);
  run.offlineLeftOut = data.offline_left_out || 0;
  appendMonths(box, data.months, (photo) => hooks.tile(photo));
}

/** What the status line says of a timeline or a folder's photos shown so far. */
export function photosStatus(run) {
  const n = run.ids.length;
  let text;
  if (n === 0) {
    const filtered = run.state.after || run.state.before || run.state.folders.length;
    if (run.kind === "folder") text = say("folder_no_photos");
    else text = filtered ? say("no_match") : say("library_empty");
  } else {
    text = say(run.more ? "timeline_more" : "timeline_done", { n });
  }
  if (run.offlineLeftOut > 0) text += say("offline_left_out", { n: run.offlineLeftOut });
  return text;
}

// -- folders ---------------------------------------------------------------------------

const parentOf = (path) => path.replace(/\/[^/]*$/, "") || "/";

function countText(folder) {
  let text = say("folder_count", { n: folder.photos });
  if (folder.total !== folder.photos) text += ` · ${say("folder_total", { n: folder.total })}`;
  return text;
}

function folderRow(folder, state, name = folder.depth === 0 ? folder.path : folder.name) {
  const row = element("li", "folder");
  row.style.setProperty("--depth", String(folder.depth));
  // An offline folder's photos are shown, marked, as a search shows them with the box ticked.
  const includeOffline = state.includeOffline || folder.offline;
  const link = navLink(viewUrl("folder", { ...state, includeOffline }, folder.path), "folder-link");
  link.title = folder.path;
  link.append(
    element("span", "folder-name", name),
    element("span", "folder-count", countText(folder)),
  );
  if (folder.offline) link.append(element("span", "badge inline", say("offline_badge")));
  row.append(link);
  return row;
}

/** The library's folders, as a tree of links with their counts. */
export async function loadFolders(run, box, hooks) {
  const data = await getJson("/api/folders", run.controller.signal);
  if (!hooks.isCurrent()) return;
  run.more = false;
  run.folders = data.folders.length;
  const list = element("ul", "folders");
  for (const folder of data.folders) list.append(folderRow(folder, run.state));
  box.append(list);
}

export function foldersStatus(run) {
  return run.folders ? say("folders_found", { n: run.folders }) : say("library_empty");
}

/** Above a folder's photos: where it is (each folder above it a link) and its subfolders. */
export async function folderHead(run, head, hooks) {
  const path = run.state.path;
  const data = await getJson("/api/folders", run.controller.signal);
  if (!hooks.isCurrent()) return;
  const known = new Map(data.folders.map((folder) => [folder.path, folder]));
  const trail = element("nav", "trail");
  trail.setAttribute("aria-label", say("folder_trail"));
  trail.append(navLink(viewUrl("folders", run.state), "", say("view_folders")));
  const above = [];
  for (let at = path; known.has(at); at = parentOf(at)) {
    above.unshift(known.get(at));
    if (at === parentOf(at)) break;
  }
  for (const folder of above) {
    trail.append(element("span", "sep", "/"));
    const name = folder.depth === 0 ? folder.path : folder.name;
    if (folder.path === path) trail.append(element("strong", "", name));
    else trail.append(navLink(viewUrl("folder", run.state, folder.path), "", name));
  }
  head.append(trail);
  const children = data.folders.filter((f) => f.path !== path && parentOf(f.path) === path);
  if (children.length) {
    const list = element("ul", "folders subfolders");
    for (const child of children) {
      list.append(folderRow({ ...child, depth: 0 }, run.state, child.name));
    }
    head.append(list);
  }
}

// -- duplicates ------------------------------------------------------------------------

const sizeFormat = new Intl.NumberFormat(language, { maximumFractionDigits: 1 });

function bytes(size) {
  if (size >= 1e6) return `${sizeFormat.format(size / 1e6)} MB`;
  return `${sizeFormat.format(Math.max(1, Math.round(size / 1e3)))} KB`;
}

function duplicatePhoto(photo, hooks) {
  const card = element("figure", "dup-photo");
  const caption = element("figcaption", "dup-facts");
  const sized = photo.width && photo.height ? ` · ${photo.width} × ${photo.height}` : "";
  caption.append(
    element("span", "dup-name", fileName(photo.path)),
    element("span", "dup-size", `${bytes(photo.size)}${sized} · ${shortDate(photo.taken_at)}`),
  );
  const path = element("code", "path", photo.path);
  const copy = element("button", "copy", say("copy_path"));
  copy.type = "button";
  copy.addEventListener("click", async () => {
    if (await copyText(photo.path, path)) copy.textContent = say("text_copied");
  });
  caption.append(path, copy);
  card.append(hooks.tile(photo), caption);
  return card;
}

/** The next groups of near-identical photos into `box`. */
export async function loadDuplicates(run, box, hooks) {
  const params = filterParams({ ...run.state, after: "", before: "", n: "" });
  const threshold = new URLSearchParams(location.search).get("threshold");
  if (threshold) params.set("threshold", threshold);
  params.set("n", String(GROUPS_PAGE));
  params.set("offset", String(run.offset));
  const data = await getJson(`/api/duplicates?${params}`, run.controller.signal);
  if (!hooks.isCurrent()) return;
  run.offset = data.offset + data.groups.length;
  run.more = Boolean(data.more) && data.groups.length > 0;
  run.groups = data.total;
  for (const [index, group] of data.groups.entries()) {
    const section = element("section", "dup-group");
    const number = data.offset + index + 1;
    const similarity = group.similarity.toFixed(4);
    section.append(
      element("h2", "dup-head", say("dup_group", { number, n: group.photos.length, similarity })),
    );
    const row = element("div", "dup-photos");
    for (const photo of group.photos) row.append(duplicatePhoto(photo, hooks));
    section.append(row);
    box.append(section);
  }
}

export function duplicatesStatus(run) {
  return run.groups ? say("dup_found", { n: run.groups }) : say("dup_none");
}
