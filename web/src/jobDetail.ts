// The detail of one job: status, progress and message, cancel and delete, its params (those that
// apply to its inputs), a gallery of its tasks (thumbnail, status, progress, error) and the result
// of the task being viewed: the first task, unless the user picks another.

import { errorText, type Job, knownOperation, type Task } from "./api";
import { applicableParams, outputsOf, viewKind } from "./results";
import { ResultView } from "./resultView";
import { isTerminal, type Status } from "./status";
import { formatTime, h, ProgressBar, showStatus, statusBadge } from "./util";
import { showInterrupted } from "./watcher";

interface TaskRow {
  el: HTMLLIElement;
  badge: HTMLSpanElement;
  bar: ProgressBar;
  error: HTMLElement;
  view: HTMLButtonElement;
  thumb: HTMLElement;
  thumbUrl: string;
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
  /** What the shown task's view was made from: its status and whether it had a result. */
  private shownState = "";
  /** The user picked the shown task (else the first task is shown as results come). */
  private picked = false;
  private params: HTMLElement;

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

    const gallery = h("ol", { class: "tasks task-gallery", "aria-label": "Tasks of this job" });
    for (const t of job.task_results ?? []) {
      const row = this.makeTaskRow(t);
      this.taskRows.set(t.task_id, row);
      gallery.append(row.el);
    }
    this.params = h("span", { class: "job-params" }, "");

    this.el = h(
      "div",
      { class: "job-detail", "data-job-id": job.job_id, "data-tasks": String(job.task_results?.length ?? 0) },
      h(
        "div",
        { class: "detail-head" },
        h(
          "div",
          { class: "detail-title" },
          h("h2", {}, `${job.task_type} `, this.badge),
          h("p", { class: "muted" }, `Created ${formatTime(job.created_at)} · params: `, this.params, " · ", h("code", {}, job.job_id)),
        ),
        h("div", { class: "detail-bar" }, this.bar.el, this.message),
        h("div", { class: "detail-actions" }, this.cancelBtn, this.deleteBtn, this.actionStatus),
      ),
      this.live,
      gallery,
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
    const thumb = h("span", { class: "thumb", "aria-hidden": "true" });
    const view = h("button", { type: "button", class: "task-view", disabled: true, "aria-label": `View result of ${t.input_file}` }, thumb, h("span", { class: "file-name", title: t.input_file }, t.input_file));
    view.addEventListener("click", () => {
      this.picked = true;
      this.showTask(t.task_id);
    });
    const el = h("li", { "data-task-id": t.task_id }, view, h("span", { class: "task-state" }, badge, bar.el), error);
    return { el, badge, bar, error, view, thumb, thumbUrl: "" };
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
    this.params.textContent = paramsText(applicableParams(job, knownOperation(job.task_type)?.params_schema));
    for (const t of job.task_results ?? []) {
      const row = this.taskRows.get(t.task_id);
      if (!row) continue;
      showStatus(row.el, row.badge, row.bar, t);
      row.error.textContent = t.error ?? "";
      row.view.disabled = !t.result && !t.error;
      const thumb = t.result ? taskThumbnail(t) : "";
      if (thumb && thumb !== row.thumbUrl) {
        row.thumbUrl = thumb;
        row.thumb.replaceChildren(h("img", { src: thumb, alt: "", loading: "lazy", decoding: "async" }));
      }
    }
    // Show the first task (in the job's order), waiting for its result, unless the user picked
    // one; when the first failed, the first task with a result replaces its failure.
    const tasks = job.task_results ?? [];
    const shown = tasks.find((t) => t.task_id === this.shownTask);
    const first = tasks[0];
    const firstResult = tasks.find((t) => t.result);
    const firstFailed = first && (first.status === "FAILED" || first.status === "CANCELLED");
    const wanted = this.picked && shown ? shown : firstFailed && firstResult ? firstResult : first;
    if (!wanted) return;
    if (wanted.task_id !== this.shownTask) this.showTask(wanted.task_id);
    else if (taskState(wanted) !== this.shownState) this.showTask(wanted.task_id, true);
  }

  fullscreen(): void {
    this.result.toggleFullscreen();
  }

  /** Shows this task (the user's choice, kept as results come). */
  pick(taskId: string): void {
    this.picked = true;
    this.showTask(taskId);
  }

  /** Shows the next (+1) or previous (-1) task. */
  step(by: number): void {
    const tasks = this.job.task_results ?? [];
    if (tasks.length < 2) return;
    const i = tasks.findIndex((t) => t.task_id === this.shownTask);
    const next = tasks[(i + by + tasks.length) % tasks.length];
    this.picked = true;
    this.showTask(next.task_id);
    this.taskRows.get(next.task_id)?.el.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  showTask(taskId: string, force = false): void {
    if (this.shownTask === taskId && !force) return;
    const task = this.job.task_results.find((t) => t.task_id === taskId);
    if (!task) return;
    this.shownTask = taskId;
    this.shownState = taskState(task);
    for (const [id, row] of this.taskRows) {
      row.el.classList.toggle("selected", id === taskId);
      row.view.setAttribute("aria-current", String(id === taskId));
    }
    this.result.show(this.job, task);
  }

  destroy(): void {
    this.result.clear();
  }
}

function paramsText(entries: [string, unknown][]): string {
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

/** A task's view changes when it gets its result or fails. */
function taskState(t: Task): string {
  return `${t.result ? "result" : t.status === "FAILED" || t.status === "CANCELLED" ? t.status : "waiting"}`;
}

/** A task's picture in the gallery: its volume preview or its 2D result. */
function taskThumbnail(t: Task): string {
  const images = (t.result ? outputsOf(t.result) : []).filter((o) => viewKind(o) === "image");
  return (images.find((o) => o.role === "preview") ?? images.find((o) => o.role === "primary"))?.url ?? "";
}
