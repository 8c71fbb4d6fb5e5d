// 2D result viewer: the output image with zoom (wheel, buttons, + / - keys), pan (drag, arrow
// keys) and a before/after slider that uncovers the input image over the output. Both images
// share one transform, so they stay aligned whatever the zoom.

import { h, nextId } from "./util";

export interface Viewer2D {
  el: HTMLElement;
  destroy(): void;
}

/**
 * @param afterUrl  URL of the processed image (a signed URL works in <img>).
 * @param beforeUrl a promise of the input image's URL: an object URL fetched with the identity
 *                  header (PNG/JPEG inputs), or the signed URL of the processor's role "input"
 *                  PNG (DICOM inputs, rendered on the result's grey scale); null (or a promise of
 *                  null) when there is nothing a browser can show.
 */
export function createViewer2D(afterUrl: string, beforeUrl: Promise<string | null> | null, alt: string): Viewer2D {
  const after = h("img", { class: "layer-img", alt: `Result: ${alt}`, draggable: "false", decoding: "async" });
  const before = h("img", { class: "layer-img", alt: `Input: ${alt}`, draggable: "false", decoding: "async" });
  const afterLayer = h("div", { class: "layer" }, after);
  const beforeLayer = h("div", { class: "layer layer-before", hidden: true }, before);
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
      "aria-label": `${alt}. Wheel or + and - to zoom, drag or arrow keys to pan, 0 to reset.`,
      "data-testid": "viewer2d",
    },
    afterLayer,
    beforeLayer,
    divider,
    tagBefore,
    tagAfter,
    status,
  );

  const sliderId = nextId("ba");
  const slider = h("input", { id: sliderId, type: "range", min: "0", max: "100", step: "1", value: "50", disabled: true });
  const zoomText = h("output", { class: "zoom-text", "aria-live": "off" }, "100 %");
  const btn = (label: string, text: string, fn: () => void) =>
    h("button", { type: "button", class: "small", "aria-label": label, title: label, onclick: fn }, text);
  const toolbar = h(
    "div",
    { class: "toolbar" },
    btn("Zoom out", "−", () => zoomAt(1 / 1.25)),
    zoomText,
    btn("Zoom in", "+", () => zoomAt(1.25)),
    btn("Fit to view", "Fit", () => fit()),
    btn("Actual pixels (1:1)", "1:1", () => actualSize()),
    h("label", { for: sliderId, class: "slider-label" }, "Before / after"),
    slider,
  );
  const el = h("div", { class: "viewer2d" }, toolbar, viewport);

  // view state: displayed box (fit size at zoom 1) and the transform
  let baseW = 0;
  let baseH = 0;
  let zoom = 1;
  let panX = 0;
  let panY = 0;
  let split = 50;

  function apply(): void {
    const t = `translate(${panX}px, ${panY}px) scale(${zoom})`;
    for (const img of [after, before]) {
      img.style.width = `${baseW}px`;
      img.style.height = `${baseH}px`;
      img.style.transform = t;
    }
    zoomText.textContent = `${Math.round((zoom * baseW * 100) / (after.naturalWidth || baseW || 1))} %`;
    after.classList.toggle("pixelated", (zoom * baseW) / (after.naturalWidth || 1) > 2);
    before.classList.toggle("pixelated", (zoom * baseW) / (after.naturalWidth || 1) > 2);
  }

  function applySplit(): void {
    beforeLayer.style.clipPath = `inset(0 ${100 - split}% 0 0)`;
    divider.style.left = `${split}%`;
  }

  function fit(): void {
    const vw = viewport.clientWidth;
    const vh = viewport.clientHeight;
    const nw = after.naturalWidth || 1;
    const nh = after.naturalHeight || 1;
    const s = Math.min(vw / nw, vh / nh);
    baseW = nw * s;
    baseH = nh * s;
    zoom = 1;
    panX = (vw - baseW) / 2;
    panY = (vh - baseH) / 2;
    apply();
  }

  function actualSize(): void {
    const r = viewport.getBoundingClientRect();
    zoomAt((after.naturalWidth || baseW) / (baseW * zoom), r.width / 2, r.height / 2);
  }

  /** Zooms by `factor` keeping the point (cx, cy) of the viewport still. */
  function zoomAt(factor: number, cx = viewport.clientWidth / 2, cy = viewport.clientHeight / 2): void {
    const next = Math.min(64, Math.max(0.1, zoom * factor));
    const f = next / zoom;
    panX = cx - (cx - panX) * f;
    panY = cy - (cy - panY) * f;
    zoom = next;
    apply();
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

  let drag: { id: number; x: number; y: number } | null = null;
  viewport.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { id: e.pointerId, x: e.clientX, y: e.clientY };
    viewport.setPointerCapture(e.pointerId);
    viewport.classList.add("dragging");
  });
  viewport.addEventListener("pointermove", (e) => {
    if (!drag || drag.id !== e.pointerId) return;
    panX += e.clientX - drag.x;
    panY += e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    apply();
  });
  const endDrag = (e: PointerEvent) => {
    if (drag && drag.id === e.pointerId) {
      drag = null;
      viewport.classList.remove("dragging");
    }
  };
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);
  viewport.addEventListener("dblclick", () => fit());
  viewport.addEventListener("keydown", (e) => {
    const step = 40;
    const keys: Record<string, () => void> = {
      "+": () => zoomAt(1.25),
      "=": () => zoomAt(1.25),
      "-": () => zoomAt(1 / 1.25),
      "0": () => fit(),
      ArrowLeft: () => ((panX += step), apply()),
      ArrowRight: () => ((panX -= step), apply()),
      ArrowUp: () => ((panY += step), apply()),
      ArrowDown: () => ((panY -= step), apply()),
    };
    const fn = keys[e.key];
    if (fn) {
      e.preventDefault();
      fn();
    }
  });

  slider.addEventListener("input", () => {
    split = Number(slider.value);
    applySplit();
  });

  const ro = new ResizeObserver(() => {
    if (after.naturalWidth) fit();
  });

  after.addEventListener("load", () => {
    status.hidden = true;
    el.dataset.state = "ready";
    fit();
    ro.observe(viewport);
  });
  after.addEventListener("error", () => {
    status.textContent = "The result image could not be loaded.";
    status.classList.add("error");
    el.dataset.state = "error";
    // Nothing to zoom or compare: no zoom "0 %", no before/after chrome over the error.
    toolbar.hidden = true;
    for (const x of [beforeLayer, divider, tagBefore, tagAfter]) x.hidden = true;
    viewport.setAttribute("aria-label", `${alt}: the result image could not be loaded.`);
  });
  after.src = afterUrl;

  let objectUrl: string | null = null;
  let destroyed = false;
  if (beforeUrl) {
    beforeUrl
      .then((url) => {
        if (destroyed || !url) {
          if (url?.startsWith("blob:")) URL.revokeObjectURL(url);
          if (!url) slider.title = "The input cannot be shown by a browser, so there is nothing to compare.";
          return;
        }
        if (url.startsWith("blob:")) objectUrl = url;
        before.addEventListener("load", () => {
          if (el.dataset.state === "error") return;
          beforeLayer.hidden = false;
          divider.hidden = false;
          tagBefore.hidden = false;
          tagAfter.hidden = false;
          slider.disabled = false;
          el.dataset.compare = "ready";
          applySplit();
          apply();
        });
        before.addEventListener("error", () => {
          slider.title = "The input image could not be loaded.";
        });
        before.src = url;
      })
      .catch(() => {
        slider.title = "The input image could not be loaded.";
      });
  } else {
    slider.title = "The input cannot be shown by a browser, so there is nothing to compare.";
  }

  return {
    el,
    destroy() {
      destroyed = true;
      ro.disconnect();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    },
  };
}
