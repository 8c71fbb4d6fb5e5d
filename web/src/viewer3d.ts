// Volume viewer on NiiVue (WebGL2): axial / coronal / sagittal / multiplanar / 3D render, slice
// scrolling (wheel over the canvas, or the slice slider), a frame slider for 4D volumes,
// crosshair, colormaps, window/level by right-drag (NiiVue's continuous `windowing` drag mode; or
// left-drag when chosen) and by preset, radiological display convention (with a toggle), and a
// result overlaid on its input volume with an opacity slider (on by default for masks only).
//
// The window applies to what is seen: the base volume and, unless it is a mask, the overlay.
// Toggling the overlay or reloading keeps the user's window and colormap.
//
// One Niivue instance and one canvas serve the whole page (a browser allows only a few WebGL
// contexts); show() moves the viewer into the given container and loads the volumes.

import { DRAG_MODE, Niivue, SLICE_TYPE } from "@niivue/niivue";
import { h, nextId } from "./util";

export interface VolumeSpec {
  url: string;
  /** File name; NiiVue picks the format from it (signed URLs end in ?token=...). */
  name: string;
  headers?: Record<string, string>;
}

export interface ShowOptions {
  output: VolumeSpec;
  /** The input volume (a NIfTI input, or the processor's role "input" .nii.gz of a DICOM
   *  volume): shown as base with the output as an overlay. */
  input?: VolumeSpec | null;
  /** The output is a label/mask volume (threshold): red overlay, window 0.5..1, overlaid on the
   *  input by default. Other results are shown alone in grey by default (overlay off). */
  isMask?: boolean;
}

/** Window presets in Hounsfield units: [center, width]. */
export const WINDOW_PRESETS: Record<string, [number, number]> = {
  brain: [40, 80],
  subdural: [75, 215],
  stroke: [40, 40],
  lung: [-600, 1500],
  mediastinum: [50, 350],
  abdomen: [40, 400],
  liver: [60, 160],
  bone: [400, 1800],
  soft_tissue: [40, 400],
};

const VIEWS: [string, SLICE_TYPE][] = [
  ["Axial", SLICE_TYPE.AXIAL],
  ["Coronal", SLICE_TYPE.CORONAL],
  ["Sagittal", SLICE_TYPE.SAGITTAL],
  ["Multiplanar", SLICE_TYPE.MULTIPLANAR],
  ["3D", SLICE_TYPE.RENDER],
];

const CROSSHAIR_WIDTH = 0.4; // percent of the field of view

const FAVOURITE_COLORMAPS = ["gray", "hot", "warm", "cool", "plasma", "viridis", "inferno", "red", "green", "blue", "winter"];

class VolumeViewer {
  readonly el: HTMLElement;
  private nv: Niivue | null = null;
  private ready: Promise<Niivue> | null = null;
  private canvas: HTMLCanvasElement;
  private status: HTMLElement;
  private viewButtons: HTMLButtonElement[] = [];
  private sliceSlider: HTMLInputElement;
  private sliceText: HTMLOutputElement;
  private location: HTMLElement;
  private crosshair: HTMLInputElement;
  private baseColormap: HTMLSelectElement;
  private preset: HTMLSelectElement;
  private center: HTMLInputElement;
  private width: HTMLInputElement;
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
  private userPreset = "auto";
  private userColormap = "gray";
  private dragSync = 0;
  private sliceType: SLICE_TYPE = SLICE_TYPE.MULTIPLANAR;
  private autoWindow: [number, number] = [0, 1];
  private current: ShowOptions | null = null;
  private loadSeq = 0;

