// 2D result viewer on a canvas, in real units where the platform gives them: a 2D DICOM result and
// its input come as float NIfTI slices (HU, ...); PNG/JPEG results and inputs are read as their
// pixel values. Window/level (presets by modality, C/W boxes, right-drag or the W/L tool, reset),
// zoom (wheel, + / -), pan (drag, arrows), a before/after slider that uncovers the input over the
// result (both on one transform and one window), a hover readout (pixel, position in mm, value
// with its unit) as page text, and measurements (length, angle, rectangle and ellipse regions).

import { describe as describeMeasurement, type Measurement, type MeasurementList, regionStats, type Tool } from "./measurements";
import { pixelArea, type Plane, stepLength, toWorld } from "./nifti";
import type { KeyHandler } from "./shortcuts";
import { h, nextId } from "./util";
import { fileWindowOf, fmtNumber, saturationWarning, unitOf, ValueSample, type WindowChoice, windowChoices } from "./windowing";

export interface PlaneSource {
  /** Loads the values. */
  load: (signal: AbortSignal) => Promise<Plane>;
  /** File name shown in the page (data-after-src / data-before-src) and in measurements. */
  name: string;
  /** Real units (a NIfTI of values) rather than display pixels. */
  real: boolean;
}

export interface Viewer2DOptions {
  after: PlaneSource;
  /** The input to compare against (a promise: it may need fetching first), or null. */
  before: Promise<PlaneSource | null> | null;
  alt: string;
  meta: Record<string, unknown>;
  measurements: MeasurementList;
  /** The task's input file, to tag measurements. */
  file: string;
}

export interface Viewer2D {
  el: HTMLElement;
  keys: KeyHandler;
  destroy(): void;
}

type DragTool = "pan" | "wl" | Tool;
const TOOLS: [DragTool, string, string][] = [
  ["pan", "Pan", "Drag to pan (Esc)"],
  ["wl", "W/L", "Drag to change the window: up/down level, left/right width (w)"],
  ["length", "Length", "Drag a line to measure its length (l)"],
  ["angle", "Angle", "Drag the first arm, then click the end of the second (g)"],
  ["rect", "Rectangle", "Drag a rectangle: mean, sd, min, max, area (x)"],
  ["ellipse", "Ellipse", "Drag an ellipse: mean, sd, min, max, area (e)"],
];

interface Layer {
  plane: Plane;
  canvas: OffscreenCanvas;
  image: ImageData;
}

