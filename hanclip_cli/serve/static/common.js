// hanclip serve: what the page's modules share: its words (the body's data-ui: the server's
// table of UI strings in the page's language, hanclip_cli/ui_text.py), the API, dates, and
// text that came from a photo (always text nodes, never markup).

export const TRUE = ["1", "true", "yes", "on"];
export const $ = (selector) => document.querySelector(selector);
export const language = document.documentElement.lang || "ko";
const strings = JSON.parse(document.body.dataset.ui || "{}");

/** The string `key` in the page's language, its {placeholders} filled from `values`,
 * numbers as the language writes them (`KEY_one` where the language has one and n is 1). */
export function say(key, values = {}) {
  const text = (values.n === 1 && strings[`${key}_one`]) || strings[key] || key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => {
    if (!(name in values)) return whole;
    const value = values[name];
    return typeof value === "number" ? value.toLocaleString(language) : String(value);
  });
}

/** An error of the API in the page's language: its `problem` when it has one. */
function problemText(body) {
  const problem = body.problem;
  if (!problem || !strings[`problem_${problem.reason}`]) return body.error;
  const param = strings[`param_${problem.param}`] || problem.param || "";
  return say(`problem_${problem.reason}`, { param, value: problem.value ?? "" });
}

export class ApiError extends Error {}

export async function getJson(url, signal) {
  let response;
  try {
    response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(say("cannot_connect"));
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: said below
  }
  if (!response.ok) {
    const said = body && typeof body.error === "string";
    throw new ApiError(said ? problemText(body) : `HTTP ${response.status}`);
  }
  if (body === null) throw new ApiError(say("cannot_read_answer"));
  return body;
}

// -- formatting ------------------------------------------------------------------------

export const fileName = (path) => path.split(/[\\/]/).pop() || path;

/** A match probability as people read it: "<1%", "37%", ">99%". */
export function matchPercent(p) {
  if (p < 0.01) return "<1%";
  if (p > 0.99) return ">99%";
  return `${Math.round(p * 100)}%`;
}

function dateParts(takenAt) {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?/.exec(takenAt || "");
  return m ? { y: m[1], m: m[2], d: m[3], hh: m[4], mm: m[5] } : null;
}

export function shortDate(takenAt) {
  const p = dateParts(takenAt);
  return p ? `${p.y}.${p.m}.${p.d}` : say("unknown_date");
}

export function longDate(photo) {
  const p = dateParts(photo.taken_at);
  if (!p) return say("unknown");
  let text = say("long_date", { y: p.y, m: Number(p.m), d: Number(p.d), mm: p.m, dd: p.d });
  if (p.hh) text += ` ${p.hh}:${p.mm}`;
  if (photo.date_source === "mtime") text += ` ${say("file_time")}`;
  return text;
}

// -- text found in photos --------------------------------------------------------------

/** `text` as nodes, its (start, end) `spans` each in a <mark>: text nodes only, never
 * markup, since the text was read from a photo and may hold anything. The spans count code
 * points, as the server's Python does, so they are applied to `Array.from(text)`. */
export function marked(text, spans) {
  const chars = Array.from(text);
  const merged = []; // overlapping spans (two query words sharing letters) are one mark
  for (const [start, end] of [...spans].sort((a, b) => a[0] - b[0])) {
    const last = merged[merged.length - 1];
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }
  const nodes = [];
  let at = 0;
  for (const [start, end] of merged) {
    if (start > at) nodes.push(document.createTextNode(chars.slice(at, start).join("")));
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(Math.max(start, at), end).join("");
    nodes.push(mark);
    at = Math.max(at, end);
  }
  if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join("")));
  return nodes;
}

/** A hit's `text_match` spans moved from its snippet into the photo's whole `text` (the
 * snippet is a stretch of it, its lines joined by spaces); none when it is not there. */
export function spansInText(text, match) {
  if (!match) return [];
  const flat = text.replace(/\n/g, " ");
  const at = flat.indexOf(match.snippet);
  if (at < 0) return [];
  const begin = Array.from(flat.slice(0, at)).length;
  return match.spans.map(([start, end]) => [start + begin, end + begin]);
}

/** Puts `text` on the clipboard; where the browser refuses, selects `fallback`'s text to
 * copy by hand. True when it was copied. */
export async function copyText(text, fallback) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    getSelection().selectAllChildren(fallback);
    return false;
  }
}