  constructor() {
    this.canvas = h("canvas", { class: "nv-canvas", tabindex: "0", "aria-label": "Volume view" });
    this.status = h("div", { class: "viewer-status", role: "status" }, "Loading volume…");
    const stage = h("div", { class: "nv-stage", "data-testid": "niivue-stage" }, this.canvas, this.status);

    const viewGroup = h("div", { class: "segmented", role: "group", "aria-label": "View" });
    for (const [label, st] of VIEWS) {
      const b = h("button", { type: "button", class: "small", "aria-pressed": "false", "data-view": label }, label);
      b.addEventListener("click", () => this.setView(st));
      this.viewButtons.push(b);
      viewGroup.append(b);
    }

    const sliceId = nextId("slice");
    this.sliceSlider = h("input", { id: sliceId, type: "range", min: "0", max: "0", step: "1", value: "0" });
    this.sliceText = h("output", { for: sliceId, class: "slice-text" }, "");
    this.sliceSlider.addEventListener("input", () => this.gotoSlice(Number(this.sliceSlider.value)));

    const chId = nextId("crosshair");
    this.crosshair = h("input", { id: chId, type: "checkbox", checked: true });
    this.crosshair.addEventListener("change", () => this.nv?.setCrosshairWidth(this.crosshair.checked ? CROSSHAIR_WIDTH : 0));

    const cmId = nextId("cmap");
    this.baseColormap = h("select", { id: cmId });
    this.baseColormap.addEventListener("change", () => this.applyBaseColormap());

    const presetId = nextId("wl");
    this.preset = h("select", { id: presetId }, h("option", { value: "auto" }, "Auto"));
    for (const [name, [c, w]] of Object.entries(WINDOW_PRESETS))
      this.preset.append(h("option", { value: name, title: `center ${c}, width ${w}` }, name.replace("_", " ")));
    this.preset.append(h("option", { value: "custom" }, "Custom"));
    this.preset.addEventListener("change", () => this.applyPreset());

    const cId = nextId("wc");
    const wId = nextId("ww");
    this.center = h("input", { id: cId, type: "number", step: "any", class: "num" });
    this.width = h("input", { id: wId, type: "number", step: "any", min: "0", class: "num" });
    for (const inp of [this.center, this.width])
      inp.addEventListener("change", () => {
        this.preset.value = "custom";
        this.setWindow(Number(this.center.value), Number(this.width.value));
      });

    const ldId = nextId("drag");
    this.leftDrag = h(
      "select",
      { id: ldId },
      h("option", { value: String(DRAG_MODE.crosshair) }, "Crosshair"),
      h("option", { value: String(DRAG_MODE.windowing) }, "Window/level"),
      h("option", { value: String(DRAG_MODE.contrast) }, "Window from region"),
      h("option", { value: String(DRAG_MODE.pan) }, "Pan/zoom"),
      h("option", { value: String(DRAG_MODE.measurement) }, "Measure"),
    );
    this.leftDrag.addEventListener("change", () => {
      if (this.nv) this.nv.opts.dragModePrimary = Number(this.leftDrag.value) as DRAG_MODE;
    });

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
      "div",
      { class: "toolbar overlay-row", hidden: true },
      h("span", { class: "field-inline" }, this.overlayToggle, h("label", { for: ovId }, "Overlay result on input")),
      h("label", { for: ocId }, "Overlay colormap"),
      this.overlayColormap,
      h("label", { for: opId }, "Opacity"),
      this.opacity,
    );

    const radId = nextId("radio");
    this.radiological = h("input", { id: radId, type: "checkbox", checked: true });
    this.radiological.addEventListener("change", () => this.nv?.setRadiologicalConvention(this.radiological.checked));

    const frId = nextId("frame");
    this.frameSlider = h("input", { id: frId, type: "range", min: "0", max: "0", step: "1", value: "0", hidden: true });
    this.frameText = h("output", { for: frId, class: "slice-text", hidden: true }, "");
    this.frameLabel = h("label", { for: frId, hidden: true }, "Frame");
    this.frameSlider.addEventListener("input", () => this.setFrame(Number(this.frameSlider.value)));

    this.location = h("div", { class: "nv-location", "aria-live": "off" }, "");

