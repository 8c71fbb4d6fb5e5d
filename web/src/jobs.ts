// Job list (paginated, live), job detail (tasks, progress, errors, cancel/delete) and results
// (2D viewer, NiiVue volume viewer, metadata, downloads).

import {
  ApiError,
  cancelJob,
  deleteJob,
  fetchBlob,
  getJob,
  identityHeaders,
  inputFileUrl,
  listJobs,
  streamJobEvents,
  TERMINAL,
  type Job,
  type Output,
  type Task,
} from "./api";
import { h, formatBytes, formatTime, isImageMedia, isVolumeName, ProgressBar, setBadge, statusBadge } from "./util";
import { createViewer2D, type Viewer2D } from "./viewer2d";

// NiiVue is large: it is loaded on first use of the volume viewer (a separate chunk).
type Viewer3DModule = typeof import("./viewer3d");
let viewer3d: Viewer3DModule | null = null;
function loadViewer3D(): Promise<Viewer3DModule> {
  return import("./viewer3d").then((m) => (viewer3d = m));
}

const PAGE_SIZE = 20;
const MAX_STREAMS = 4; // HTTP/1.1 allows ~6 connections per origin; leave room for the rest

export function primaryOutput(task: Task): Output | null {
  const outs = task.result?.outputs ?? [];
  return outs.find((o) => o.role === "primary") ?? outs[0] ?? null;
}

export function thumbnailOutput(job: Job): Output | null {
  for (const t of job.task_results ?? []) {
    const outs = t.result?.outputs ?? [];
    const o = outs.find((x) => x.role === "preview" && isImageMedia(x)) ?? outs.find((x) => x.role === "primary" && isImageMedia(x));
    if (o) return o;
  }
  return null;
}

/** A label/mask result (overlaid on its input by default): the threshold operation, metadata that
 *  says so, or a file name like *_mask.nii.gz / *_seg.nii.gz / *_labels.nii.gz. */
export function isMaskResult(job: Job, result: { task_type?: string; metadata?: Record<string, unknown> }, filename: string): boolean {
  if (job.task_type === "threshold" || result.task_type === "threshold") return true;
  const m = result.metadata ?? {};
  for (const k of ["kind", "role", "content", "volume_type"]) if (/^(mask|label|labels|segmentation)$/i.test(String(m[k] ?? ""))) return true;
  if (m["is_mask"] === true || m["mask"] === true) return true;
  return /(^|[_.-])(mask|seg|labels?)\.nii(\.gz)?$/i.test(filename);
}

