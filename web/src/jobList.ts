// The job list: the caller's jobs, newest first, paginated and filtered by status, each row live
// (status, progress, thumbnail); selecting a row (or a #job/<id> address) opens its detail.

import { cancelJob, deleteJob, errorText, getJob, listJobs, type Job } from "./api";
import { JobDetail } from "./jobDetail";
import { thumbnailOutput } from "./results";
import { Backoff, isFinal, retry } from "./retry";
import { isTerminal, STATUSES } from "./status";
import { formatTime, h, ProgressBar, showStatus, statusBadge } from "./util";
import { StudiesView } from "./studies";
import { showInterrupted, Watcher } from "./watcher";

const PAGE_SIZE = 20;
/** Retry delays (first, max) while the list or the job in the address cannot be loaded. */
const LOAD_RETRY: [number, number] = [1000, 15_000];

// The address #job/<id> names the open job, so that a reload, Back or a pasted link opens it.
function jobInAddress(): string | null {
  return /^#job\/(.+)$/.exec(location.hash)?.[1] ?? null;
}

function setJobInAddress(id: string | null): void {
  if (id) {
    if (location.hash !== `#job/${id}`) history.replaceState(null, "", `#job/${id}`);
  } else if (location.hash.startsWith("#job/")) history.replaceState(null, "", location.pathname + location.search);
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

interface Row {
  el: HTMLLIElement;
  button: HTMLButtonElement;
  badge: HTMLSpanElement;
  bar: ProgressBar;
  thumb: HTMLDivElement;
  thumbUrl: string;
  live: HTMLElement;
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
  private studies: StudiesView;
  private studiesTimer = 0;
  private tabs: HTMLButtonElement[];

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
      ...STATUSES.map((st) => h("option", { value: st }, st.charAt(0) + st.slice(1).toLowerCase())),
    );
    this.statusFilter.addEventListener("change", () => void this.reload());
    this.studies = new StudiesView((jobId, taskId) => void this.openTask(jobId, taskId));
    const jobsBox = h("div", { class: "jobs-box", role: "tabpanel", "aria-labelledby": "tab-jobs", id: "panel-jobs" }, this.ul, this.listStatus, this.more);
    const studiesBox = h("div", { class: "studies-box", role: "tabpanel", "aria-labelledby": "tab-studies", id: "panel-studies", hidden: true }, this.studies.el);
    const tab = (id: string, label: string, panel: HTMLElement) => {
      const b = h("button", { type: "button", role: "tab", id, class: "tab", "aria-controls": panel.id, "aria-selected": String(id === "tab-jobs") }, label);
      b.addEventListener("click", () => {
        for (const t of this.tabs) t.setAttribute("aria-selected", String(t === b));
        jobsBox.hidden = panel !== jobsBox;
        studiesBox.hidden = panel !== studiesBox;
        filterBox.hidden = panel !== jobsBox;
        if (panel === studiesBox) this.studies.render(this.jobs.values());
      });
      return b;
    };
    this.tabs = [tab("tab-jobs", "Jobs", jobsBox), tab("tab-studies", "Studies", studiesBox)];
    const filterBox = h("span", { class: "panel-tools" }, h("label", { for: filterId }, "Status"), this.statusFilter, refresh);
    this.listEl = h(
      "section",
      { class: "panel jobs-panel", "aria-labelledby": "jobs-title" },
      h("h2", { id: "jobs-title", class: "visually-hidden" }, "Jobs and studies"),
      h("div", { class: "panel-head" }, h("div", { class: "tabs", role: "tablist", "aria-label": "Browse by" }, ...this.tabs), filterBox),
      jobsBox,
      studiesBox,
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
    if (row) showInterrupted(row.el, row.live, on);
    if (this.selected === id) this.detail?.setInterrupted(on);
  }

  /** Follows the address: #job/<id> typed, pasted or reached with Back opens that job. */
  async openFromHash(): Promise<void> {
    const id = jobInAddress();
    if (!id || id === this.selected) return;
    const gen = this.generation;
    try {
      const job = await this.job(id);
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
    const wanted = keepSelection ? (jobInAddress() ?? this.selected) : null;
    this.forget();
    this.cursor = null;
    this.select(null, !wanted);
    if (!(await this.loadPage(true))) return; // a newer reload took over
    if (!wanted || gen !== this.generation) return;
    // Open it; while the service answers 5xx / cannot be reached, keep the address and retry.
    let job: Job | undefined;
    try {
      job = await retry(() => this.job(wanted), {
        backoff: new Backoff(...LOAD_RETRY),
        stale: () => gen !== this.generation,
        onRetry: (e) =>
          this.detailEl.replaceChildren(
            h("p", { class: "muted empty-detail live-interrupted", role: "status" }, `The job could not be loaded: ${errorText(e)} — retrying…`),
          ),
      });
    } catch {
      // Not this user's job, or gone: forget the address.
      setJobInAddress(null);
      return;
    }
    if (!job) return;
    this.update(job);
    this.select(job.job_id);
  }

  clear(): void {
    this.generation++;
    this.forget();
    this.select(null);
    this.more.hidden = true;
    this.listStatus.textContent = "";
  }

  /** The job as the list has it, else from the server. */
  private async job(id: string): Promise<Job> {
    return this.jobs.get(id) ?? getJob(id);
  }

  private forget(): void {
    this.watcher.stopAll();
    this.jobs.clear();
    this.rows.clear();
    this.ul.replaceChildren();
    this.studies.render([]);
  }

  /** Loads a page of the list. The first page is retried with backoff until it loads (or a
   *  newer reload starts); returns false when a newer reload took over. */
  private async loadPage(first = false): Promise<boolean> {
    const gen = this.generation;
    this.more.disabled = true;
    this.listStatus.classList.remove("error");
    this.listStatus.textContent = "Loading…";
    const stale = () => gen !== this.generation;
    let page: Awaited<ReturnType<typeof listJobs>> | undefined;
    try {
      page = await retry(() => listJobs(PAGE_SIZE, first ? null : this.cursor, this.statusFilter.value || null), {
        backoff: new Backoff(...LOAD_RETRY),
        stale,
        final: first ? isFinal : () => true, // "Load more" is not retried: the button stays
        onRetry: (e, delay) => {
          this.listStatus.classList.add("error");
          this.listStatus.textContent = `Jobs could not be loaded: ${errorText(e)} — retrying in ${Math.round(delay / 1000)} s…`;
        },
      });
    } catch (e) {
      if (stale()) return false;
      this.listStatus.classList.add("error");
      this.listStatus.textContent = `Jobs could not be loaded: ${errorText(e)}`;
      this.more.disabled = false;
      return true;
    }
    if (!page) return false;
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
    if (prev && isTerminal(prev.status) && !isTerminal(job.status)) return;
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
    this.refreshStudies();
    if (!isTerminal(job.status)) this.watcher.watch(job.job_id, job.job_id === this.selected);
    if (this.selected === job.job_id) this.detail?.update(job);
  }

  private refreshStudies(): void {
    if (this.studiesTimer) return;
    this.studiesTimer = window.setTimeout(() => {
      this.studiesTimer = 0;
      this.studies.render(this.jobs.values());
    }, 150);
  }

  /** Opens a job at one of its tasks (from the studies browser). */
  async openTask(jobId: string, taskId: string): Promise<void> {
    if (!this.jobs.has(jobId)) {
      try {
        this.update(await getJob(jobId), "auto");
      } catch {
        return;
      }
    }
    this.select(jobId);
    this.detail?.pick(taskId);
  }

  fullscreen(): void {
    this.detail?.fullscreen();
  }

  /** Next / previous task of the open job. */
  stepTask(by: number): void {
    this.detail?.step(by);
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
    this.refreshStudies();
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
        h("span", { class: "job-row-line" }, h("span", { class: "job-row-title" }, job.task_type, h("span", { class: "muted" }, ` · ${job.task_results?.length ?? 0} file(s)`)), badge),
        h("span", { class: "job-row-files muted", title: inputNames(job) }, filesLabel(job)),
        h("span", { class: "job-row-line" }, h("span", { class: "job-row-time muted" }, formatTime(job.created_at)), bar.el),
        live,
      ),
    );
    button.addEventListener("click", () => this.select(job.job_id));
    const el = h("li", { "data-job-id": job.job_id }, button);
    return { el, button, badge, bar, thumb, thumbUrl: "", live };
  }

  private fillRow(row: Row, job: Job): void {
    showStatus(row.el, row.badge, row.bar, job);
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
      document.dispatchEvent(new CustomEvent("detail-empty")); // nothing to view: the list matters
      this.detailEl.replaceChildren(h("p", { class: "muted empty-detail" }, "Select a job to see its progress and results."));
      if (!id && clearHash) setJobInAddress(null);
      return;
    }
    setJobInAddress(id);
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
    if (!isTerminal(job.status)) this.watcher.watch(id, true);
  }
}
