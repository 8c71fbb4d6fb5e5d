// One task's result in the job detail: the viewer that its primary output calls for (NiiVue for a
// volume, the 2D viewer for an image) taking most of the screen, and beside it the job's
// measurements, the result's metadata and its downloads. The viewer can go full screen.

import { errorFrom, fetchBlob, identityHeaders, type Job, type Task, type TaskResultBody } from "./api";
import { MeasurementList } from "./measurements";
import { metadataTable } from "./metadata";
import { readNifti, readRaster } from "./nifti";
import { afterPlane, beforeOf, beforePlane, isMask, outputsOf, type PlaneRef, shownOf, viewKind } from "./results";
import { setViewerKeys } from "./shortcuts";
import { formatBytes, h } from "./util";
import { createViewer2D, type PlaneSource, type Viewer2D } from "./viewer2d";

// NiiVue is large: it is loaded on first use of the volume viewer (a separate chunk).
type Viewer3DModule = typeof import("./viewer3d");
let viewer3d: Viewer3DModule | null = null;
function loadViewer3D(): Promise<Viewer3DModule> {
  return import("./viewer3d").then((m) => (viewer3d = m));
}

function planeSource(ref: PlaneRef): PlaneSource {
  return {
    name: ref.name,
    real: ref.real,
    async load(signal) {
      let blob: Blob;
      if (ref.signed) {
        const res = await fetch(ref.url, { signal });
        if (!res.ok) throw errorFrom(res.status, await res.text());
        blob = await res.blob();
      } else blob = await fetchBlob(ref.url, signal);
      if (ref.real || /\.nii(\.gz)?$/i.test(ref.name)) return readNifti(await blob.arrayBuffer());
      if (viewKind({ media_type: blob.type, filename: ref.name }) !== "image") throw new Error(`${ref.name} is not an image`);
      return readRaster(blob);
    },
  };
}

export class ResultView {
  readonly el: HTMLElement = h("div", { class: "result" });
  readonly measurements = new MeasurementList();
  private viewer2d: Viewer2D | null = null;
  private abort = new AbortController();
  private workspace: HTMLElement | null = null;

  /** Shows the task's result, or why it has none. */
  show(job: Job, task: Task): void {
    this.clear();
    this.measurements.open(job.job_id);
    const head = h("h3", { class: "result-title" }, `Result: ${task.input_file}`);
    const result = task.result;
    if (!result) {
      this.el.replaceChildren(
        head,
        h(
          "p",
          { class: task.error ? "error-text result-note" : "muted result-note" },
          task.error ? `This task failed: ${task.error}` : `Waiting for the result of ${task.input_file}…`,
        ),
        ...taskLog(task),
      );
      return;
    }
    const outputs = outputsOf(result);
    const full = h("button", { type: "button", class: "small secondary", title: "Full screen (f)" }, "Full screen");
    full.addEventListener("click", () => this.toggleFullscreen());
    const side = h(
      "aside",
      { class: "result-side", "aria-label": "Result details" },
      h("div", { class: "result-head" }, head, full),
      this.measurements.el,
      metadataTable(result.metadata),
      ...taskLog(task),
      h("section", { class: "downloads-wrap", "aria-label": "Downloads" }, h("h4", {}, "Downloads"), downloadList(outputs)),
    );
    const viewer = this.viewer(job, task, result);
    this.workspace = h("div", { class: "workspace" }, h("div", { class: "viewer-col" }, viewer), side);
    this.el.replaceChildren(this.workspace);
    // viewer first: the page may fold its side panel away
    document.dispatchEvent(new CustomEvent("result-shown"));
  }

  toggleFullscreen(): void {
    const ws = this.workspace;
    if (!ws) return;
    if (document.fullscreenElement) void document.exitFullscreen();
    else if (ws.requestFullscreen) ws.requestFullscreen().catch(() => ws.classList.toggle("pseudo-fullscreen"));
    else ws.classList.toggle("pseudo-fullscreen");
  }

  private viewer(job: Job, task: Task, result: TaskResultBody): HTMLElement {
    const box = h("div", { class: "viewer-box" });
    const primary = shownOf(outputsOf(result)); // a DICOM result is shown through its preview
    const kind = primary ? viewKind(primary) : null;
    if (primary && kind === "volume") {
      const before = beforeOf(job, task, result, "volume");
      const status = h("div", { class: "nv-stage" }, h("div", { class: "viewer-status", role: "status" }, "Loading the volume viewer…"));
      box.append(status);
      const signal = this.abort.signal;
      loadViewer3D()
        .then((m) => {
          if (signal.aborted) return;
          status.remove();
          const v = m.volumeViewer();
          setViewerKeys(v.keys);
          return v.show(box, {
            output: { url: primary.url, name: primary.filename },
            input: before && { url: before.url, name: before.name, headers: before.signed ? undefined : identityHeaders() },
            isMask: isMask(result),
            meta: result.metadata ?? {},
            measurements: this.measurements,
            file: task.input_file,
          });
        })
        .catch((e) => {
          status.replaceChildren(h("div", { class: "viewer-status error", role: "alert" }, `The volume viewer could not start: ${String(e)}`));
        });
    } else if (primary && kind === "image") {
      const after = afterPlane(result)!;
      const before = beforePlane(job, task, result, after.real);
      this.viewer2d = createViewer2D({
        after: planeSource(after),
        before: before ? Promise.resolve(planeSource(before)) : null,
        alt: task.input_file,
        meta: result.metadata ?? {},
        measurements: this.measurements,
        file: task.input_file,
      });
      setViewerKeys(this.viewer2d.keys);
      box.append(this.viewer2d.el);
    } else {
      box.append(h("p", { class: "muted" }, "This result cannot be previewed in the browser; download it below."));
    }
    return box;
  }

  /** Releases the viewers and pending loads of the shown result. */
  clear(): void {
    setViewerKeys(null);
    if (document.fullscreenElement && this.workspace?.contains(document.fullscreenElement)) void document.exitFullscreen();
    this.viewer2d?.destroy();
    this.viewer2d = null;
    viewer3d?.volumeViewer().detach();
    this.abort.abort();
    this.abort = new AbortController();
    this.workspace = null;
  }
}

function downloadList(outputs: ReturnType<typeof outputsOf>): HTMLElement {
  return h(
    "ul",
    { class: "downloads" },
    ...outputs.map((o) =>
      h(
        "li",
        {},
        h("a", { href: o.url, download: o.filename }, `Download ${o.filename}`),
        h("span", { class: "muted" }, ` ${o.role ? o.role + " · " : ""}${o.media_type}${Number.isFinite(o.size) ? " · " + formatBytes(o.size) : ""}`),
      ),
    ),
  );
}

/** The task's log lines from the processor (as text, one per line), or nothing while it has none. */
function taskLog(task: Task): HTMLElement[] {
  const lines = task.logs ?? [];
  if (!lines.length) return [];
  return [
    h(
      "section",
      { class: "task-log", "aria-label": "Processing log" },
      h("h4", {}, "Processing log"),
      h("ol", { class: "task-log-lines" }, ...lines.map((line) => h("li", {}, line))),
    ),
  ];
}