function paramsText(p: Record<string, unknown>): string {
  const entries = Object.entries(p ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("×") : JSON.stringify(v)}`).join(", ") : "defaults";
}

// ---- live updates -------------------------------------------------------------------------

type Listener = (job: Job) => void;

/**
 * Follows jobs through SSE (a few streams at a time, the others queued) and re-connects. When the
 * stream and the polls fail (e.g. 503 while the jobs service is down) it says so through
 * `onTrouble(id, true)`, keeps retrying with backoff, and says `onTrouble(id, false)` once an
 * answer comes again.
 */
class Watcher {
  private active = new Map<string, AbortController>();
  private queue: string[] = [];
  private troubled = new Set<string>();
  constructor(
    private onJob: Listener,
    private onGone: (id: string) => void,
    private onTrouble: (id: string, interrupted: boolean) => void = () => {},
  ) {}

  isTroubled(id: string): boolean {
    return this.troubled.has(id);
  }

  private trouble(id: string, on: boolean): void {
    if (on === this.troubled.has(id)) return;
    if (on) this.troubled.add(id);
    else this.troubled.delete(id);
    this.onTrouble(id, on);
  }

  watch(id: string, front = false): void {
    if (this.active.has(id) || this.queue.includes(id)) {
      if (front && this.queue.includes(id)) {
        this.queue = [id, ...this.queue.filter((q) => q !== id)];
      }
      return;
    }
    if (front) this.queue.unshift(id);
    else this.queue.push(id);
    this.pump();
  }

  stopAll(): void {
    for (const c of this.active.values()) c.abort();
    this.active.clear();
    this.queue = [];
    this.troubled.clear();
  }

  stop(id: string): void {
    this.active.get(id)?.abort();
    this.active.delete(id);
    this.troubled.delete(id);
    this.queue = this.queue.filter((q) => q !== id);
    this.pump();
  }

  private pump(): void {
    while (this.active.size < MAX_STREAMS && this.queue.length) {
      const id = this.queue.shift()!;
      const ctrl = new AbortController();
      this.active.set(id, ctrl);
      void this.follow(id, ctrl).finally(() => {
        if (this.active.get(id) === ctrl) this.active.delete(id);
        this.pump();
      });
    }
  }

  private async follow(id: string, ctrl: AbortController): Promise<void> {
    let last: Job | null = null;
    let delay = 500;
    const gone = (e: unknown) => e instanceof ApiError && e.status === 404;
    while (!ctrl.signal.aborted) {
      try {
        await streamJobEvents(
          id,
          (job) => {
            last = job;
            delay = 500;
            this.trouble(id, false);
            this.onJob(job);
          },
          ctrl.signal,
        );
      } catch (e) {
        if (ctrl.signal.aborted) return;
        if (gone(e)) {
          this.onGone(id);
          return;
        }
        this.trouble(id, true); // 503, network error, ...: say so and retry below
      }
      if (ctrl.signal.aborted) return;
      if (last && TERMINAL.has((last as Job).status)) return;
      // The stream ended early (server restart, proxy timeout) or failed: wait, poll once, then
      // re-connect, backing off up to 10 s.
      await sleep(delay, ctrl.signal);
      if (ctrl.signal.aborted) return;
      delay = Math.min(delay * 2, 10_000);
      try {
        const job = await getJob(id);
        last = job;
        this.trouble(id, false);
        this.onJob(job);
        if (TERMINAL.has(job.status)) return;
      } catch (e) {
        if (ctrl.signal.aborted) return;
        if (gone(e)) {
          this.onGone(id);
          return;
        }
        this.trouble(id, true);
      }
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

function inputNames(job: Job): string {
  return (job.task_results ?? []).map((t) => t.input_file).join("\n");
}

/** "scan.png" or "scan.png + 8 more": tells rows of the same operation apart. */
function filesLabel(job: Job): string {
  const names = (job.task_results ?? []).map((t) => t.input_file);
  if (!names.length) return "";
  return names.length > 1 ? `${names[0]} + ${names.length - 1} more` : names[0];
}

export const INTERRUPTED_TEXT = "Live updates interrupted — retrying…";

// ---- list ---------------------------------------------------------------------------------

interface Row {
  el: HTMLLIElement;
  button: HTMLButtonElement;
  badge: HTMLSpanElement;
  bar: ProgressBar;
  thumb: HTMLDivElement;
  thumbUrl: string;
  live: HTMLElement;
}

/** 4xx answers other than timeouts / rate limits: retrying will not help. */
function isFinal(e: unknown): boolean {
  return e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
}

export class JobsView {
  readonly listEl: HTMLElement;
  readonly detailEl: HTMLElement;
  private ul: HTMLUListElement;
  private more: HTMLButtonElement;
  private listStatus: HTMLElement;
  private jobs = new Map<string, Job>();
  private rows = new Map<string, Row>();
  private cursor: string | null = null;
  private selected: string | null = null;
  private detail: JobDetail | null = null;
  private watcher: Watcher;
  private generation = 0;
  private statusFilter: HTMLSelectElement;

  constructor() {
    this.ul = h("ul", { class: "job-list", "aria-label": "Your jobs" });
    this.more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
    this.more.addEventListener("click", () => void this.loadPage());
    this.listStatus = h("p", { class: "muted list-status", role: "status" }, "");
    const refresh = h("button", { type: "button", class: "small secondary", "aria-label": "Refresh job list" }, "Refresh");
    refresh.addEventListener("click", () => void this.reload());
    const filterId = "jobs-status-filter";
    this.statusFilter = h(
      "select",
      { id: filterId, class: "small" },
      h("option", { value: "" }, "All"),
      ...["PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"].map((st) => h("option", { value: st }, st.charAt(0) + st.slice(1).toLowerCase())),
    );
    this.statusFilter.addEventListener("change", () => void this.reload());
    this.listEl = h(
      "section",
      { class: "panel jobs-panel", "aria-labelledby": "jobs-title" },
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "jobs-title" }, "Jobs"),
        h("span", { class: "panel-tools" }, h("label", { for: filterId }, "Status"), this.statusFilter, refresh),
      ),
      this.ul,
      this.listStatus,
      this.more,
    );
    this.detailEl = h(
      "section",
      { class: "panel detail-panel", "aria-label": "Job details", "data-testid": "job-detail" },
      h("p", { class: "muted empty-detail" }, "Select a job to see its progress and results."),
    );
    this.watcher = new Watcher(
      (job) => this.update(job),
      (id) => this.remove(id),
      (id, on) => this.showInterrupted(id, on),
    );
  }

  private showInterrupted(id: string, on: boolean): void {
    const row = this.rows.get(id);
    if (row) {
      row.live.textContent = on ? INTERRUPTED_TEXT : "";
      row.live.hidden = !on;
      if (on) row.el.dataset.live = "interrupted";
      else delete row.el.dataset.live;
    }
    if (this.selected === id) this.detail?.setInterrupted(on);
  }

  /** Follows the address: #job/<id> typed, pasted or reached with Back opens that job. */
  async openFromHash(): Promise<void> {
    const id = /^#job\/(.+)$/.exec(location.hash)?.[1];
    if (!id || id === this.selected) return;
    const gen = this.generation;
    try {
      const job = this.jobs.get(id) ?? (await getJob(id));
      if (gen !== this.generation) return;
      this.update(job, "auto");
      this.select(job.job_id);
    } catch {
      /* not this user's job, or gone: leave the page as it is */
    }
  }

  /** Puts keyboard focus on the job list (after a delete, the detail it was in is gone). */
  focusList(): void {
    const first = this.ul.querySelector<HTMLButtonElement>("button.job-row");
    if (first) first.focus();
    else {
      this.listEl.setAttribute("tabindex", "-1");
      this.listEl.focus();
    }
  }

  /** Forgets everything (user switched) and loads the first page. */
  async reload(keepSelection = true): Promise<void> {
    const gen = ++this.generation;
    // The job to show again: the address (#job/…, a deep link or a reload) or the current one.
    const wanted = keepSelection ? (/^#job\/(.+)$/.exec(location.hash)?.[1] ?? this.selected) : null;
    this.watcher.stopAll();
    this.jobs.clear();
    this.rows.clear();
    this.ul.replaceChildren();
    this.cursor = null;
    this.select(null, !wanted);
    if (!(await this.loadPage(true))) return; // a newer reload took over
    if (!wanted || gen !== this.generation) return;
    // Open it; while the service answers 5xx / cannot be reached, keep the address and retry.
    for (let delay = 1000; ; delay = Math.min(delay * 2, 15_000)) {
      try {
        const job = this.jobs.get(wanted) ?? (await getJob(wanted));
        if (gen !== this.generation) return;
        this.update(job);
        this.select(job.job_id);
        return;
      } catch (e) {
        if (gen !== this.generation) return;
        if (isFinal(e)) {
          if (location.hash.startsWith("#job/")) history.replaceState(null, "", location.pathname + location.search);
          return;
        }
        this.detailEl.replaceChildren(
          h("p", { class: "muted empty-detail live-interrupted", role: "status" }, `The job could not be loaded: ${e instanceof ApiError ? e.text : String(e)} — retrying…`),
        );
        await sleep(delay);
        if (gen !== this.generation) return;
      }
    }
  }

  clear(): void {
    this.generation++;
    this.watcher.stopAll();
    this.jobs.clear();
    this.rows.clear();
    this.ul.replaceChildren();
    this.select(null);
    this.more.hidden = true;
    this.listStatus.textContent = "";
  }

  /** Loads a page of the list. The first page is retried with backoff until it loads (or a
   *  newer reload starts); returns false when a newer reload took over. */
  private async loadPage(first = false): Promise<boolean> {
    const gen = this.generation;
    this.more.disabled = true;
    this.listStatus.classList.remove("error");
    this.listStatus.textContent = "Loading…";
    for (let delay = 1000; ; delay = Math.min(delay * 2, 15_000)) {
      try {
        const page = await listJobs(PAGE_SIZE, first ? null : this.cursor, this.statusFilter.value || null);
        if (gen !== this.generation) return false;
        for (const job of page.jobs) this.update(job, "end");
        this.cursor = page.next_cursor;
        this.more.hidden = !page.next_cursor;
        this.listStatus.classList.remove("error");
        this.listStatus.textContent = this.jobs.size
          ? ""
          : this.statusFilter.value
            ? `No ${this.statusFilter.value.toLowerCase()} jobs.`
            : "No jobs yet. Upload files to start one.";
        this.more.disabled = false;
        return true;
      } catch (e) {
        if (gen !== this.generation) return false;
        const why = e instanceof ApiError ? e.text : String(e);
        this.listStatus.classList.add("error");
        if (!first || isFinal(e)) {
          this.listStatus.textContent = `Jobs could not be loaded: ${why}`;
          this.more.disabled = false;
          return true;
        }
        this.listStatus.textContent = `Jobs could not be loaded: ${why} — retrying in ${Math.round(delay / 1000)} s…`;
        await sleep(delay);
        if (gen !== this.generation) return false;
      }
    }
  }

  /** A job just created by this page: show it first, select it and follow it. */
  async added(jobId: string): Promise<void> {
    try {
      const job = await getJob(jobId);
      this.update(job, "start");
    } catch {
      /* the stream below will tell */
    }
    this.select(jobId);
    this.watcher.watch(jobId, true);
  }

  update(job: Job, where: "start" | "end" | "auto" = "auto"): void {
    const prev = this.jobs.get(job.job_id);
    // Progress never goes backwards on screen even if events arrive out of order.
    if (prev && TERMINAL.has(prev.status) && !TERMINAL.has(job.status)) return;
    this.jobs.set(job.job_id, job);
    let row = this.rows.get(job.job_id);
    if (!row) {
      row = this.makeRow(job);
      this.rows.set(job.job_id, row);
      if (where === "end") this.ul.append(row.el);
      else if (where === "start") this.ul.prepend(row.el);
      else this.insertSorted(row.el, job);
      this.listStatus.textContent = "";
    }
    this.fillRow(row, job);
    if (!TERMINAL.has(job.status)) this.watcher.watch(job.job_id, job.job_id === this.selected);
    if (this.selected === job.job_id) this.detail?.update(job);
  }

  private insertSorted(li: HTMLLIElement, job: Job): void {
    for (const other of Array.from(this.ul.children) as HTMLLIElement[]) {
      const o = this.jobs.get(other.dataset.jobId ?? "");
      if (o && o.created_at < job.created_at) {
        this.ul.insertBefore(li, other);
        return;
      }
    }
    this.ul.append(li);
  }

  remove(id: string): void {
    this.watcher.stop(id);
    this.jobs.delete(id);
    this.rows.get(id)?.el.remove();
    this.rows.delete(id);
    if (this.selected === id) this.select(null);
    if (!this.jobs.size) this.listStatus.textContent = "No jobs yet. Upload files to start one.";
  }

  private makeRow(job: Job): Row {
    const thumb = h("div", { class: "thumb", "aria-hidden": "true" });
    const badge = statusBadge(job.status);
    const bar = new ProgressBar(`Progress of job ${job.task_type}`, "bar-small");
    const live = h("span", { class: "live-status", role: "status", hidden: true });
    const button = h(
      "button",
      { type: "button", class: "job-row", "data-job-id": job.job_id, "aria-current": "false" },
      thumb,
      h(
        "span",
        { class: "job-row-main" },
        h("span", { class: "job-row-title" }, job.task_type, h("span", { class: "muted" }, ` · ${job.task_results?.length ?? 0} file(s)`)),
        h("span", { class: "job-row-files muted", title: inputNames(job) }, filesLabel(job)),
        h("span", { class: "job-row-time muted" }, formatTime(job.created_at)),
        h("span", { class: "job-row-status" }, badge, bar.el),
        live,
      ),
    );
    button.addEventListener("click", () => this.select(job.job_id));
    const el = h("li", { "data-job-id": job.job_id }, button);
    return { el, button, badge, bar, thumb, thumbUrl: "", live };
  }

  private fillRow(row: Row, job: Job): void {
    setBadge(row.badge, job.status);
    row.bar.set(TERMINAL.has(job.status) && job.status !== "CANCELLED" ? 100 : job.progress, job.status);
    row.el.dataset.status = job.status;
    const t = thumbnailOutput(job);
    if (t && t.url !== row.thumbUrl) {
      row.thumbUrl = t.url;
      row.thumb.replaceChildren(h("img", { src: t.url, alt: "", loading: "lazy", decoding: "async" }));
    }
  }

  select(id: string | null, clearHash = true): void {
    if (this.selected === id && this.detail) return;
    this.selected = id;
    for (const [jid, row] of this.rows) row.button.setAttribute("aria-current", String(jid === id));
    this.detail?.destroy();
    this.detail = null;
    const job = id ? this.jobs.get(id) : undefined;
    if (!id || !job) {
      this.detailEl.replaceChildren(h("p", { class: "muted empty-detail" }, "Select a job to see its progress and results."));
      if (!id && clearHash && location.hash.startsWith("#job/")) history.replaceState(null, "", location.pathname + location.search);
      return;
    }
    if (location.hash !== `#job/${id}`) history.replaceState(null, "", `#job/${id}`);
    this.detail = new JobDetail(job, {
      cancel: async () => {
        const updated = await cancelJob(id);
        if (updated && typeof updated === "object" && "job_id" in updated) this.update(updated as Job);
        else this.update(await getJob(id));
      },
      remove: async () => {
        await deleteJob(id);
        this.remove(id);
        this.focusList();
      },
    });
    this.detailEl.replaceChildren(this.detail.el);
    if (this.watcher.isTroubled(id)) this.detail.setInterrupted(true);
    if (!TERMINAL.has(job.status)) this.watcher.watch(id, true);
  }
}

