// Small DOM and formatting helpers.

import { shownProgress } from "./status";

type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** h("button", {class: "x", onclick: fn}, "text", child) */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v as EventListener);
    else if (k === "class") el.className = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let uid = 0;
export function nextId(prefix: string): string {
  return `${prefix}-${++uid}`;
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : dateFmt.format(d);
}

/** A fixed-size progress bar (div role=progressbar) whose value can be updated in place. */
export class ProgressBar {
  readonly el: HTMLDivElement;
  private fill: HTMLDivElement;
  private text: HTMLSpanElement;
  constructor(label: string, extraClass = "") {
    this.fill = h("div", { class: "bar-fill" });
    this.text = h("span", { class: "bar-text" }, "0 %");
    this.el = h(
      "div",
      {
        class: `bar ${extraClass}`.trim(),
        role: "progressbar",
        "aria-label": label,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": 0,
      },
      this.fill,
      this.text,
    );
  }
  /** A terminal "failed" / "cancelled" state is labelled as such rather than with a percentage. */
  set(value: number, state = ""): void {
    const v = Math.max(0, Math.min(100, Math.round(value)));
    const st = state.toLowerCase();
    const label = st === "failed" ? "Failed" : st === "cancelled" ? "Cancelled" : `${v} %`;
    this.fill.style.width = `${v}%`;
    this.text.textContent = label;
    this.el.setAttribute("aria-valuenow", String(v));
    if (label !== `${v} %`) this.el.setAttribute("aria-valuetext", label);
    else this.el.removeAttribute("aria-valuetext");
    this.el.dataset.state = st;
  }
}

export function statusBadge(status: string): HTMLSpanElement {
  const el = h("span");
  setBadge(el, status);
  return el;
}

function setBadge(el: HTMLElement, status: string): void {
  el.className = `badge status-${status.toLowerCase()}`;
  el.textContent = status;
}

/** Shows a job's or task's state on its element (`data-status`), badge and progress bar. */
export function showStatus(el: HTMLElement, badge: HTMLElement, bar: ProgressBar, item: { status: string; progress: number }): void {
  el.dataset.status = item.status;
  setBadge(badge, item.status);
  bar.set(shownProgress(item), item.status);
}