export function createViewer2D(opts: Viewer2DOptions): Viewer2D {
  const abort = new AbortController();
  const canvas = h("canvas", { class: "view2d-canvas" });
  const divider = h("div", { class: "divider", hidden: true, "aria-hidden": "true" });
  const tagBefore = h("span", { class: "tag tag-left", hidden: true }, "Before");
  const tagAfter = h("span", { class: "tag tag-right", hidden: true }, "After");
  const status = h("div", { class: "viewer-status", role: "status" }, "Loading image…");
  const viewport = h(
    "div",
    {
      class: "viewport2d",
      tabindex: "0",
      role: "img",
      "aria-label": `${opts.alt}. Wheel or + and - to zoom, drag or arrow keys to pan, 0 to fit, right-drag for the window.`,
      "data-testid": "viewer2d",
    },
    canvas,
    divider,
    tagBefore,
    tagAfter,
    status,
  );

  // --- toolbar: tools, zoom, before/after -------------------------------------------------------
  const toolButtons = new Map<DragTool, HTMLButtonElement>();
  const toolGroup = h("div", { class: "segmented", role: "group", "aria-label": "Tool" });
  for (const [id, label, title] of TOOLS) {
    const b = h("button", { type: "button", class: "small", "aria-pressed": String(id === "pan"), title, "data-tool": id }, label);
    b.addEventListener("click", () => setTool(id));
    toolButtons.set(id, b);
    toolGroup.append(b);
  }
  const sliderId = nextId("ba");
  const slider = h("input", { id: sliderId, type: "range", min: "0", max: "100", step: "1", value: "50", disabled: true });
  const zoomText = h("output", { class: "zoom-text", "aria-live": "off" }, "100 %");
  const btn = (label: string, text: string, fn: () => void) => h("button", { type: "button", class: "small", "aria-label": label, title: label, onclick: fn }, text);
  const zoomGroup = h(
    "span",
    { class: "row tight" },
    btn("Zoom out", "−", () => zoomAt(1 / 1.25)),
    zoomText,
    btn("Zoom in", "+", () => zoomAt(1.25)),
    btn("Fit to view", "Fit", () => fit()),
    btn("Actual pixels (1:1)", "1:1", () => zoomAt(1 / scale)),
  );
  const compareGroup = h("span", { class: "row tight" }, h("label", { for: sliderId, class: "slider-label" }, "Before / after"), slider);

  // --- window ----------------------------------------------------------------------------------
  const presetId = nextId("wl2");
  const cId = nextId("wc2");
  const wId = nextId("ww2");
  const invId = nextId("inv");
  const preset = h("select", { id: presetId });
  const center = h("input", { id: cId, type: "number", step: "any", class: "num" });
  const width = h("input", { id: wId, type: "number", step: "any", min: "0", class: "num" });
  const invert = h("input", { id: invId, type: "checkbox" });
  const reset = h("button", { type: "button", class: "small secondary", title: "Default window, zoom and tool (r)" }, "Reset");
  const warning = h("span", { class: "sat-warning", role: "status", "data-testid": "saturation" });
  const windowBar = h(
    "div",
    { class: "toolbar" },
    h("span", { class: "pair" }, h("label", { for: presetId }, "Window"), preset),
    h("span", { class: "pair" }, h("label", { for: cId }, "C"), center),
    h("span", { class: "pair" }, h("label", { for: wId }, "W"), width),
    h("span", { class: "field-inline", title: "Show higher values darker (MONOCHROME1)" }, invert, h("label", { for: invId }, "Invert")),
    reset,
    warning,
  );
  const toolbar = h("div", { class: "toolbar" }, toolGroup, zoomGroup, compareGroup);

  const readout = h("div", { class: "readout", "data-testid": "readout", "aria-live": "off" }, h("span", { class: "muted" }, "Point at the image to read its values."));
  const el = h("div", { class: "viewer2d", "data-after-src": opts.after.name }, toolbar, windowBar, viewport, readout);

  // --- state -------------------------------------------------------------------------------------
  let after: Layer | null = null;
  let before: Layer | null = null;
  let sample: ValueSample | null = null;
  let choices: WindowChoice[] = [];
  let lo = 0;
  let hi = 255;
  let scale = 1; // screen px per image px
  let panX = 0;
  let panY = 0;
  let split = 50;
  let tool: DragTool = "pan";
  const valueUnit = opts.after.real ? unitOf(opts.meta) : "";

  function setTool(t: DragTool): void {
    tool = t;
    pending = null;
    for (const [id, b] of toolButtons) b.setAttribute("aria-pressed", String(id === t));
    viewport.dataset.tool = t;
    draw();
  }

  // --- rendering ---------------------------------------------------------------------------------
  function makeLayer(plane: Plane): Layer {
    const c = new OffscreenCanvas(plane.width, plane.height);
    const ctx = c.getContext("2d");
    if (!ctx) throw new Error("no 2D canvas");
    return { plane, canvas: c, image: ctx.createImageData(plane.width, plane.height) };
  }

  function paint(layer: Layer): void {
    const { plane, image } = layer;
    const px = image.data;
    const n = plane.width * plane.height;
    const span = hi - lo || 1;
    const inv = invert.checked;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) {
        const v = plane.data[plane.channels === 1 ? i : i * 3 + c];
        let g = ((v - lo) / span) * 255;
        g = g < 0 ? 0 : g > 255 ? 255 : g;
        px[i * 4 + c] = Math.round(inv ? 255 - g : g);
      }
      px[i * 4 + 3] = 255;
    }
    layer.canvas.getContext("2d")?.putImageData(image, 0, 0);
  }

  function repaint(): void {
    if (after) paint(after);
    if (before) paint(before);
    draw();
  }

  function draw(): void {
    const dpr = window.devicePixelRatio || 1;
    const vw = viewport.clientWidth;
    const vh = viewport.clientHeight;
    if (canvas.width !== Math.round(vw * dpr) || canvas.height !== Math.round(vh * dpr)) {
      canvas.width = Math.round(vw * dpr);
      canvas.height = Math.round(vh * dpr);
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!after) return;
    const { width: aw, height: ah } = after.plane;
    ctx.imageSmoothingEnabled = scale < 2; // magnified: each pixel a sharp square, as radiologists expect
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * panX, dpr * panY);
    ctx.drawImage(after.canvas, 0, 0);
    if (before && !divider.hidden) {
      ctx.save();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.beginPath();
      ctx.rect(0, 0, (split / 100) * vw * dpr, vh * dpr);
      ctx.clip();
      ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * panX, dpr * panY);
      ctx.drawImage(before.canvas, 0, 0, aw, ah); // the input on the result's extent
      ctx.restore();
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    drawMeasurements(ctx);
    zoomText.textContent = `${Math.round(scale * 100)} %`;
    viewport.dataset.view = `${scale},${panX},${panY}`;
  }

  function toScreen(p: number[]): [number, number] {
    return [panX + (p[0] + 0.5) * scale, panY + (p[1] + 0.5) * scale];
  }

  function drawShape(ctx: CanvasRenderingContext2D, tool: Tool, pts: number[][], label: string, live: boolean): void {
    ctx.strokeStyle = live ? "#ffd866" : "#4ade80";
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 1.5;
    const s = pts.map(toScreen);
    ctx.beginPath();
    if (tool === "length" || tool === "angle") {
      ctx.moveTo(s[0][0], s[0][1]);
      for (const q of s.slice(1)) ctx.lineTo(q[0], q[1]);
    } else if (tool === "rect") {
      ctx.rect(Math.min(s[0][0], s[1][0]), Math.min(s[0][1], s[1][1]), Math.abs(s[1][0] - s[0][0]), Math.abs(s[1][1] - s[0][1]));
    } else {
      ctx.ellipse((s[0][0] + s[1][0]) / 2, (s[0][1] + s[1][1]) / 2, Math.abs(s[1][0] - s[0][0]) / 2, Math.abs(s[1][1] - s[0][1]) / 2, 0, 0, Math.PI * 2);
    }
    ctx.stroke();
    for (const q of s) ctx.fillRect(q[0] - 2, q[1] - 2, 4, 4);
    if (label) {
      const end = s[s.length - 1];
      ctx.font = "12px system-ui, sans-serif";
      const w = ctx.measureText(label).width;
      ctx.fillStyle = "rgba(0,0,0,0.7)";
      ctx.fillRect(end[0] + 6, end[1] - 8, w + 8, 16);
      ctx.fillStyle = live ? "#ffd866" : "#4ade80";
      ctx.fillText(label, end[0] + 10, end[1] + 4);
    }
  }

  function drawMeasurements(ctx: CanvasRenderingContext2D): void {
    for (const m of opts.measurements.all()) {
      if (m.file !== opts.file || !(m.where === "result" || m.where === "input")) continue;
      drawShape(ctx, m.tool, m.points, shortLabel(m), false);
    }
    if (pending) drawShape(ctx, pending.tool, pending.points, pending.points.length > 1 ? shortLabel(measure(pending.tool, pending.points)) : "", true);
  }

  // --- geometry helpers -----------------------------------------------------------------------
  function toImage(clientX: number, clientY: number): [number, number] {
    const r = viewport.getBoundingClientRect();
    return [(clientX - r.left - panX) / scale - 0.5, (clientY - r.top - panY) / scale - 0.5];
  }

  function valueAt(layer: Layer | null, col: number, row: number): number[] | null {
    if (!layer || !after) return null;
    // the input is drawn on the result's extent: scale the pixel position
    const c = Math.floor(((col + 0.5) * layer.plane.width) / after.plane.width);
    const r = Math.floor(((row + 0.5) * layer.plane.height) / after.plane.height);
    const p = layer.plane;
    if (c < 0 || r < 0 || c >= p.width || r >= p.height) return null;
    const i = r * p.width + c;
    return p.channels === 1 ? [p.data[i]] : [p.data[i * 3], p.data[i * 3 + 1], p.data[i * 3 + 2]];
  }

  function fmtValue(v: number[] | null): string {
    if (!v) return "";
    const u = valueUnit ? ` ${valueUnit}` : "";
    return v.length === 1 ? `${fmtNumber(v[0], 3)}${u}` : `R ${v[0]} G ${v[1]} B ${v[2]}`;
  }

  /** A measurement from its points, rounded first (to 1/100 pixel) so that the exported points
   *  give back the exported numbers. */
  function measure(t: Tool, raw: number[][]): Omit<Measurement, "id" | "created"> {
    const pts = raw.map((p) => p.map((x) => Math.round(x * 100) / 100));
    const plane = after!.plane;
    const lengthUnit = plane.spatialUnit;
    const base = { tool: t, file: opts.file, where: "result", lengthUnit, valueUnit, points: pts };
    if (t === "length") return { ...base, length: stepLength(plane, pts[1][0] - pts[0][0], pts[1][1] - pts[0][1]) };
    if (t === "angle") {
      if (pts.length < 3) return { ...base, angle: NaN };
      const a = world(pts[0], plane);
      const b = world(pts[1], plane);
      const c = world(pts[2], plane);
      const u = a.map((x, i) => x - b[i]);
      const v = c.map((x, i) => x - b[i]);
      const dot = u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
      const cos = dot / (Math.hypot(...u) * Math.hypot(...v));
      return { ...base, angle: (Math.acos(Math.max(-1, Math.min(1, cos))) * 180) / Math.PI };
    }
    const values = regionValues(t, pts);
    const stats = regionStats(values);
    return { ...base, ...stats, area: stats.pixels * pixelArea(plane) };
  }

  /** The values of the result's grey channel (luminance for colour) whose pixel centres are inside. */
  function regionValues(t: Tool, pts: number[][]): number[] {
    const p = after!.plane;
    const [c0, c1] = [Math.min(pts[0][0], pts[1][0]), Math.max(pts[0][0], pts[1][0])];
    const [r0, r1] = [Math.min(pts[0][1], pts[1][1]), Math.max(pts[0][1], pts[1][1])];
    const out: number[] = [];
    const cx = (c0 + c1) / 2;
    const cy = (r0 + r1) / 2;
    const rx = (c1 - c0) / 2;
    const ry = (r1 - r0) / 2;
    for (let r = Math.max(0, Math.ceil(r0)); r <= Math.min(p.height - 1, Math.floor(r1)); r++) {
      for (let c = Math.max(0, Math.ceil(c0)); c <= Math.min(p.width - 1, Math.floor(c1)); c++) {
        if (t === "ellipse" && (rx <= 0 || ry <= 0 || ((c - cx) / rx) ** 2 + ((r - cy) / ry) ** 2 > 1)) continue;
        const i = r * p.width + c;
        out.push(p.channels === 1 ? p.data[i] : 0.2126 * p.data[i * 3] + 0.7152 * p.data[i * 3 + 1] + 0.0722 * p.data[i * 3 + 2]);
      }
    }
    return out;
  }

  // --- window ----------------------------------------------------------------------------------
  function setWindow(c: number, w: number, fromChoice = false): void {
    if (!Number.isFinite(c) || !Number.isFinite(w) || w <= 0) return;
    lo = c - w / 2;
    hi = c + w / 2;
    center.value = fmtNumber(c);
    width.value = fmtNumber(w);
    if (!fromChoice) preset.value = "custom";
    warning.textContent = sample ? saturationWarning(sample, c, w) : "";
    el.dataset.window = `${c},${w}`;
    repaint();
  }

  function applyChoice(id: string): void {
    const ch = choices.find((x) => x.id === id);
    if (!ch) return;
    preset.value = id;
    setWindow(ch.center, ch.width, true);
  }

  function fillChoices(): void {
    const meta = opts.meta;
    const list = opts.after.real ? windowChoices(meta["modality"], sample!, fileWindowOf(meta)) : windowChoices(null, sample!, null);
    if (!opts.after.real) list.unshift({ id: "display", label: "Image 0–255", center: 127.5, width: 255, hint: "the image's own grey levels" });
    choices = list;
    preset.replaceChildren(
      ...list.map((ch, i) => h("option", { value: ch.id, title: `${ch.hint} (key ${i + 1})` }, i < 9 ? `${i + 1}. ${ch.label}` : ch.label)),
      h("option", { value: "custom" }, "Custom"),
    );
    el.dataset.presets = list.map((c) => c.id).join(" ");
  }

  preset.addEventListener("change", () => applyChoice(preset.value));
  for (const inp of [center, width]) inp.addEventListener("change", () => setWindow(Number(center.value), Number(width.value)));
  invert.addEventListener("change", repaint);
  const doReset = () => {
    if (choices[0]) applyChoice(choices[0].id);
    setTool("pan");
    fit();
  };
  reset.addEventListener("click", doReset);

  // --- zoom and pan ------------------------------------------------------------------------------
  function fit(): void {
    if (!after) return;
    const vw = viewport.clientWidth;
    const vh = viewport.clientHeight;
    scale = Math.min(vw / after.plane.width, vh / after.plane.height);
    panX = (vw - after.plane.width * scale) / 2;
    panY = (vh - after.plane.height * scale) / 2;
    draw();
  }

  function zoomAt(factor: number, cx = viewport.clientWidth / 2, cy = viewport.clientHeight / 2): void {
    const next = Math.min(64, Math.max(0.05, scale * factor));
    const f = next / scale;
    panX = cx - (cx - panX) * f;
    panY = cy - (cy - panY) * f;
    scale = next;
    draw();
  }

  viewport.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      const r = viewport.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015)), e.clientX - r.left, e.clientY - r.top);
    },
    { passive: false },
  );

  // --- pointer -----------------------------------------------------------------------------------
  let drag: { id: number; x: number; y: number; mode: DragTool; button: number } | null = null;
  let pending: { tool: Tool; points: number[][]; armed: boolean } | null = null;

  viewport.addEventListener("contextmenu", (e) => e.preventDefault());
  viewport.addEventListener("pointerdown", (e) => {
    if (!after || (e.button !== 0 && e.button !== 2)) return;
    viewport.focus({ preventScroll: true });
    const mode: DragTool = e.button === 2 ? "wl" : tool;
    drag = { id: e.pointerId, x: e.clientX, y: e.clientY, mode, button: e.button };
    viewport.setPointerCapture(e.pointerId);
    viewport.classList.add("dragging");
    const p = toImage(e.clientX, e.clientY);
    if (mode === "length" || mode === "rect" || mode === "ellipse") pending = { tool: mode, points: [p, p], armed: false };
    else if (mode === "angle") {
      if (pending?.tool === "angle" && pending.armed) {
        pending.points[2] = p; // the second arm's end
      } else pending = { tool: "angle", points: [p, p], armed: false };
    }
  });
  viewport.addEventListener("pointermove", (e) => {
    hover(e.clientX, e.clientY);
    if (pending?.tool === "angle" && pending.armed && !drag) {
      pending.points[2] = toImage(e.clientX, e.clientY);
      draw();
      return;
    }
    if (!drag || drag.id !== e.pointerId) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    if (drag.mode === "pan") {
      panX += dx;
      panY += dy;
      draw();
    } else if (drag.mode === "wl") {
      const span = sample ? Math.max(1e-6, sample.max - sample.min) : 255;
      const k = span / 400;
      const w = Math.max(k, hi - lo + dx * k * 2);
      const c = (lo + hi) / 2 - dy * k; // up: brighter (level down)
      setWindow(c, w);
    } else if (pending) {
      const p = toImage(e.clientX, e.clientY);
      if (pending.tool === "angle" && pending.armed) pending.points[2] = p;
      else pending.points[1] = p;
      draw();
    }
  });
  const endDrag = (e: PointerEvent) => {
    if (!drag || drag.id !== e.pointerId) return;
    const mode = drag.mode;
    drag = null;
    viewport.classList.remove("dragging");
    if (!pending || mode === "pan" || mode === "wl") return;
    const pts = pending.points;
    const moved = Math.hypot(pts[1][0] - pts[0][0], pts[1][1] - pts[0][1]) * scale > 3;
    if (pending.tool === "angle") {
      if (!pending.armed) {
        if (moved) pending.armed = true; // now click the end of the second arm
        else pending = null;
        draw();
        return;
      }
      if (pts.length === 3) {
        opts.measurements.add(measure("angle", pts));
        pending = null;
      }
      return;
    }
    if (moved) opts.measurements.add(measure(pending.tool, pts));
    pending = null;
    draw();
  };
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);
  viewport.addEventListener("dblclick", () => fit());
  viewport.addEventListener("pointerleave", () => {
    if (!drag) readout.dataset.inside = "false";
  });

  function hover(clientX: number, clientY: number): void {
    if (!after) return;
    const [x, y] = toImage(clientX, clientY);
    const col = Math.round(x);
    const row = Math.round(y);
    const p = after.plane;
    if (col < 0 || row < 0 || col >= p.width || row >= p.height) {
      readout.dataset.inside = "false";
      return;
    }
    const v = valueAt(after, col, row);
    const vb = before ? valueAt(before, col, row) : null;
    const world = toWorld(p, col, row);
    const parts: (HTMLElement | string)[] = [h("span", { "data-field": "pixel" }, `Pixel column ${col}, row ${row}`)];
    if (world) {
      parts.push(h("span", { "data-field": "ras" }, `RAS ${world.map((n) => fmtNumber(n, 1)).join(", ")} mm`));
      parts.push(h("span", { "data-field": "lps" }, `LPS ${[-world[0], -world[1], world[2]].map((n) => fmtNumber(n, 1)).join(", ")} mm`));
    }
    parts.push(h("span", { "data-field": "value" }, `Result ${fmtValue(v)}`));
    if (vb) parts.push(h("span", { "data-field": "input-value" }, `Input ${fmtValue(vb)}`));
    readout.replaceChildren(...parts);
    readout.dataset.inside = "true";
    readout.dataset.col = String(col);
    readout.dataset.row = String(row);
    readout.dataset.value = v && v.length === 1 ? String(v[0]) : "";
  }

  // --- keys ----------------------------------------------------------------------------------------
  const keys: KeyHandler = (e) => {
    if (!after) return false;
    const step = 40;
    const map: Record<string, () => void> = {
      "+": () => zoomAt(1.25),
      "=": () => zoomAt(1.25),
      "-": () => zoomAt(1 / 1.25),
      "0": () => fit(),
      ArrowLeft: () => ((panX += step), draw()),
      ArrowRight: () => ((panX -= step), draw()),
      ArrowUp: () => ((panY += step), draw()),
      ArrowDown: () => ((panY -= step), draw()),
      r: doReset,
      w: () => setTool("wl"),
      l: () => setTool("length"),
      g: () => setTool("angle"),
      e: () => setTool("ellipse"),
      x: () => setTool("rect"),
      Escape: () => setTool("pan"),
    };
    if (/^[1-9]$/.test(e.key)) {
      const ch = choices[Number(e.key) - 1];
      if (!ch) return false;
      applyChoice(ch.id);
      return true;
    }
    const fn = map[e.key];
    if (!fn) return false;
    fn();
    return true;
  };

  // --- before/after ---------------------------------------------------------------------------------
  function applySplit(): void {
    divider.style.left = `${split}%`;
    el.dataset.split = String(split);
    draw();
  }
  slider.addEventListener("input", () => {
    split = Number(slider.value);
    applySplit();
  });

  const ro = new ResizeObserver(() => {
    if (after) fit();
  });

  function failed(text: string): void {
    status.hidden = false;
    status.textContent = text;
    status.classList.add("error");
    el.dataset.state = "error";
    // Nothing to window, zoom or compare: no "0 %" and no before/after chrome over the error.
    toolbar.hidden = true;
    windowBar.hidden = true;
    for (const x of [divider, tagBefore, tagAfter]) x.hidden = true;
    viewport.setAttribute("aria-label", `${opts.alt}: ${text}`);
  }

  opts.after
    .load(abort.signal)
    .then((plane) => {
      if (abort.signal.aborted) return;
      after = makeLayer(plane);
      sample = new ValueSample(plane.data);
      fillChoices();
      invert.checked = opts.after.real && opts.meta["photometric_interpretation"] === "MONOCHROME1";
      status.hidden = true;
      el.dataset.state = "ready";
      el.dataset.unit = valueUnit;
      el.dataset.spatialUnit = plane.spatialUnit;
      fit();
      applyChoice(choices[0].id);
      ro.observe(viewport);
    })
    .catch((e) => {
      if (!abort.signal.aborted) failed(`The result image could not be loaded. ${(e as Error).message ?? ""}`.trim());
    });

  const noCompare = "The input cannot be shown by a browser, so there is nothing to compare.";
  if (opts.before) {
    opts.before
      .then(async (src) => {
        if (!src) {
          slider.title = noCompare;
          return;
        }
        const plane = await src.load(abort.signal);
        // wait for the result: the input is drawn on its extent
        while (!after && el.dataset.state !== "error" && !abort.signal.aborted) await new Promise((r) => setTimeout(r, 50));
        if (abort.signal.aborted || el.dataset.state === "error") return;
        before = makeLayer(plane);
        paint(before);
        divider.hidden = false;
        tagBefore.hidden = false;
        tagAfter.hidden = false;
        slider.disabled = false;
        el.dataset.beforeSrc = src.name;
        el.dataset.compare = "ready";
        applySplit();
      })
      .catch(() => {
        slider.title = "The input image could not be loaded.";
      });
  } else {
    slider.title = noCompare;
  }

  opts.measurements.onChange = () => draw();

  return {
    el,
    keys,
    destroy() {
      abort.abort();
      ro.disconnect();
    },
  };
}

function world(p: number[], plane: Plane): number[] {
  const w = toWorld(plane, p[0], p[1]);
  return w ?? [p[0], p[1], 0];
}

function shortLabel(m: Omit<Measurement, "id" | "created">): string {
  if (m.tool === "length") return `${fmtNumber(m.length ?? NaN, 1)} ${m.lengthUnit}`;
  if (m.tool === "angle") return Number.isFinite(m.angle) ? `${fmtNumber(m.angle ?? NaN, 1)}°` : "";
  return describeMeasurement(m as Measurement).replace(/^(Rectangle|Ellipse): /, "").split(", area")[0];
}
