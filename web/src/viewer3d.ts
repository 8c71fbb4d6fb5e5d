// Volume viewer on NiiVue (WebGL2): axial / coronal / sagittal, multiplanar as a 2x2 grid of equal
// tiles (axial, coronal, sagittal, 3D render) at one mm scale, 3D; linked crosshair; slices by
// wheel, arrow / Page / Home / End keys or the slider; orientation labels; a frame slider for 4D.
// Window/level: presets by modality (CT presets in HU for CT only, percentile windows for all),
// C/W boxes, right-drag (NiiVue's continuous `windowing` mode), a saturation warning. The result
// can be overlaid on its input (masks: red, see-through, by default) or shown side by side with it
// (two linked NiiVue instances: same slice, window and zoom). A hover readout (voxel, RAS and LPS
// mm, values with their unit) is page text; length, angle (NiiVue's tools) and ellipse region
// statistics go to the job's measurement list.
//
// One viewer (and at most two WebGL contexts) serves the whole page; show() moves it into the
// given container and loads the volumes.

import { DRAG_MODE, MULTIPLANAR_TYPE, Niivue, SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
import type { MeasurementList } from "./measurements";
import { regionStats } from "./measurements";
import type { KeyHandler } from "./shortcuts";
import { h, nextId } from "./util";
import { fileWindowOf, fmtNumber, saturationWarning, unitOf, ValueSample, type WindowChoice, windowChoices } from "./windowing";

export interface VolumeSpec {
  url: string;
  /** File name; NiiVue picks the format from it (signed URLs end in ?token=...). */
  name: string;
  headers?: Record<string, string>;
}

export interface ShowOptions {
  output: VolumeSpec;
  /** The input volume (a NIfTI input, or the processor's role "input" .nii.gz of a DICOM
   *  volume): the base of the overlay, or the left side of the side-by-side view. */
  input?: VolumeSpec | null;
  /** The output is a label/mask volume (threshold): red overlay, window 0.5..1, overlaid on the
   *  input by default. Other results are shown alone in grey by default (overlay off). */
  isMask?: boolean;
  /** The result's metadata: modality (presets), units (readout), window. */
  meta?: Record<string, unknown>;
  measurements: MeasurementList;
  /** The task's input file, to tag measurements. */
  file: string;
}

const VIEWS: [string, SLICE_TYPE, string][] = [
  ["Axial", SLICE_TYPE.AXIAL, "a"],
  ["Coronal", SLICE_TYPE.CORONAL, "c"],
  ["Sagittal", SLICE_TYPE.SAGITTAL, "s"],
  ["Multiplanar", SLICE_TYPE.MULTIPLANAR, "m"],
  ["3D", SLICE_TYPE.RENDER, "v"],
];
const PLANE_NAMES = ["axial", "coronal", "sagittal"];
const CROSSHAIR_PX = 1.5; // crosshair line width on screen (CSS px), whatever the zoom
const FAVOURITE_COLORMAPS = ["gray", "hot", "warm", "cool", "plasma", "viridis", "inferno", "red", "green", "blue", "winter"];
/** Overlay defaults: a mask in red, half see-through; an image in "hot" (dark values clear), light. */
const MASK_OVERLAY = { colormap: "red", opacity: 0.5 };
const IMAGE_OVERLAY = { colormap: "hot", opacity: 0.3 };

type NV = Niivue;
type Vol = NV["volumes"][number];

function niivue(canvas: HTMLCanvasElement): Promise<NV> {
  const nv = new Niivue({
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: true,
    crosshairWidth: 1,
    crosshairWidthUnit: "mm",
    crosshairColor: [1, 0.2, 0.2, 0.8],
    isColorbar: false,
    isRadiologicalConvention: true,
    dragAndDropEnabled: false,
    logLevel: "warn",
    loadingText: "",
    multiplanarLayout: MULTIPLANAR_TYPE.GRID,
    multiplanarShowRender: SHOW_RENDER.ALWAYS,
    isOrientationTextVisible: true,
    showAllOrientationMarkers: true,
    // the orientation letters sit on the image's edges: bright amber and a little larger than
    // NiiVue's mid-grey 13 px, so that they stand out on black and on grey anatomy alike
    fontColor: [1, 0.78, 0.2, 1],
    fontMinPx: 16,
    // the page's own shortcuts use these letters
    viewModeHotKey: "",
    clipPlaneHotKey: "",
    cycleClipPlaneHotKey: "",
  });
  nv.opts.dragMode = DRAG_MODE.windowing; // right button: continuous window/level
  nv.opts.dragModePrimary = DRAG_MODE.crosshair;
  return nv.attachToCanvas(canvas).then(() => nv);
}

class VolumeViewer {
  readonly el: HTMLElement;
  private nv: NV | null = null;
  private nvB: NV | null = null; // the input, side by side
  private ready: Promise<NV> | null = null;
  private canvas: HTMLCanvasElement;
  private canvasB: HTMLCanvasElement;
  private stage: HTMLElement;
  private paneB: HTMLElement;
  private status: HTMLElement;
  private viewButtons: HTMLButtonElement[] = [];
  private sideBySide: HTMLButtonElement;
  private sliceSlider: HTMLInputElement;
  private sliceText: HTMLOutputElement;
  private zoomText: HTMLOutputElement;
  private readout: HTMLElement;
  private crosshair: HTMLInputElement;
  private baseColormap: HTMLSelectElement;
  private preset: HTMLSelectElement;
  private center: HTMLInputElement;
  private width: HTMLInputElement;
  private warning: HTMLElement;
  private leftDrag: HTMLSelectElement;
  private overlayRow: HTMLElement;
  private overlayToggle: HTMLInputElement;
  private overlayColormap: HTMLSelectElement;
  private opacity: HTMLInputElement;
  private radiological: HTMLInputElement;
  private frameLabel: HTMLLabelElement;
  private frameSlider: HTMLInputElement;
  private frameText: HTMLOutputElement;
  /** The user's window ([center, width]) and colormap, kept across overlay toggles / reloads. */
  private userWindow: [number, number] | null = null;
  private userPreset = "";
  private userColormap = "gray";
  private dragSync = 0;
  private sliceType: SLICE_TYPE = SLICE_TYPE.MULTIPLANAR;
  /** The plane that keys and the slider move (the last tile pointed at in multiplanar). */
  private plane: 0 | 1 | 2 = 0;
  private choices: WindowChoice[] = [];
  private sample: ValueSample | null = null;
  private current: ShowOptions | null = null;
  private loadSeq = 0;

  constructor() {
    this.canvas = h("canvas", { class: "nv-canvas nv-main", tabindex: "0", "aria-label": "Volume view" });
    this.canvasB = h("canvas", { class: "nv-canvas", tabindex: "0", "aria-label": "Input volume view" });
    this.status = h("div", { class: "viewer-status", role: "status" }, "Loading volume…");
    this.paneB = h("div", { class: "nv-pane nv-pane-input", hidden: true }, this.canvasB, h("span", { class: "tag tag-left" }, "Input"));
    const paneA = h("div", { class: "nv-pane" }, this.canvas, h("span", { class: "tag tag-right nv-result-tag", hidden: true }, "Result"));
    this.stage = h("div", { class: "nv-stage", "data-testid": "niivue-stage" }, this.paneB, paneA, this.status);

    const viewGroup = h("div", { class: "segmented", role: "group", "aria-label": "View" });
    for (const [label, st, key] of VIEWS) {
      const b = h("button", { type: "button", class: "small", "aria-pressed": "false", "data-view": label, title: `${label} (${key})` }, label);
      b.addEventListener("click", () => this.setView(st));
      this.viewButtons.push(b);
      viewGroup.append(b);
    }
    this.sideBySide = h("button", { type: "button", class: "small", "aria-pressed": "false", title: "Input and result side by side, linked (b)", hidden: true }, "Side by side");
    this.sideBySide.addEventListener("click", () => void this.setSideBySide(this.sideBySide.getAttribute("aria-pressed") !== "true"));

    const sliceId = nextId("slice");
    this.sliceSlider = h("input", { id: sliceId, type: "range", min: "0", max: "0", step: "1", value: "0" });
    this.sliceText = h("output", { for: sliceId, class: "slice-text" }, "");
    this.sliceSlider.addEventListener("input", () => this.gotoSlice(Number(this.sliceSlider.value)));

    // Zoom of the 2D slices (NiiVue zooms by the wheel only while the right button pans, and the
    // right button sets the window here): buttons, + - 0, and the wheel in "Pan/zoom" mode.
    this.zoomText = h("output", { class: "zoom-text", "aria-live": "off" }, "100 %");
    const zbtn = (label: string, text: string, fn: () => void) => h("button", { type: "button", class: "small", "aria-label": label, title: label, onclick: fn }, text);
    const zoomGroup = h(
      "span",
      { class: "row tight" },
      zbtn("Zoom out (-)", "−", () => this.zoomBy(1 / 1.25)),
      this.zoomText,
      zbtn("Zoom in (+)", "+", () => this.zoomBy(1.25)),
      zbtn("Fit (0)", "Fit", () => this.setZoom(1)),
    );

    const chId = nextId("crosshair");
    this.crosshair = h("input", { id: chId, type: "checkbox", checked: true });
    this.crosshair.addEventListener("change", () => this.each((nv) => this.crosshairWidth(nv)));

    const cmId = nextId("cmap");
    this.baseColormap = h("select", { id: cmId });
    this.baseColormap.addEventListener("change", () => this.applyBaseColormap());

    const presetId = nextId("wl");
    this.preset = h("select", { id: presetId });
    this.preset.addEventListener("change", () => this.applyChoice(this.preset.value));

    const cId = nextId("wc");
    const wId = nextId("ww");
    this.center = h("input", { id: cId, type: "number", step: "any", class: "num" });
    this.width = h("input", { id: wId, type: "number", step: "any", min: "0", class: "num" });
    for (const inp of [this.center, this.width])
      inp.addEventListener("change", () => {
        this.preset.value = "custom";
        this.setWindow(Number(this.center.value), Number(this.width.value));
      });
    this.warning = h("span", { class: "sat-warning", role: "status", "data-testid": "saturation" });

    const ldId = nextId("drag");
    this.leftDrag = h(
      "select",
      { id: ldId },
      h("option", { value: String(DRAG_MODE.crosshair) }, "Crosshair"),
      h("option", { value: String(DRAG_MODE.windowing) }, "Window/level"),
      h("option", { value: String(DRAG_MODE.contrast) }, "Window from region"),
      h("option", { value: String(DRAG_MODE.pan) }, "Pan/zoom"),
      h("option", { value: String(DRAG_MODE.measurement) }, "Length"),
      h("option", { value: String(DRAG_MODE.angle) }, "Angle"),
      h("option", { value: String(DRAG_MODE.roiSelection) }, "Ellipse region"),
    );
    this.leftDrag.addEventListener("change", () => this.setTool(Number(this.leftDrag.value) as DRAG_MODE));

    const ovId = nextId("ov");
    const ocId = nextId("ovcm");
    const opId = nextId("opacity");
    this.overlayToggle = h("input", { id: ovId, type: "checkbox" });
    this.overlayToggle.addEventListener("change", () => this.current && void this.load(this.current, true));
    this.overlayColormap = h("select", { id: ocId });
    this.overlayColormap.addEventListener("change", () => this.applyOverlayColormap());
    this.opacity = h("input", { id: opId, type: "range", min: "0", max: "1", step: "0.05", value: "0.5" });
    this.opacity.addEventListener("input", () => {
      if (this.nv && this.nv.volumes.length > 1) this.nv.setOpacity(1, Number(this.opacity.value));
    });
    this.overlayRow = h(
      "span",
      { class: "row tight overlay-row", hidden: true },
      h("span", { class: "field-inline" }, this.overlayToggle, h("label", { for: ovId }, "Overlay result on input")),
      h("span", { class: "pair" }, h("label", { for: ocId }, "Overlay colormap"), this.overlayColormap),
      h("span", { class: "pair" }, h("label", { for: opId }, "Opacity"), this.opacity),
    );

    const radId = nextId("radio");
    this.radiological = h("input", { id: radId, type: "checkbox", checked: true });
    this.radiological.addEventListener("change", () => this.each((nv) => nv.setRadiologicalConvention(this.radiological.checked)));

    const frId = nextId("frame");
    this.frameSlider = h("input", { id: frId, type: "range", min: "0", max: "0", step: "1", value: "0", hidden: true });
    this.frameText = h("output", { for: frId, class: "slice-text", hidden: true }, "");
    this.frameLabel = h("label", { for: frId, hidden: true }, "Frame");
    this.frameSlider.addEventListener("input", () => this.setFrame(Number(this.frameSlider.value)));

    this.readout = h("div", { class: "readout", "data-testid": "readout", "aria-live": "off" }, h("span", { class: "muted" }, "Point at a slice to read its position and values."));

    const hintId = nextId("nvhint");
    this.canvas.setAttribute("aria-describedby", hintId);
    this.el = h(
      "div",
      { class: "viewer3d", "data-state": "idle" },
      h(
        "div",
        { class: "toolbar" },
        viewGroup,
        this.sideBySide,
        h("span", { class: "pair" }, h("label", { for: sliceId }, "Slice"), this.sliceSlider, this.sliceText),
        zoomGroup,
        h("span", { class: "pair" }, this.frameLabel, this.frameSlider, this.frameText),
        h("span", { class: "field-inline" }, this.crosshair, h("label", { for: chId }, "Crosshair")),
        h("span", { class: "field-inline", title: "Radiological convention: the patient's right on the left of the screen" }, this.radiological, h("label", { for: radId }, "Radiological")),
      ),
      h(
        "div",
        { class: "toolbar" },
        h("span", { class: "pair" }, h("label", { for: presetId }, "Window"), this.preset),
        h("span", { class: "pair" }, h("label", { for: cId }, "C"), this.center),
        h("span", { class: "pair" }, h("label", { for: wId }, "W"), this.width),
        h("span", { class: "pair" }, h("label", { for: cmId }, "Colormap"), this.baseColormap),
        h("span", { class: "pair" }, h("label", { for: ldId }, "Left drag"), this.leftDrag),
        this.overlayRow,
      ),
      this.warning,
      this.stage,
      h(
        "div",
        { class: "nv-foot" },
        this.readout,
        h("span", { class: "hint", id: hintId }, "Right-drag: window · wheel or ↑ ↓: slices · + −: zoom · ? shortcuts"),
      ),
    );
    this.setupHover(this.canvas);
    this.setupHover(this.canvasB);
    for (const pane of [paneA, this.paneB])
      pane.addEventListener(
        "wheel",
        (e) => {
          if (Number(this.leftDrag.value) !== DRAG_MODE.pan || this.sliceType === SLICE_TYPE.RENDER) return;
          e.preventDefault();
          e.stopPropagation(); // NiiVue's own wheel (on the canvas) would move the slice
          this.zoomBy(e.deltaY < 0 ? 1.25 : 1 / 1.25);
        },
        { capture: true, passive: false },
      );
    new ResizeObserver(() =>
      this.each((nv) => {
        this.layoutGrid(nv);
        this.crosshairWidth(nv);
      }),
    ).observe(this.stage);
  }

  private each(fn: (nv: NV) => void): void {
    if (this.nv) fn(this.nv);
    if (this.nvB && !this.paneB.hidden) fn(this.nvB);
  }

  private init(): Promise<NV> {
    if (!this.ready) {
      this.ready = (async () => {
        const nv = await niivue(this.canvas);
        // Developer hook: open the app with ?debug to reach the viewer from the console.
        if (new URLSearchParams(location.search).has("debug")) (window as unknown as { niivue: NV }).niivue = nv;
        nv.onLocationChange = () => this.syncSlice();
        // "Window from region" drag and the double-click reset change volumes[0] and say so;
        // the continuous windowing drag does not, so the canvas' own mouse moves are watched.
        nv.onIntensityChange = (vol) => {
          if (vol === nv.volumes[0]) this.windowFromBase();
        };
        nv.onMeasurementCompleted = (m) => {
          this.current?.measurements.add({
            tool: "length",
            file: this.current.file,
            where: this.sliceLabel(m.sliceType, m.startMM),
            length: m.distance,
            lengthUnit: "mm",
            valueUnit: "",
            points: [Array.from(m.startMM), Array.from(m.endMM)].map(round2),
          });
        };
        nv.onAngleCompleted = (a) => {
          this.current?.measurements.add({
            tool: "angle",
            file: this.current.file,
            where: this.sliceLabel(a.sliceType, a.firstLineMM.start),
            angle: a.angle,
            lengthUnit: "mm",
            valueUnit: "",
            points: [a.firstLineMM.start, a.firstLineMM.end, a.secondLineMM.start, a.secondLineMM.end].map((p) => round2(Array.from(p))),
          });
        };
        nv.onDragRelease = (p) => {
          if (nv.opts.dragModePrimary === DRAG_MODE.roiSelection && this.current) this.regionFromDrag(p);
        };
        const onDrag = (e: MouseEvent) => {
          if (!e.buttons || this.dragSync) return;
          this.dragSync = requestAnimationFrame(() => {
            this.dragSync = 0;
            if (nv.getCurrentDragMode() === DRAG_MODE.windowing) this.windowFromBase();
          });
        };
        this.canvas.addEventListener("mousemove", onDrag);
        this.canvas.addEventListener("mouseup", () => {
          if (nv.volumes.length && this.windowChangedByDrag()) this.windowFromBase();
        });
        const maps = nv.colormaps().filter((m) => !m.startsWith("$") && !m.startsWith("_"));
        const ordered = [...FAVOURITE_COLORMAPS.filter((m) => maps.includes(m)), ...maps.filter((m) => !FAVOURITE_COLORMAPS.includes(m)).sort()];
        for (const sel of [this.baseColormap, this.overlayColormap]) for (const m of ordered) sel.append(h("option", { value: m }, m));
        this.nv = nv;
        return nv;
      })();
    }
    return this.ready;
  }

  /** Moves the viewer into `container` and shows the volumes. */
  async show(container: HTMLElement, opts: ShowOptions): Promise<void> {
    this.loadSeq++; // a load still running for the previous volume no longer counts
    this.el.dataset.state = "loading";
    delete this.el.dataset.volumes;
    container.append(this.el);
    this.current = opts;
    this.overlayRow.hidden = !opts.input;
    this.sideBySide.hidden = !opts.input;
    this.paneB.hidden = true;
    this.sideBySide.setAttribute("aria-pressed", "false");
    this.stage.classList.remove("split");
    // A mask means something only on its input; any other result is first seen alone, in grey.
    this.overlayToggle.checked = !!opts.isMask;
    this.opacity.value = String(opts.isMask ? MASK_OVERLAY.opacity : IMAGE_OVERLAY.opacity);
    this.userWindow = null;
    this.userPreset = "";
    this.userColormap = "gray";
    const nv = await this.init(); // fills the colormap lists
    nv.setPan2Dxyzmm([0, 0, 0, 1]); // a new result opens fitted
    this.showZoom();
    nv.clearMeasurements();
    nv.clearAngles();
    opts.measurements.onChange = () => {
      if (!opts.measurements.all().length) {
        nv.clearMeasurements();
        nv.clearAngles();
      }
    };
    this.overlayColormap.value = opts.isMask ? MASK_OVERLAY.colormap : IMAGE_OVERLAY.colormap;
    await this.load(opts, false);
  }

  /** Loads the volumes; `keep` keeps the user's window and colormap (overlay toggle, reload). */
  private async load(opts: ShowOptions, keep: boolean): Promise<void> {
    const seq = ++this.loadSeq;
    this.el.dataset.state = "loading";
    delete this.el.dataset.volumes;
    this.status.hidden = false;
    this.status.classList.remove("error");
    this.status.textContent = "Loading volume…";
    try {
      const nv = await this.init();
      const overlay = !!opts.input && this.overlayToggle.checked;
      const list: Parameters<NV["loadVolumes"]>[0] = [];
      if (overlay && opts.input) {
        list.push({ url: opts.input.url, name: opts.input.name, headers: opts.input.headers, colormap: "gray" });
        list.push({
          url: opts.output.url,
          name: opts.output.name,
          headers: opts.output.headers,
          colormap: this.overlayColormap.value || (opts.isMask ? MASK_OVERLAY.colormap : IMAGE_OVERLAY.colormap),
          opacity: Number(this.opacity.value),
          ...(opts.isMask ? { cal_min: 0.5, cal_max: 1 } : {}),
        });
      } else {
        list.push({ url: opts.output.url, name: opts.output.name, headers: opts.output.headers, colormap: "gray" });
      }
      await nv.loadVolumes(list);
      if (seq !== this.loadSeq) return;
      if (!nv.volumes.length) throw new Error("no volume was loaded");
      const base = nv.volumes[0];
      this.sample = new ValueSample(volumeValues(base));
      this.fillChoices(opts);
      if (keep && this.userColormap !== "gray") nv.setColormap(base.id, this.userColormap); // resets the window ...
      this.baseColormap.value = keep ? this.userColormap : "gray";
      if (keep && this.userWindow) {
        this.preset.value = this.userPreset;
        this.setWindow(...this.userWindow); // ... so it is set after
        this.preset.value = this.userPreset;
      } else {
        this.applyChoice(this.choices[0].id);
      }
      nv.setRadiologicalConvention(this.radiological.checked);
      this.setupFrames();
      this.crosshairWidth(nv);
      nv.opts.dragModePrimary = Number(this.leftDrag.value) as DRAG_MODE;
      this.setView(this.sliceType);
      if (this.sideBySide.getAttribute("aria-pressed") === "true") await this.setSideBySide(true);
      this.status.hidden = true;
      this.showZoom();
      this.el.dataset.state = "ready";
      this.el.dataset.volumes = String(nv.volumes.length);
      this.el.dataset.presets = this.choices.map((c) => c.id).join(" ");
    } catch (e) {
      if (seq !== this.loadSeq) return;
      this.status.textContent = `The volume could not be shown: ${(e as Error).message || e}`;
      this.status.classList.add("error");
      this.el.dataset.state = "error";
    }
  }

  private fillChoices(opts: ShowOptions): void {
    const meta = opts.meta ?? {};
    this.choices = windowChoices(meta["modality"], this.sample!, fileWindowOf(meta));
    this.preset.replaceChildren(
      ...this.choices.map((ch, i) => h("option", { value: ch.id, title: `${ch.hint} (key ${i + 1})` }, i < 9 ? `${i + 1}. ${ch.label}` : ch.label)),
      h("option", { value: "custom" }, "Custom"),
    );
  }

  /** Input and result side by side: a second NiiVue instance, linked both ways by position. */
  private async setSideBySide(on: boolean): Promise<void> {
    const opts = this.current;
    if (!opts?.input) return;
    this.sideBySide.setAttribute("aria-pressed", String(on));
    this.stage.classList.toggle("split", on);
    this.paneB.hidden = !on;
    this.stage.querySelector<HTMLElement>(".nv-result-tag")!.hidden = !on;
    const nv = await this.init();
    if (!on) {
      nv.broadcastTo([], { "2d": false, "3d": false });
      this.el.dataset.sideBySide = "false";
      nv.resizeListener();
      this.layoutGrid(nv);
      return;
    }
    if (this.overlayToggle.checked) {
      this.overlayToggle.checked = false; // the input has its own pane now
      await this.load(opts, true);
    }
    if (!this.nvB) {
      this.nvB = await niivue(this.canvasB);
      if (new URLSearchParams(location.search).has("debug")) (window as unknown as { niivueInput: NV }).niivueInput = this.nvB;
    }
    const b = this.nvB;
    if (b.volumes[0]?.name !== opts.input.name) await b.loadVolumes([{ url: opts.input.url, name: opts.input.name, headers: opts.input.headers, colormap: "gray" }]);
    b.setRadiologicalConvention(this.radiological.checked);
    this.crosshairWidth(b);
    b.setSliceType(this.sliceType);
    this.layoutGrid(b);
    b.opts.dragModePrimary = DRAG_MODE.crosshair;
    nv.broadcastTo(b, { "2d": true, "3d": true });
    b.broadcastTo(nv, { "2d": true, "3d": true });
    b.scene.crosshairPos = b.mm2frac(nv.frac2mm(nv.scene.crosshairPos));
    b.onLocationChange = () => this.syncSlice();
    b.onIntensityChange = () => {
      const [lo, hi] = [b.volumes[0]?.cal_min ?? 0, b.volumes[0]?.cal_max ?? 0];
      if (hi > lo) {
        this.preset.value = "custom";
        this.setWindow((lo + hi) / 2, hi - lo);
      }
    };
    if (this.userWindow) this.setWindow(...this.userWindow);
    nv.resizeListener();
    b.resizeListener();
    this.layoutGrid(nv);
    this.layoutGrid(b);
    b.drawScene();
    this.el.dataset.sideBySide = "true";
  }

  private setView(st: SLICE_TYPE): void {
    this.sliceType = st;
    VIEWS.forEach(([, t], i) => this.viewButtons[i].setAttribute("aria-pressed", String(t === st)));
    if (st === SLICE_TYPE.AXIAL || st === SLICE_TYPE.CORONAL || st === SLICE_TYPE.SAGITTAL) this.plane = st;
    this.each((nv) => {
      nv.setSliceType(st);
      this.layoutGrid(nv);
      this.crosshairWidth(nv);
    });
    this.el.dataset.view = VIEWS.find(([, t]) => t === st)?.[0] ?? "";
    this.syncSlice();
  }

  /**
   * Multiplanar as four equal quadrants (axial, coronal / sagittal, 3D) with the three planes at
   * one mm scale, each centred in its quadrant. NiiVue's own grid sizes the tiles by the volume's
   * extents, so a custom layout is given; other views use NiiVue's single-tile layout.
   */
  private layoutGrid(nv: NV): void {
    const vol = nv.volumes[0];
    const canvas = nv.canvas;
    if (this.sliceType !== SLICE_TYPE.MULTIPLANAR || !vol || !canvas) {
      if (nv.getCustomLayout()) nv.clearCustomLayout();
      return;
    }
    const dims = vol.dimsRAS ?? [3, 1, 1, 1];
    const pd = vol.pixDimsRAS ?? [1, 1, 1, 1];
    const [X, Y, Z] = [1, 2, 3].map((i) => Math.max(1e-6, dims[i] * pd[i]));
    const W = canvas.clientWidth || canvas.width;
    const H = canvas.clientHeight || canvas.height;
    const pad = 6;
    const cw = W / 2 - 2 * pad;
    const ch = H / 2 - 2 * pad;
    // [slice type, width mm, height mm, quadrant column, quadrant row]
    const planes: [SLICE_TYPE, number, number, number, number][] = [
      [SLICE_TYPE.AXIAL, X, Y, 0, 0],
      [SLICE_TYPE.CORONAL, X, Z, 1, 0],
      [SLICE_TYPE.SAGITTAL, Y, Z, 0, 1],
    ];
    const k = Math.min(...planes.map(([, w, h]) => Math.min(cw / w, ch / h))); // px per mm
    const layout = planes.map(([sliceType, w, h, qc, qr]) => {
      const [pw, ph] = [w * k, h * k];
      const left = (qc * W) / 2 + (W / 2 - pw) / 2;
      const top = (qr * H) / 2 + (H / 2 - ph) / 2;
      return { sliceType, position: [left / W, top / H, pw / W, ph / H] as [number, number, number, number] };
    });
    layout.push({ sliceType: SLICE_TYPE.RENDER, position: [0.5 + pad / W, 0.5 + pad / H, 0.5 - (2 * pad) / W, 0.5 - (2 * pad) / H] });
    nv.setCustomLayout(layout);
    this.el.dataset.mmScale = String(k);
  }

  /** A crosshair of CROSSHAIR_PX on screen: NiiVue sizes it in mm, so from the tiles' scale. */
  private crosshairWidth(nv: NV): void {
    if (!this.crosshair.checked) {
      nv.setCrosshairWidth(0);
      return;
    }
    nv.drawScene(); // lays out the tiles
    const tile = nv.screenSlices.find((t) => t.axCorSag <= SLICE_TYPE.SAGITTAL && t.fovMM?.[0]);
    const dpr = nv.uiData.dpr ?? 1;
    const pxPerMM = tile ? Math.abs(tile.leftTopWidthHeight[2] / tile.fovMM[0]) / dpr : 1;
    nv.setCrosshairWidth(CROSSHAIR_PX / Math.max(pxPerMM, 1e-6));
  }

  /** Zoom of the 2D slices, on both instances when side by side (1 = fit). */
  private setZoom(zoom: number): void {
    const z = Math.max(0.5, Math.min(20, zoom));
    this.each((nv) => {
      const p = nv.scene.pan2Dxyzmm;
      nv.setPan2Dxyzmm([p[0], p[1], p[2], z]);
      this.crosshairWidth(nv);
    });
    this.showZoom();
  }

  private zoomBy(factor: number): void {
    if (this.nv) this.setZoom(this.nv.scene.pan2Dxyzmm[3] * factor);
  }

  private showZoom(): void {
    const z = this.nv?.scene.pan2Dxyzmm[3] ?? 1;
    this.zoomText.textContent = `${Math.round(z * 100)} %`;
    this.el.dataset.zoom = String(z);
  }

  /** RAS voxel axis of the plane's normal: axial moves z, coronal y, sagittal x. */
  private axis(): 0 | 1 | 2 {
    return this.plane === 0 ? 2 : this.plane === 1 ? 1 : 0;
  }

  private syncSlice(): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    const dims = nv.volumes[0].dimsRAS ?? [3, 1, 1, 1];
    const a = this.axis();
    const n = dims[a + 1];
    const vox = nv.frac2vox(nv.scene.crosshairPos);
    this.sliceSlider.max = String(Math.max(0, n - 1));
    this.sliceSlider.value = String(vox[a]);
    this.sliceText.textContent = `${vox[a] + 1} / ${n} ${PLANE_NAMES[this.plane]}`;
    this.el.dataset.slice = `${PLANE_NAMES[this.plane]} ${vox[a]}`;
  }

  private gotoSlice(index: number): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    const vox = nv.frac2vox(nv.scene.crosshairPos);
    const a = this.axis();
    const n = (nv.volumes[0].dimsRAS ?? [3, 1, 1, 1])[a + 1];
    const delta = [0, 0, 0];
    delta[a] = Math.max(0, Math.min(n - 1, index)) - vox[a];
    nv.moveCrosshairInVox(delta[0], delta[1], delta[2]);
    this.syncSlice();
  }

  private moveSlices(by: number): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    this.gotoSlice(nv.frac2vox(nv.scene.crosshairPos)[this.axis()] + by);
  }

  /** Sets the window on the base volume(s) and on the overlay unless it is a mask. */
  private setWindow(center: number, width: number): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length || !Number.isFinite(center) || !Number.isFinite(width) || width <= 0) return;
    const [lo, hi] = [center - width / 2, center + width / 2];
    const vols: Vol[] = this.current?.isMask ? nv.volumes.slice(0, 1) : [...nv.volumes];
    if (this.nvB && !this.paneB.hidden) vols.push(...this.nvB.volumes);
    for (const vol of vols) {
      vol.cal_min = lo;
      vol.cal_max = hi;
    }
    this.center.value = fmtNumber(center);
    this.width.value = fmtNumber(width);
    this.userWindow = [center, width];
    this.userPreset = this.preset.value;
    this.warning.textContent = this.sample ? saturationWarning(this.sample, center, width) : "";
    this.el.dataset.window = `${center},${width}`;
    nv.updateGLVolume();
    if (this.nvB && !this.paneB.hidden) this.nvB.updateGLVolume();
  }

  private applyChoice(id: string): void {
    const ch = this.choices.find((c) => c.id === id);
    if (!ch) return;
    this.preset.value = id;
    this.setWindow(ch.center, ch.width);
  }

  private windowChangedByDrag(): boolean {
    const nv = this.nv;
    if (!nv || !nv.volumes.length || !this.userWindow) return false;
    const b = nv.volumes[0];
    const [c, w] = this.userWindow;
    return Math.abs((b.cal_min ?? 0) - (c - w / 2)) > 1e-9 || Math.abs((b.cal_max ?? 0) - (c + w / 2)) > 1e-9;
  }

  /** After NiiVue changed the base volume's window (drag, double-click): follow it everywhere. */
  private windowFromBase(): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    const b = nv.volumes[0];
    const [lo, hi] = [b.cal_min ?? 0, b.cal_max ?? 0];
    if (!(hi > lo)) return;
    this.preset.value = "custom";
    this.setWindow((lo + hi) / 2, hi - lo);
  }

  private setupFrames(): void {
    const nv = this.nv;
    const n = nv?.volumes[0]?.nFrame4D ?? 1;
    const many = n > 1;
    for (const el of [this.frameLabel, this.frameSlider, this.frameText]) el.hidden = !many;
    this.frameSlider.max = String(Math.max(0, n - 1));
    const f = Math.min(nv?.volumes[0]?.frame4D ?? 0, n - 1);
    this.frameSlider.value = String(f);
    this.frameText.textContent = many ? `${f + 1} / ${n}` : "";
    this.el.dataset.frames = String(n);
  }

  private setFrame(frame: number): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    for (const vol of nv.volumes) if ((vol.nFrame4D ?? 1) > frame) nv.setFrame4D(vol.id, frame);
    this.frameText.textContent = `${frame + 1} / ${nv.volumes[0].nFrame4D ?? 1}`;
  }

  private applyBaseColormap(): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    const [c, w] = [Number(this.center.value), Number(this.width.value)];
    const p = this.preset.value;
    this.userColormap = this.baseColormap.value;
    nv.setColormap(nv.volumes[0].id, this.baseColormap.value); // resets cal_min/cal_max ...
    this.preset.value = p;
    this.setWindow(c, w); // ... so the window is set again after it
  }

  private applyOverlayColormap(): void {
    const nv = this.nv;
    if (!nv || nv.volumes.length < 2) return;
    const vol = nv.volumes[1];
    const [lo, hi] = [vol.cal_min, vol.cal_max];
    nv.setColormap(vol.id, this.overlayColormap.value);
    vol.cal_min = lo;
    vol.cal_max = hi;
    nv.updateGLVolume();
  }

  private setTool(mode: DRAG_MODE): void {
    this.leftDrag.value = String(mode);
    if (this.nv) this.nv.opts.dragModePrimary = mode;
    this.el.dataset.tool = this.leftDrag.selectedOptions[0]?.textContent ?? "";
  }

  // --- readout and measurements -------------------------------------------------------------------

  /** Which volumes hold the result and the input, in whichever instance shows them. */
  private layers(): { result: Vol | null; input: Vol | null } {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return { result: null, input: null };
    if (nv.volumes.length > 1) return { result: nv.volumes[1], input: nv.volumes[0] };
    const input = this.nvB && !this.paneB.hidden ? (this.nvB.volumes[0] ?? null) : null;
    return { result: nv.volumes[0], input };
  }

  private setupHover(canvas: HTMLCanvasElement): void {
    canvas.addEventListener("mousemove", (e) => {
      const nv = canvas === this.canvas ? this.nv : this.nvB;
      if (!nv || !nv.volumes.length) return;
      const dpr = nv.uiData.dpr ?? window.devicePixelRatio ?? 1;
      const r = canvas.getBoundingClientRect();
      const x = (e.clientX - r.left) * dpr;
      const y = (e.clientY - r.top) * dpr;
      const tile = nv.tileIndex(x, y);
      if (tile >= 0) {
        const t = nv.screenSlices[tile]?.axCorSag;
        if (t !== undefined && t <= SLICE_TYPE.SAGITTAL) this.plane = t as 0 | 1 | 2;
      }
      const frac = nv.canvasPos2frac([x, y]);
      if (frac[0] < 0) {
        this.readout.dataset.inside = "false";
        return;
      }
      this.showReadout(Array.from(nv.frac2mm(frac, 0, true)).slice(0, 3));
      if (!e.buttons) this.syncSlice();
    });
  }

  private showReadout(mm: number[]): void {
    const { result, input } = this.layers();
    if (!result) return;
    const unit = unitOf(this.current?.meta);
    const u = unit ? ` ${unit}` : "";
    const vox = nativeVoxel(result, mm);
    const value = valueAtMM(result, mm);
    const parts: HTMLElement[] = [
      h("span", { "data-field": "voxel" }, `Voxel ${vox.join(", ")}`),
      h("span", { "data-field": "ras" }, `RAS ${mm.map((n) => fmtNumber(n, 1)).join(", ")} mm`),
      h("span", { "data-field": "lps" }, `LPS ${[-mm[0], -mm[1], mm[2]].map((n) => fmtNumber(n, 1)).join(", ")} mm`),
      h("span", { "data-field": "value" }, `Result ${fmtNumber(value, 3)}${u}`),
    ];
    if (input) parts.push(h("span", { "data-field": "input-value" }, `Input ${fmtNumber(valueAtMM(input, mm), 3)}${u}`));
    this.readout.replaceChildren(...parts);
    this.readout.dataset.inside = "true";
    this.readout.dataset.voxel = vox.join(",");
    this.readout.dataset.value = String(value);
  }

  private sliceLabel(sliceType: SLICE_TYPE, mm: ArrayLike<number>): string {
    const nv = this.nv;
    const plane = PLANE_NAMES[sliceType] ?? "slice";
    if (!nv || !nv.volumes.length) return plane;
    const frac = nv.mm2frac([mm[0], mm[1], mm[2]]);
    const vox = nv.frac2vox(frac);
    const a = sliceType === 0 ? 2 : sliceType === 1 ? 1 : 0;
    return `${plane} slice ${vox[a] + 1}`;
  }

  /**
   * Ellipse region on a slice: statistics of the result's values whose voxel centres lie inside
   * the ellipse inscribed in the dragged box, which is what NiiVue draws while dragging (its
   * region selection is an ellipse). The box's corners are kept in RAS mm.
   */
  private regionFromDrag(p: { voxStart: ArrayLike<number>; voxEnd: ArrayLike<number>; axCorSag: SLICE_TYPE; mmStart: ArrayLike<number> }): void {
    const { result } = this.layers();
    const opts = this.current;
    const nv = this.nv;
    if (!result || !opts || !nv || p.axCorSag > SLICE_TYPE.SAGITTAL) return;
    const lo = [0, 1, 2].map((i) => Math.min(p.voxStart[i], p.voxEnd[i]));
    const hi = [0, 1, 2].map((i) => Math.max(p.voxStart[i], p.voxEnd[i]));
    const normal = p.axCorSag === 0 ? 2 : p.axCorSag === 1 ? 1 : 0;
    hi[normal] = lo[normal] = Math.round(p.voxStart[normal]);
    const [u, v] = [0, 1, 2].filter((a) => a !== normal);
    const centre = [0, 1, 2].map((a) => (lo[a] + hi[a]) / 2);
    const radius = [0, 1, 2].map((a) => (hi[a] - lo[a]) / 2);
    const values: number[] = [];
    if (radius[u] > 0 && radius[v] > 0) {
      const vox = [0, 0, 0];
      for (vox[2] = lo[2]; vox[2] <= hi[2]; vox[2]++)
        for (vox[1] = lo[1]; vox[1] <= hi[1]; vox[1]++)
          for (vox[0] = lo[0]; vox[0] <= hi[0]; vox[0]++) {
            if (((vox[u] - centre[u]) / radius[u]) ** 2 + ((vox[v] - centre[v]) / radius[v]) ** 2 > 1) continue;
            values.push(result.getValue(vox[0], vox[1], vox[2], result.frame4D ?? 0));
          }
    }
    const stats = regionStats(values);
    const pd = result.pixDimsRAS ?? [1, 1, 1, 1];
    opts.measurements.add({
      tool: "ellipse",
      file: opts.file,
      where: this.sliceLabel(p.axCorSag, p.mmStart),
      ...stats,
      area: stats.pixels * pd[u + 1] * pd[v + 1],
      lengthUnit: "mm",
      valueUnit: unitOf(opts.meta),
      points: [lo, hi].map((c) => round2(Array.from(nv.frac2mm(nv.vox2frac(c))).slice(0, 3))),
    });
  }

  // --- keys ----------------------------------------------------------------------------------------
  readonly keys: KeyHandler = (e) => {
    if (!this.nv || this.el.dataset.state !== "ready") return false;
    const k = e.key;
    const n = (this.nv.volumes[0]?.dimsRAS ?? [3, 1, 1, 1])[this.axis() + 1];
    const actions: Record<string, () => void> = {
      ArrowUp: () => this.moveSlices(1),
      ArrowRight: () => this.moveSlices(1),
      ArrowDown: () => this.moveSlices(-1),
      ArrowLeft: () => this.moveSlices(-1),
      PageUp: () => this.moveSlices(10),
      PageDown: () => this.moveSlices(-10),
      Home: () => this.gotoSlice(0),
      End: () => this.gotoSlice(n - 1),
      r: () => this.reset(),
      o: () => {
        if (!this.current?.input) return;
        this.overlayToggle.checked = !this.overlayToggle.checked;
        this.overlayToggle.dispatchEvent(new Event("change"));
      },
      b: () => void this.setSideBySide(this.sideBySide.getAttribute("aria-pressed") !== "true"),
      w: () => this.setTool(DRAG_MODE.windowing),
      l: () => this.setTool(DRAG_MODE.measurement),
      g: () => this.setTool(DRAG_MODE.angle),
      e: () => this.setTool(DRAG_MODE.roiSelection),
      "+": () => this.zoomBy(1.25),
      "=": () => this.zoomBy(1.25),
      "-": () => this.zoomBy(1 / 1.25),
      "0": () => this.setZoom(1),
      Escape: () => this.setTool(DRAG_MODE.crosshair),
    };
    for (const [, st, key] of VIEWS) actions[key] = () => this.setView(st);
    if (/^[1-9]$/.test(k)) {
      const ch = this.choices[Number(k) - 1];
      if (!ch) return false;
      this.applyChoice(ch.id);
      return true;
    }
    const fn = actions[k];
    if (!fn) return false;
    fn();
    return true;
  };

  private reset(): void {
    if (this.choices[0]) this.applyChoice(this.choices[0].id);
    this.setTool(DRAG_MODE.crosshair);
    this.each((nv) => {
      nv.setPan2Dxyzmm([0, 0, 0, 1]);
      nv.scene.crosshairPos = [0.5, 0.5, 0.5];
      nv.drawScene();
    });
    this.showZoom();
    this.syncSlice();
  }

  /** Takes the viewer out of the page (the Niivue instances stay for the next show()). */
  detach(): void {
    this.loadSeq++;
    this.el.remove();
    this.current = null;
  }
}

