// The result's metadata as two tables: the clinical facts first (modality, study, shape,
// spacing, window, ...) with readable names, the rest folded under "Technical".

import { h } from "./util";

/** Clinical facts first, in this order, with readable names; the rest under "Technical". */
const CLINICAL: [string, string][] = [
  ["modality", "Modality"],
  ["study_description", "Study"],
  ["series_description", "Series"],
  ["body_part_examined", "Body part"],
  ["shape", "Shape"],
  ["spacing", "Spacing (mm)"],
  ["pixel_spacing", "Pixel spacing (mm)"],
  ["slice_thickness", "Slice thickness (mm)"],
  ["units", "Units"],
  ["window_center", "Window center"],
  ["window_width", "Window width"],
];

function fmtMeta(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.map((x) => (typeof x === "number" ? String(Math.round(x * 1000) / 1000) : fmtMeta(x))).join(" × ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function isMatrix4(v: unknown): v is number[][] {
  return Array.isArray(v) && v.length === 4 && v.every((r) => Array.isArray(r) && r.length === 4 && r.every((x) => typeof x === "number"));
}

function affineTable(m: number[][]): HTMLElement {
  const n = (x: number) => String(Math.round(x * 1000) / 1000);
  return h(
    "table",
    { class: "affine", "aria-label": "Affine (voxel to world, mm)" },
    h("tbody", {}, ...m.map((row) => h("tr", {}, ...row.map((x) => h("td", {}, n(x)))))),
  );
}

function metaRows(entries: [string, unknown][], names: Map<string, string>): HTMLTableRowElement[] {
  return entries.map(([k, v]) => h("tr", { "data-key": k }, h("th", { scope: "row" }, names.get(k) ?? k), h("td", {}, isMatrix4(v) ? affineTable(v) : fmtMeta(v))));
}

export function metadataTable(meta: Record<string, unknown> | undefined): HTMLElement {
  const all = meta ?? {};
  const entries = Object.entries(all);
  if (!entries.length) return h("p", { class: "muted" }, "No metadata.");
  const names = new Map(CLINICAL);
  const clinical = CLINICAL.filter(([k]) => k in all && all[k] !== null && all[k] !== "").map(([k]) => [k, all[k]] as [string, unknown]);
  const technical = entries.filter(([k]) => !names.has(k));
  return h(
    "section",
    { class: "meta-wrap", "aria-label": "Metadata" },
    h("h4", {}, "Metadata"),
    h(
      "table",
      { class: "meta", "data-testid": "metadata" },
      h("tbody", {}, ...(clinical.length ? metaRows(clinical, names) : [h("tr", {}, h("td", { class: "muted", colspan: "2" }, "No clinical facts."))])),
    ),
    technical.length
      ? h(
          "details",
          { class: "meta-technical" },
          h("summary", {}, `Technical (${technical.length})`),
          h("table", { class: "meta", "data-testid": "metadata-technical" }, h("tbody", {}, ...metaRows(technical, names))),
        )
      : null,
  );
}