// ---- detail -------------------------------------------------------------------------------

interface TaskRow {
  el: HTMLTableRowElement;
  badge: HTMLSpanElement;
  bar: ProgressBar;
  error: HTMLElement;
  view: HTMLButtonElement;
}

class JobDetail {
  readonly el: HTMLElement;
  private job: Job;
  private badge: HTMLSpanElement;
  private bar: ProgressBar;
  private message: HTMLElement;
  private live: HTMLElement;
  private cancelBtn: HTMLButtonElement;
  private deleteBtn: HTMLButtonElement;
  private actionStatus: HTMLElement;
  private taskRows = new Map<string, TaskRow>();
  private resultEl: HTMLElement;
  private shownTask: string | null = null;
  private shownHadResult = false;
  private viewer2d: Viewer2D | null = null;
  private objectUrls: string[] = [];
  private abort = new AbortController();

  constructor(
    job: Job,
    private actions: { cancel: () => Promise<void>; remove: () => Promise<void> },
  ) {
    this.job = job;
    this.badge = statusBadge(job.status);
    this.bar = new ProgressBar("Job progress", "bar-large");
    this.message = h("p", { class: "job-message", "aria-live": "polite" }, "");
    this.live = h("p", { class: "live-status", role: "status", hidden: true }, "");
    this.cancelBtn = h("button", { type: "button", class: "secondary" }, "Cancel job");
    this.deleteBtn = h("button", { type: "button", class: "danger" }, "Delete job");
    this.actionStatus = h("span", { class: "action-status", role: "status" }, "");
    this.cancelBtn.addEventListener("click", () => void this.run(this.actions.cancel, "Cancelling…"));
    this.deleteBtn.addEventListener("click", () => {
      if (confirm("Delete this job and all its files?")) void this.run(this.actions.remove, "Deleting…");
    });

    const tbody = h("tbody");
    for (const t of job.task_results ?? []) {
      const row = this.makeTaskRow(t);
      this.taskRows.set(t.task_id, row);
      tbody.append(row.el);
    }
    this.resultEl = h("div", { class: "result" });

    this.el = h(
      "div",
      { class: "job-detail", "data-job-id": job.job_id },
      h(
        "div",
        { class: "detail-head" },
        h(
          "div",
          { class: "detail-title" },
          h("h2", {}, `${job.task_type} `, this.badge),
          h("p", { class: "muted" }, `Created ${formatTime(job.created_at)} · params: ${paramsText(job.params)} · `, h("code", {}, job.job_id)),
        ),
        h("div", { class: "detail-actions" }, this.cancelBtn, this.deleteBtn, this.actionStatus),
      ),
      this.bar.el,
      this.live,
      this.message,
      h(
        "div",
        { class: "tasks-wrap" },
        h(
          "table",
          { class: "tasks" },
          h("caption", { class: "visually-hidden" }, "Tasks of this job"),
          h(
            "thead",
            {},
            h("tr", {}, h("th", { scope: "col" }, "Input"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Progress"), h("th", { scope: "col" }, "Result")),
          ),
          tbody,
        ),
      ),
      this.resultEl,
    );
    this.update(job);
  }

  private async run(fn: () => Promise<void>, text: string): Promise<void> {
    this.actionStatus.textContent = text;
    this.actionStatus.classList.remove("error");
    try {
      await fn();
      this.actionStatus.textContent = "";
    } catch (e) {
      this.actionStatus.textContent = e instanceof ApiError ? e.text : String(e);
      this.actionStatus.classList.add("error");
    }
  }

  private makeTaskRow(t: Task): TaskRow {
    const badge = statusBadge(t.status);
    const bar = new ProgressBar(`Progress of ${t.input_file}`, "bar-small");
    const error = h("div", { class: "task-error", role: "alert" });
    const view = h("button", { type: "button", class: "small", disabled: true, "aria-label": `View result of ${t.input_file}` }, "View");
    view.addEventListener("click", () => this.showTask(t.task_id));
    const el = h(
      "tr",
      { "data-task-id": t.task_id },
      h("td", { class: "task-file" }, h("span", { class: "file-name", title: t.input_file }, t.input_file), error),
      h("td", {}, badge),
      h("td", {}, bar.el),
      h("td", {}, view),
    );
    return { el, badge, bar, error, view };
  }

  /** Live updates failed (and are being retried) / work again. */
  setInterrupted(on: boolean): void {
    this.live.textContent = on ? INTERRUPTED_TEXT : "";
    this.live.hidden = !on;
    if (on) this.el.dataset.live = "interrupted";
    else delete this.el.dataset.live;
  }

  update(job: Job): void {
    this.job = job;
    setBadge(this.badge, job.status);
    this.el.dataset.status = job.status;
    this.bar.set(TERMINAL.has(job.status) && job.status !== "CANCELLED" ? 100 : job.progress, job.status);
    this.message.textContent = jobMessage(job);
    this.message.title = job.message ?? "";
    this.cancelBtn.disabled = TERMINAL.has(job.status);
    for (const t of job.task_results ?? []) {
      const row = this.taskRows.get(t.task_id);
      if (!row) continue;
      setBadge(row.badge, t.status);
      row.el.dataset.status = t.status;
      row.bar.set(TERMINAL.has(t.status) && t.status !== "CANCELLED" ? 100 : t.progress, t.status);
      row.error.textContent = t.error ?? "";
      row.view.disabled = !t.result;
    }
    // Show the first result as soon as one exists; refresh it when the shown task gets its result.
    // A failure shown while nothing had succeeded yet gives way to the first real result.
    const shown = job.task_results.find((t) => t.task_id === this.shownTask);
    const firstResult = job.task_results.find((t) => t.result);
    if (shown && !shown.result && firstResult) {
      this.showTask(firstResult.task_id);
    } else if (!shown) {
      const first = job.task_results.find((t) => t.result) ?? job.task_results.find((t) => t.status === "FAILED");
      if (first) this.showTask(first.task_id);
    } else if (!!shown.result !== this.shownHadResult) {
      this.showTask(shown.task_id, true);
    }
  }

  private cleanupResult(): void {
    this.viewer2d?.destroy();
    this.viewer2d = null;
    viewer3d?.volumeViewer().detach();
    this.abort.abort();
    this.abort = new AbortController();
    for (const u of this.objectUrls) URL.revokeObjectURL(u);
    this.objectUrls = [];
  }

  showTask(taskId: string, force = false): void {
    if (this.shownTask === taskId && !force) return;
    const task = this.job.task_results.find((t) => t.task_id === taskId);
    if (!task) return;
    this.cleanupResult();
    this.shownTask = taskId;
    this.shownHadResult = !!task.result;
    for (const [id, row] of this.taskRows) row.el.classList.toggle("selected", id === taskId);

    const head = h("h3", { class: "result-title" }, `Result: ${task.input_file}`);
    if (!task.result) {
      this.resultEl.replaceChildren(
        head,
        h("p", { class: task.error ? "error-text" : "muted" }, task.error ? `This task failed: ${task.error}` : "No result yet."),
      );
      return;
    }
    const result = task.result;
    const outputs = result.outputs?.length
      ? result.outputs
      : [{ filename: result.output_file, url: result.output_url, media_type: "", size: NaN, sha256: "", role: "primary" }];
    const primary = outputs.find((o) => o.role === "primary") ?? outputs[0];
    // For inputs a browser cannot show (DICOM, a DICOM-series ZIP) the processor also writes the
    // unprocessed input as a PNG or .nii.gz (role "input"), on the same grey scale / grid as the result.
    const inputView = outputs.find((o) => o.role === "input");
    const viewerBox = h("div", { class: "viewer-box" });
    const job = this.job;

    if (primary && isVolumeName(primary.filename)) {
      const inputIsNifti = isVolumeName(task.input_file) || result.metadata?.["format"] === "nifti";
      const status = h("div", { class: "nv-stage" }, h("div", { class: "viewer-status", role: "status" }, "Loading the volume viewer…"));
      viewerBox.append(status);
      const signal = this.abort.signal;
      loadViewer3D()
        .then((m) => {
          if (signal.aborted) return;
          status.remove();
          return m.volumeViewer().show(viewerBox, {
            output: { url: primary.url, name: primary.filename },
            input: inputIsNifti
              ? { url: inputFileUrl(job, task.input_file), name: task.input_file, headers: identityHeaders() }
              : inputView && isVolumeName(inputView.filename)
                ? { url: inputView.url, name: inputView.filename } // signed URL: `name` gives the format
                : null,
            isMask: isMaskResult(job, result, primary.filename),
          });
        })
        .catch((e) => {
          status.replaceChildren(h("div", { class: "viewer-status error", role: "alert" }, `The volume viewer could not start: ${String(e)}`));
        });
    } else if (primary && isImageMedia(primary)) {
      const signal = this.abort.signal;
      const inputIsRaster =
        /\.(png|jpe?g)$/i.test(task.input_file) || ["png", "jpeg"].includes(String(result.metadata?.["format"] ?? ""));
      const before = inputView && isImageMedia(inputView)
        ? Promise.resolve(inputView.url) // signed URL: an <img> loads it without headers
        : inputIsRaster
        ? fetchBlob(inputFileUrl(job, task.input_file), signal).then((b) => {
            if (!/^image\/(png|jpeg)/.test(b.type) && !/\.(png|jpe?g)$/i.test(task.input_file)) return null;
            const u = URL.createObjectURL(b);
            this.objectUrls.push(u);
            return u;
          })
        : null;
      this.viewer2d = createViewer2D(primary.url, before, task.input_file);
      viewerBox.append(this.viewer2d.el);
    } else {
      viewerBox.append(h("p", { class: "muted" }, "This result cannot be previewed in the browser; download it below."));
    }

    const downloads = h(
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

    const side = h(
      "div",
      { class: "result-side" },
      h("section", { class: "downloads-wrap", "aria-label": "Downloads" }, h("h4", {}, "Downloads"), downloads),
      metadataTable(result.metadata),
    );
    this.resultEl.replaceChildren(head, h("div", { class: "result-grid" }, viewerBox, side));
  }

  destroy(): void {
    this.cleanupResult();
  }
}

/** Job message: for a finished job the counts from its tasks ("8 of 9 succeeded, 1 failed"). */
export function jobMessage(job: Job): string {
  const tasks = job.task_results ?? [];
  if (!TERMINAL.has(job.status) || !tasks.length) return job.message ?? "";
  const n = (st: string) => tasks.filter((t) => t.status === st).length;
  const [ok, failed, cancelled] = [n("SUCCESS"), n("FAILED"), n("CANCELLED")];
  if (ok === tasks.length) return tasks.length === 1 ? "Succeeded." : `All ${tasks.length} succeeded.`;
  const parts = [`${ok} of ${tasks.length} succeeded`];
  if (failed) parts.push(`${failed} failed`);
  if (cancelled) parts.push(`${cancelled} cancelled`);
  const rest = tasks.length - ok - failed - cancelled;
  if (rest) parts.push(`${rest} not finished`);
  return parts.join(", ");
}

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

function metadataTable(meta: Record<string, unknown> | undefined): HTMLElement {
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