function round2(p: number[]): number[] {
  return p.map((x) => Math.round(x * 100) / 100);
}

/** The volume's values (scaled to real units), strided for a sample. */
function volumeValues(vol: Vol): Float32Array {
  const img = vol.img as ArrayLike<number> | undefined;
  if (!img) return new Float32Array();
  const slope = vol.hdr?.scl_slope && Number.isFinite(vol.hdr.scl_slope) ? vol.hdr.scl_slope : 1;
  const inter = vol.hdr?.scl_inter && Number.isFinite(vol.hdr.scl_inter) ? vol.hdr.scl_inter : 0;
  const n = img.length;
  const step = Math.max(1, Math.floor(n / 65536));
  const out = new Float32Array(Math.ceil(n / step));
  for (let i = 0, j = 0; i < n; i += step, j++) out[j] = img[i] * slope + inter;
  return out;
}

/** The voxel index (i, j, k) in the file's own order (as nibabel reads it) at a RAS mm point. */
function nativeVoxel(vol: Vol, mm: number[]): number[] {
  const A = vol.hdr?.affine as number[][] | undefined;
  if (!A) return Array.from(vol.mm2vox(mm)).map(Math.round);
  const inv = invert3x4(A);
  return [0, 1, 2].map((r) => Math.round(inv[r][0] * mm[0] + inv[r][1] * mm[1] + inv[r][2] * mm[2] + inv[r][3]));
}

function valueAtMM(vol: Vol, mm: number[]): number {
  const v = vol.mm2vox(mm); // RAS voxel order, which getValue takes
  return vol.getValue(v[0], v[1], v[2], vol.frame4D ?? 0);
}

function invert3x4(A: number[][]): number[][] {
  const [a, b, c] = A[0];
  const [d, e, f] = A[1];
  const [g, h2, i] = A[2];
  const det = a * (e * i - f * h2) - b * (d * i - f * g) + c * (d * h2 - e * g);
  const m = [
    [(e * i - f * h2) / det, (c * h2 - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h2 - e * g) / det, (b * g - a * h2) / det, (a * e - b * d) / det],
  ];
  const t = [A[0][3], A[1][3], A[2][3]];
  return m.map((row) => [...row, -(row[0] * t[0] + row[1] * t[1] + row[2] * t[2])]);
}

let shared: VolumeViewer | null = null;
export function volumeViewer(): VolumeViewer {
  if (!shared) shared = new VolumeViewer();
  return shared;
}
