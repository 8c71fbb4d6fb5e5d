// Measurements of one job (length, angle, region statistics, from the 2D and the volume viewer),
// listed as text next to the viewer, kept in localStorage per user and job, and exported as JSON
// or CSV.

import { identity } from "./api";
import { h } from "./util";
import { fmtNumber } from "./windowing";

export type Tool = "length" | "angle" | "rect" | "ellipse";

export interface Measurement {
  id: string;
  tool: Tool;
  /** The task's input file (which result it was measured on). */
  file: string;
  /** "result" or "input" (2D before/after) or the volume's plane, e.g. "axial slice 45". */
  where: string;
  /** Length (mm or px), angle (degrees), or region statistics. */
  length?: number;
  angle?: number;
  mean?: number;
  sd?: number;
  min?: number;
  max?: number;
  pixels?: number;
  area?: number;
  /** Unit of lengths ("mm" or "px"); area is in that unit squared. */
  lengthUnit: string;
  /** Unit of the values (HU, ...), "" when unknown. */
  valueUnit: string;
  /** End points (length, angle: 2 or 3 points) or the region's corners, in mm (RAS) or px. */
  points: number[][];
  created: string;
}

const TOOL_NAMES: Record<Tool, string> = { length: "Length", angle: "Angle", rect: "Rectangle", ellipse: "Ellipse" };

/** Region statistics of some values: mean, sample standard deviation, min, max, count. */
export function regionStats(values: ArrayLike<number>): { mean: number; sd: number; min: number; max: number; pixels: number } {
  let n = 0;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    n++;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const mean = n ? sum / n : NaN;
  let ss = 0;
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i])) ss += (values[i] - mean) ** 2;
  return { mean, sd: n > 1 ? Math.sqrt(ss / (n - 1)) : 0, min: n ? min : NaN, max: n ? max : NaN, pixels: n };
}

/** One line of text for a measurement, e.g. "Length 25.4 mm". */
export function describe(m: Measurement): string {
  const u = m.valueUnit ? ` ${m.valueUnit}` : "";
  if (m.tool === "length") return `Length ${fmtNumber(m.length ?? NaN)} ${m.lengthUnit}`;
  if (m.tool === "angle") return `Angle ${fmtNumber(m.angle ?? NaN, 1)}°`;
  const area = `${fmtNumber(m.area ?? NaN)} ${m.lengthUnit}²`;
  return `${TOOL_NAMES[m.tool]}: mean ${fmtNumber(m.mean ?? NaN)}${u}, sd ${fmtNumber(m.sd ?? NaN)}${u}, min ${fmtNumber(m.min ?? NaN)}${u}, max ${fmtNumber(m.max ?? NaN)}${u}, area ${area} (${m.pixels} px)`;
}

const CSV_COLUMNS: (keyof Measurement)[] = ["id", "tool", "file", "where", "length", "angle", "mean", "sd", "min", "max", "pixels", "area", "lengthUnit", "valueUnit", "created"];

export function toCSV(list: Measurement[]): string {
  const cell = (v: unknown) => {
    const s = v === undefined || v === null ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [CSV_COLUMNS.join(","), ...list.map((m) => CSV_COLUMNS.map((k) => cell(m[k])).join(","))].join("\n") + "\n";
}

let seq = 0;

/** The measurement list of one job: the panel and its store. */
export class MeasurementList {
  readonly el: HTMLElement;
  private ul: HTMLOListElement;
  private empty: HTMLElement;
  private items: Measurement[] = [];
  private key = "";
  private jobId = "";

  constructor() {
    this.ul = h("ol", { class: "measure-list", "data-testid": "measurements" });
    this.empty = h("p", { class: "muted small-text" }, "None yet. Choose Length, Angle, Rectangle or Ellipse and drag on the image.");
    const json = h("button", { type: "button", class: "small secondary" }, "JSON");
    const csv = h("button", { type: "button", class: "small secondary" }, "CSV");
    const clear = h("button", { type: "button", class: "small secondary" }, "Clear");
    json.setAttribute("aria-label", "Export measurements as JSON");
    csv.setAttribute("aria-label", "Export measurements as CSV");
    clear.setAttribute("aria-label", "Clear all measurements");
    json.addEventListener("click", () => this.download("json"));
    csv.addEventListener("click", () => this.download("csv"));
    clear.addEventListener("click", () => {
      this.items = [];
      this.save();
      this.render();
      this.onChange?.();
    });
    this.el = h(
      "section",
      { class: "measure-wrap", "aria-label": "Measurements" },
      h("div", { class: "side-head" }, h("h4", {}, "Measurements"), h("span", { class: "row tight" }, json, csv, clear)),
      this.empty,
      this.ul,
    );
  }

  /** Called when the list changes (the viewers redraw what they show). */
  onChange: (() => void) | null = null;

  /** Shows the measurements stored for this job. */
  open(jobId: string): void {
    this.jobId = jobId;
    this.key = `radiology.measurements.${identity.userId}.${jobId}`;
    try {
      this.items = JSON.parse(localStorage.getItem(this.key) ?? "[]") as Measurement[];
    } catch {
      this.items = [];
    }
    this.render();
  }

  add(m: Omit<Measurement, "id" | "created">): Measurement {
    const full: Measurement = { ...m, id: `m${Date.now().toString(36)}${++seq}`, created: new Date().toISOString() };
    this.items.push(full);
    this.save();
    this.render();
    this.onChange?.();
    return full;
  }

  all(): Measurement[] {
    return this.items;
  }

  private remove(id: string): void {
    this.items = this.items.filter((m) => m.id !== id);
    this.save();
    this.render();
    this.onChange?.();
  }

  private save(): void {
    if (!this.key) return;
    try {
      if (this.items.length) localStorage.setItem(this.key, JSON.stringify(this.items));
      else localStorage.removeItem(this.key);
    } catch {
      /* storage full or off: the list still works for this page */
    }
  }

  private render(): void {
    this.empty.hidden = this.items.length > 0;
    this.ul.replaceChildren(
      ...this.items.map((m, i) => {
        const del = h("button", { type: "button", class: "small secondary icon", "aria-label": `Delete measurement ${i + 1}` }, "×");
        del.addEventListener("click", () => this.remove(m.id));
        return h(
          "li",
          { "data-tool": m.tool, "data-id": m.id },
          h("span", { class: "measure-text" }, describe(m), h("span", { class: "muted" }, ` · ${m.file} · ${m.where}`)),
          del,
        );
      }),
    );
  }

  private download(kind: "json" | "csv"): void {
    const body = kind === "json" ? JSON.stringify({ job_id: this.jobId, measurements: this.items }, null, 2) : toCSV(this.items);
    const blob = new Blob([body], { type: kind === "json" ? "application/json" : "text/csv" });
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `measurements-${this.jobId.slice(0, 8)}.${kind}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
}