    const hintId = nextId("nvhint");
    this.canvas.setAttribute("aria-describedby", hintId);
    this.el = h(
      "div",
      { class: "viewer3d", "data-state": "idle" },
      h(
        "div",
        { class: "toolbar" },
        viewGroup,
        h("label", { for: sliceId }, "Slice"),
        this.sliceSlider,
        this.sliceText,
        this.frameLabel,
        this.frameSlider,
        this.frameText,
        h("span", { class: "field-inline" }, this.crosshair, h("label", { for: chId }, "Crosshair")),
        h("span", { class: "field-inline", title: "Radiological convention: the patient's right on the left of the screen" }, this.radiological, h("label", { for: radId }, "Radiological")),
      ),
      h(
        "div",
        { class: "toolbar" },
        h("label", { for: presetId }, "Window"),
        this.preset,
        h("label", { for: cId }, "C"),
        this.center,
        h("label", { for: wId }, "W"),
        this.width,
        h("label", { for: cmId }, "Colormap"),
        this.baseColormap,
        h("label", { for: ldId }, "Left drag"),
        this.leftDrag,
      ),
      this.overlayRow,
      stage,
      h(
        "div",
        { class: "nv-foot" },
        this.location,
        h("span", { class: "hint", id: hintId }, "Right-drag: window (up/down level, left/right width) · wheel: slices · left-drag: see “Left drag”"),
      ),
    );
  }

  private init(): Promise<Niivue> {
    if (!this.ready) {
      this.ready = (async () => {
        const nv = new Niivue({
          backColor: [0, 0, 0, 1],
          show3Dcrosshair: true,
          crosshairWidth: CROSSHAIR_WIDTH,
          crosshairWidthUnit: "percent",
          crosshairColor: [1, 0.2, 0.2, 0.8],
          isColorbar: false,
          isRadiologicalConvention: true,
          dragAndDropEnabled: false,
          logLevel: "warn",
          loadingText: "",
        });
        nv.opts.dragMode = DRAG_MODE.windowing; // right button: continuous window/level
        nv.opts.dragModePrimary = DRAG_MODE.crosshair;
        await nv.attachToCanvas(this.canvas);
        // Developer hook: open the app with ?debug to reach the viewer from the console.
        if (new URLSearchParams(location.search).has("debug")) (window as unknown as { niivue: Niivue }).niivue = nv;
        nv.onLocationChange = (loc: unknown) => {
          const l = loc as { string?: string };
          this.location.textContent = l?.string ?? "";
          this.syncSlice();
        };
        // "Window from region" drag and the double-click reset change volumes[0] and say so;
        // the continuous windowing drag does not, so the canvas' own mouse moves are watched.
        nv.onIntensityChange = (vol) => {
          if (vol === nv.volumes[0]) this.windowFromBase();
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
        for (const sel of [this.baseColormap, this.overlayColormap])
          for (const m of ordered) sel.append(h("option", { value: m }, m));
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
    // A mask means something only on its input; any other result is first seen alone, in grey.
    this.overlayToggle.checked = !!opts.isMask;
    this.opacity.value = "0.5";
    this.userWindow = null;
    this.userPreset = "auto";
    this.userColormap = "gray";
    await this.init(); // fills the colormap lists
    this.overlayColormap.value = opts.isMask ? "red" : "warm";
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
      const list: Parameters<Niivue["loadVolumes"]>[0] = [];
      if (overlay && opts.input) {
        list.push({ url: opts.input.url, name: opts.input.name, headers: opts.input.headers, colormap: "gray" });
        list.push({
          url: opts.output.url,
          name: opts.output.name,
          headers: opts.output.headers,
          colormap: this.overlayColormap.value || (opts.isMask ? "red" : "warm"),
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
      const [lo, hi] = [base.cal_min ?? 0, base.cal_max ?? 1];
      this.autoWindow = [lo, hi];
      if (keep && this.userColormap !== "gray") nv.setColormap(base.id, this.userColormap); // resets the window ...
      this.baseColormap.value = keep ? this.userColormap : "gray";
      if (keep && this.userWindow) {
        this.setWindow(...this.userWindow); // ... so it is set after
        this.preset.value = this.userPreset;
      } else {
        this.preset.value = "auto";
        this.setWindow((lo + hi) / 2, hi - lo);
        this.userWindow = null;
      }
      nv.setRadiologicalConvention(this.radiological.checked);
      this.setupFrames();
      nv.setCrosshairWidth(this.crosshair.checked ? CROSSHAIR_WIDTH : 0);
      nv.opts.dragModePrimary = Number(this.leftDrag.value) as DRAG_MODE;
      this.setView(this.sliceType);
      this.status.hidden = true;
      this.el.dataset.state = "ready";
      this.el.dataset.volumes = String(nv.volumes.length);
    } catch (e) {
      if (seq !== this.loadSeq) return;
      this.status.textContent = `The volume could not be shown: ${(e as Error).message || e}`;
      this.status.classList.add("error");
      this.el.dataset.state = "error";
    }
  }

  private setView(st: SLICE_TYPE): void {
    this.sliceType = st;
    VIEWS.forEach(([, t], i) => this.viewButtons[i].setAttribute("aria-pressed", String(t === st)));
    if (!this.nv) return;
    this.nv.setSliceType(st);
    this.syncSlice();
  }

  /** Voxel axis that the slider moves: z for axial (and multiplanar/3D), y coronal, x sagittal. */
  private axis(): 0 | 1 | 2 {
    if (this.sliceType === SLICE_TYPE.SAGITTAL) return 0;
    if (this.sliceType === SLICE_TYPE.CORONAL) return 1;
    return 2;
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
    this.sliceText.textContent = `${vox[a] + 1} / ${n}`;
  }

  private gotoSlice(index: number): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    const vox = nv.frac2vox(nv.scene.crosshairPos);
    const a = this.axis();
    const delta = [0, 0, 0];
    delta[a] = index - vox[a];
    nv.moveCrosshairInVox(delta[0], delta[1], delta[2]);
    this.syncSlice();
  }

  /** Sets the window on the base volume and on the overlay unless it is a mask (whose window
   *  picks the labels). */
  private setWindow(center: number, width: number): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length || !Number.isFinite(center) || !Number.isFinite(width) || width <= 0) return;
    const [lo, hi] = [center - width / 2, center + width / 2];
    for (const vol of this.windowedVolumes()) {
      vol.cal_min = lo;
      vol.cal_max = hi;
    }
    this.center.value = fmt(center);
    this.width.value = fmt(width);
    this.userWindow = [center, width];
    this.userPreset = this.preset.value;
    nv.updateGLVolume();
  }

  private windowedVolumes(): Niivue["volumes"] {
    const nv = this.nv;
    if (!nv) return [];
    return this.current?.isMask ? nv.volumes.slice(0, 1) : nv.volumes;
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

  private currentWindow(): [number, number] {
    return [Number(this.center.value), Number(this.width.value)];
  }

  private applyPreset(): void {
    const p = this.preset.value;
    if (p === "auto") {
      const [lo, hi] = this.autoWindow;
      this.setWindow((lo + hi) / 2, hi - lo);
    } else if (WINDOW_PRESETS[p]) {
      this.setWindow(...WINDOW_PRESETS[p]);
    }
  }

  private applyBaseColormap(): void {
    const nv = this.nv;
    if (!nv || !nv.volumes.length) return;
    const [c, w] = this.currentWindow();
    this.userColormap = this.baseColormap.value;
    nv.setColormap(nv.volumes[0].id, this.baseColormap.value); // resets cal_min/cal_max ...
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

  /** Takes the viewer out of the page (the Niivue instance stays for the next show()). */
  detach(): void {
    this.loadSeq++;
    this.el.remove();
  }
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return "";
  return Math.abs(n) >= 100 ? String(Math.round(n)) : String(Math.round(n * 100) / 100);
}

let shared: VolumeViewer | null = null;
export function volumeViewer(): VolumeViewer {
  if (!shared) shared = new VolumeViewer();
  return shared;
}
