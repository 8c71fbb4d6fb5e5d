// One task's result in the job detail: the viewer that its primary output calls for (NiiVue for a
// volume, the 2D before/after viewer for an image), its downloads and its metadata.

import { fetchBlob, identityHeaders, type Job, type Task, type TaskResultBody } from "./api";
import { metadataTable } from "./metadata";
import { beforeOf, isMask, outputsOf, shownOf, viewKind } from "./results";
import { formatBytes, h } from "./util";
import { createViewer2D, type Viewer2D } from "./viewer2d";

// NiiVue is large: it is loaded on first use of the volume viewer (a separate chunk).
type Viewer3DModule = typeof import("./viewer3d");
let viewer3d: Viewer3DModule | null = null;
function loadViewer3D(): Promise<Viewer3DModule> {
  return import("./viewer3d").then((m) => (viewer3d = m));
}

export class ResultView {
  readonly el: HTMLElement = h("div", { class: "result" });
  private viewer2d: Viewer2D | null = null;
  private objectUrls: string[] = [];
  private abort = new AbortController();

  /** Shows the task's result, or why it has none. */
  show(job: Job, task: Task): void {
    this.clear();
    const head = h("h3", { class: "result-title" }, `Result: ${task.input_file}`);
    const result = task.result;
    if (!result) {
      this.el.replaceChildren(
        head,
        h("p", { class: task.error ? "error-text" : "muted" }, task.error ? `This task failed: ${task.error}` : "No result yet."),
      );
      return;
    }
    const outputs = outputsOf(result);
    const side = h(
      "div",
      { class: "result-side" },
      h("section", { class: "downloads-wrap", "aria-label": "Downloads" }, h("h4", {}, "Downloads"), downloadList(outputs)),
      metadataTable(result.metadata),
    );
    this.el.replaceChildren(head, h("div", { class: "result-grid" }, this.viewer(job, task, result), side));
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
          return m.volumeViewer().show(box, {
            output: { url: primary.url, name: primary.filename },
            input: before && { url: before.url, name: before.name, headers: before.signed ? undefined : identityHeaders() },
            isMask: isMask(result),
          });
        })
        .catch((e) => {
          status.replaceChildren(h("div", { class: "viewer-status error", role: "alert" }, `The volume viewer could not start: ${String(e)}`));
        });
    } else if (primary && kind === "image") {
      this.viewer2d = createViewer2D(primary.url, this.beforeImage(job, task, result), task.input_file);
      box.append(this.viewer2d.el);
    } else {
      box.append(h("p", { class: "muted" }, "This result cannot be previewed in the browser; download it below."));
    }
    return box;
  }

  /** The "before" image's URL: a signed URL loads in an <img> as it is; the input file needs the
   *  identity headers, so it is fetched and shown through an object URL. */
  private beforeImage(job: Job, task: Task, result: TaskResultBody): Promise<string | null> | null {
    const before = beforeOf(job, task, result, "image");
    if (!before) return null;
    if (before.signed) return Promise.resolve(before.url);
    return fetchBlob(before.url, this.abort.signal).then((b) => {
      if (viewKind({ media_type: b.type, filename: before.name }) !== "image") return null;
      const u = URL.createObjectURL(b);
      this.objectUrls.push(u);
      return u;
    });
  }

  /** Releases the viewers, pending loads and object URLs of the shown result. */
  clear(): void {
    this.viewer2d?.destroy();
    this.viewer2d = null;
    viewer3d?.volumeViewer().detach();
    this.abort.abort();
    this.abort = new AbortController();
    for (const u of this.objectUrls) URL.revokeObjectURL(u);
    this.objectUrls = [];
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
