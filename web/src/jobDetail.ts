// The detail of one job: status, progress and message, cancel and delete, a row per task (status,
// progress, error, "View"), and the result of the task being viewed.

import { errorText, type Job, type Task } from "./api";
import { ResultView } from "./resultView";
import { isTerminal, type Status } from "./status";
import { formatTime, h, ProgressBar, showStatus, statusBadge } from "./util";
import { showInterrupted } from "./watcher";

interface TaskRow {
  el: HTMLTableRowElement;
  badge: HTMLSpanElement;
  bar: ProgressBar;
  error: HTMLElement;
  view: HTMLButtonElement;
}

export interface JobActions {
  cancel: () => Promise<void>;
  remove: () => Promise<void>;
}

export class JobDetail {
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
  private result = new ResultView();
  private shownTask: string | null = null;
  private shownHadResult = false;

  constructor(
    job: Job,
    private actions: JobActions,
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
      this.result.el,
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
      this.actionStatus.textContent = errorText(e);
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
    showInterrupted(this.el, this.live, on);
  }

  update(job: Job): void {
    this.job = job;
    showStatus(this.el, this.badge, this.bar, job);
    this.message.textContent = jobMessage(job);
    this.message.title = job.message ?? "";
    this.cancelBtn.disabled = isTerminal(job.status);
    for (const t of job.task_results ?? []) {
      const row = this.taskRows.get(t.task_id);
      if (!row) continue;
      showStatus(row.el, row.badge, row.bar, t);
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
      const first = firstResult ?? job.task_results.find((t) => t.status === "FAILED");
      if (first) this.showTask(first.task_id);
    } else if (!!shown.result !== this.shownHadResult) {
      this.showTask(shown.task_id, true);
    }
  }

  showTask(taskId: string, force = false): void {
    if (this.shownTask === taskId && !force) return;
    const task = this.job.task_results.find((t) => t.task_id === taskId);
    if (!task) return;
    this.shownTask = taskId;
    this.shownHadResult = !!task.result;
    for (const [id, row] of this.taskRows) row.el.classList.toggle("selected", id === taskId);
    this.result.show(this.job, task);
  }

  destroy(): void {
    this.result.clear();
  }
}

function paramsText(p: Record<string, unknown>): string {
  const entries = Object.entries(p ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("×") : JSON.stringify(v)}`).join(", ") : "defaults";
}

/** Job message: for a finished job the counts from its tasks ("8 of 9 succeeded, 1 failed"). */
export function jobMessage(job: Job): string {
  const tasks = job.task_results ?? [];
  if (!isTerminal(job.status) || !tasks.length) return job.message ?? "";
  const n = (st: Status) => tasks.filter((t) => t.status === st).length;
  const [ok, failed, cancelled] = [n("SUCCESS"), n("FAILED"), n("CANCELLED")];
  if (ok === tasks.length) return tasks.length === 1 ? "Succeeded." : `All ${tasks.length} succeeded.`;
  const parts = [`${ok} of ${tasks.length} succeeded`];
  if (failed) parts.push(`${failed} failed`);
  if (cancelled) parts.push(`${cancelled} cancelled`);
  const rest = tasks.length - ok - failed - cancelled;
  if (rest) parts.push(`${rest} not finished`);
  return parts.join(", ");
}
