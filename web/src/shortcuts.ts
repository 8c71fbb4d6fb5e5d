// Keyboard shortcuts: one listener on the document. Keys typed into a text field, a select or a
// slider keep their usual meaning; the others go to the open viewer first (slices, presets, views,
// tools), then to the page's own actions (task, side panel, full screen). "?" opens the cheat sheet.

import { h } from "./util";

/** Handles a key for the open viewer; true when it was used. */
export type KeyHandler = (e: KeyboardEvent) => boolean;

let viewerKeys: KeyHandler | null = null;
const pageKeys = new Map<string, () => void>();

/** The open viewer's key handler (null when none is open). */
export function setViewerKeys(handler: KeyHandler | null): void {
  viewerKeys = handler;
}

/** A page action for a key (as KeyboardEvent.key). */
export function onPageKey(key: string, fn: () => void): void {
  pageKeys.set(key, fn);
}

/** The cheat sheet: [keys, what they do], by group. */
export const SHORTCUTS: [string, [string, string][]][] = [
  [
    "Slices and views",
    [
      ["↑ ↓ or wheel", "previous / next slice (volumes); pan (2D)"],
      ["Page Up / Page Down", "10 slices back / on"],
      ["Home / End", "first / last slice"],
      ["a  c  s", "axial, coronal, sagittal"],
      ["m", "multiplanar 2×2 (axial, coronal, sagittal, 3D)"],
      ["v", "3D render"],
      ["b", "before / after side by side (volumes)"],
      ["o", "overlay the result on the input (on / off)"],
    ],
  ],
  [
    "Window",
    [
      ["1 … 9", "the window presets, in the order of the Window list"],
      ["right-drag", "window: up/down level, left/right width"],
      ["r", "reset: default window, zoom and tool"],
    ],
  ],
  [
    "Tools",
    [
      ["w", "window/level with the left button"],
      ["l", "length"],
      ["g", "angle"],
      ["e", "ellipse region (2D and volume slices): mean, sd, min, max, area"],
      ["x", "rectangle region (2D)"],
      ["Esc", "back to the default tool (pan in 2D, crosshair in volumes)"],
      ["+ / − / 0", "zoom in / out / fit (in volumes also the wheel with Left drag: Pan/zoom)"],
    ],
  ],
  [
    "Page",
    [
      ["n / p", "next / previous task of the job"],
      ["j", "show or hide the side panel (new job, jobs, studies)"],
      ["f", "full screen viewer"],
      ["?", "this sheet"],
    ],
  ],
];

let dialog: HTMLDialogElement | null = null;

export function cheatSheet(): HTMLDialogElement {
  if (dialog) return dialog;
  const close = h("button", { type: "button", class: "small secondary" }, "Close");
  dialog = h(
    "dialog",
    { class: "cheatsheet", "aria-labelledby": "cheatsheet-title" },
    h("div", { class: "side-head" }, h("h2", { id: "cheatsheet-title" }, "Keyboard shortcuts"), close),
    h(
      "div",
      { class: "cheatsheet-grid" },
      ...SHORTCUTS.map(([group, rows]) =>
        h(
          "section",
          {},
          h("h3", {}, group),
          h("table", {}, h("tbody", {}, ...rows.map(([k, what]) => h("tr", {}, h("th", { scope: "row" }, h("kbd", {}, k)), h("td", {}, what))))),
        ),
      ),
    ),
  );
  close.addEventListener("click", () => dialog?.close());
  document.body.append(dialog);
  return dialog;
}

export function showCheatSheet(): void {
  const d = cheatSheet();
  if (!d.open) d.showModal();
}

function typing(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  // a checkbox or a button has no use for letters and arrows: those go to the viewer
  if (tag === "INPUT") return !["checkbox", "radio", "button", "submit", "reset"].includes((target as HTMLInputElement).type);
  return tag === "SELECT" || tag === "TEXTAREA";
}

export function installShortcuts(): void {
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    if (dialog?.open) return; // the dialog handles Esc itself
    if (typing(e.target)) return;
    if (e.key === "?") {
      e.preventDefault();
      showCheatSheet();
      return;
    }
    if (viewerKeys?.(e)) {
      e.preventDefault();
      e.stopPropagation();
      return;
    }
    const fn = pageKeys.get(e.key);
    if (fn) {
      e.preventDefault();
      fn();
    }
  }, true);
}
