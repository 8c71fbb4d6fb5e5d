// The window rules shared by the 2D and volume viewers: which presets a modality gets (CT presets
// in HU only for CT; percentile windows for everything), the file's own window, and whether a
// window saturates the image. A window (center c, width w) shows values lo = c - w/2 .. hi = c + w/2
// linearly from black to white (NiiVue's cal_min / cal_max), clipped outside.

/** CT presets in Hounsfield units, [center, width]: the `window` operation's (docs/imaging.md;
 *  tests/web/test_window_presets.py compares them). */
export const CT_PRESETS: [string, string, number, number][] = [
  ["brain", "Brain", 40, 80],
  ["subdural", "Subdural", 75, 215],
  ["stroke", "Stroke", 40, 40],
  ["lung", "Lung", -600, 1500],
  ["mediastinum", "Mediastinum", 50, 350],
  ["abdomen", "Abdomen", 50, 400],
  ["liver", "Liver", 30, 150],
  ["bone", "Bone", 400, 1800],
  ["soft_tissue", "Soft tissue", 40, 400],
];

export interface WindowChoice {
  id: string;
  label: string;
  center: number;
  width: number;
  /** Shown as the option's title: where the numbers come from. */
  hint: string;
}

/** Sorted sample of an image's values (at most ~65k, strided), for percentiles and saturation. */
export class ValueSample {
  readonly sorted: Float32Array;
  constructor(values: ArrayLike<number>) {
    const n = values.length;
    const step = Math.max(1, Math.floor(n / 65536));
    const out: number[] = [];
    for (let i = 0; i < n; i += step) {
      const v = values[i];
      if (Number.isFinite(v)) out.push(v);
    }
    this.sorted = Float32Array.from(out).sort();
  }
  get min(): number {
    return this.sorted.length ? this.sorted[0] : 0;
  }
  get max(): number {
    return this.sorted.length ? this.sorted[this.sorted.length - 1] : 1;
  }
  /** The p-th percentile (0..100), nearest rank. */
  percentile(p: number): number {
    const s = this.sorted;
    if (!s.length) return 0;
    const i = Math.min(s.length - 1, Math.max(0, Math.round((p / 100) * (s.length - 1))));
    return s[i];
  }
  /** Fractions of the values at or below lo and at or above hi. */
  outside(lo: number, hi: number): [number, number] {
    const s = this.sorted;
    if (!s.length) return [0, 0];
    let below = 0;
    while (below < s.length && s[below] <= lo) below++;
    let above = 0;
    while (above < s.length && s[s.length - 1 - above] >= hi) above++;
    return [below / s.length, above / s.length];
  }
}

function range(id: string, label: string, lo: number, hi: number, hint: string): WindowChoice {
  if (!(hi > lo)) hi = lo + 1;
  return { id, label, center: (lo + hi) / 2, width: hi - lo, hint };
}

export function isCT(modality: unknown): boolean {
  return String(modality ?? "").toUpperCase() === "CT";
}

/**
 * The windows offered for an image, in the order of the number keys: the file's own window (DICOM
 * Window Center/Width) when it has one, the 1-99 % window, the CT presets for CT only, the
 * 5-95 % window and the full range. The first entry is the default.
 */
export function windowChoices(modality: unknown, sample: ValueSample, fileWindow?: [number, number] | null): WindowChoice[] {
  const out: WindowChoice[] = [];
  if (fileWindow && fileWindow[1] > 0) out.push({ id: "file", label: "File window", center: fileWindow[0], width: fileWindow[1], hint: "the window stored in the file" });
  out.push(range("p1_99", "Auto 1–99 %", sample.percentile(1), sample.percentile(99), "from the 1st to the 99th percentile of the values"));
  if (isCT(modality)) for (const [id, label, c, w] of CT_PRESETS) out.push({ id, label, center: c, width: w, hint: `CT preset, HU: center ${c}, width ${w}` });
  out.push(range("p5_95", "Auto 5–95 %", sample.percentile(5), sample.percentile(95), "from the 5th to the 95th percentile of the values"));
  out.push(range("full", "Full range", sample.min, sample.max, "from the smallest to the largest value"));
  return out;
}

/**
 * A warning when a window makes most of the image one flat grey: more than 40 % of the values at
 * or above its top (white) or more than 95 % at or below its bottom (black). Empty when it is fine.
 */
export function saturationWarning(sample: ValueSample, center: number, width: number): string {
  const [below, above] = sample.outside(center - width / 2, center + width / 2);
  const pct = (f: number) => `${Math.round(f * 100)} %`;
  if (above > 0.4) return `This window turns ${pct(above)} of the image white: the values lie above it.`;
  if (below > 0.95) return `This window turns ${pct(below)} of the image black: the values lie below it.`;
  return "";
}

/** The window in the metadata (DICOM Window Center / Width), if any. */
export function fileWindowOf(meta: Record<string, unknown> | undefined): [number, number] | null {
  const c = Number(meta?.["window_center"]);
  const w = Number(meta?.["window_width"]);
  return Number.isFinite(c) && Number.isFinite(w) && w > 0 ? [c, w] : null;
}

/** The unit of the values (HU for CT), from the result's metadata. */
export function unitOf(meta: Record<string, unknown> | undefined): string {
  const u = meta?.["units"];
  return typeof u === "string" ? u : "";
}

export function fmtNumber(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return "";
  if (Math.abs(n) >= 1000) return String(Math.round(n));
  const f = 10 ** digits;
  return String(Math.round(n * f) / f);
}
