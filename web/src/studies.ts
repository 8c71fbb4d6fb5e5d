// The studies browser: the user's results grouped by patient, study and series from the DICOM
// metadata that results carry (patient_id, study_instance_uid, study_description, study_date,
// series_instance_uid, series_number, series_description, modality). Each series lists its
// results (one per task that processed it) with a thumbnail; other series that a DICOM ZIP held
// but no task processed are listed too. Inputs without DICOM metadata (NIfTI, PNG, JPEG) are
// grouped under "No DICOM patient data", one entry per file.

import type { Job, Task } from "./api";
import { outputsOf, viewKind } from "./results";
import { h } from "./util";

export interface SeriesResult {
  jobId: string;
  taskId: string;
  operation: string;
  file: string;
  thumb: string;
  created: string;
}

export interface Series {
  uid: string;
  number: number | null;
  description: string;
  modality: string;
  slices: number | null;
  results: SeriesResult[];
}

export interface Study {
  uid: string;
  description: string;
  date: string;
  series: Series[];
}

export interface Patient {
  id: string;
  studies: Study[];
}

const NO_PATIENT = "No DICOM patient data";

function text(v: unknown): string {
  return typeof v === "string" ? v : typeof v === "number" ? String(v) : "";
}

function thumbOf(t: Task): string {
  const images = (t.result ? outputsOf(t.result) : []).filter((o) => viewKind(o) === "image");
  return (images.find((o) => o.role === "preview") ?? images.find((o) => o.role === "primary"))?.url ?? "";
}

/** Groups the tasks with results of these jobs by patient / study / series. */
export function groupStudies(jobs: Iterable<Job>): Patient[] {
  const patients = new Map<string, Map<string, Study>>();
  const seriesOf = (pid: string, meta: Record<string, unknown>, fallbackStudy: string, fallbackSeries: string): Series => {
    let studies = patients.get(pid);
    if (!studies) patients.set(pid, (studies = new Map()));
    const studyUid = text(meta["study_instance_uid"]) || fallbackStudy;
    let study = studies.get(studyUid);
    if (!study) studies.set(studyUid, (study = { uid: studyUid, description: text(meta["study_description"]), date: text(meta["study_date"]), series: [] }));
    const uid = text(meta["series_instance_uid"]) || fallbackSeries;
    let series = study.series.find((s) => s.uid === uid);
    if (!series) {
      const n = Number(meta["series_number"]);
      series = { uid, number: Number.isFinite(n) && meta["series_number"] !== undefined ? n : null, description: text(meta["series_description"]), modality: text(meta["modality"]), slices: Number(meta["slices"]) || null, results: [] };
      study.series.push(series);
    }
    return series;
  };
  const others: [string, Record<string, unknown>, string][] = [];
  for (const job of jobs) {
    for (const t of job.task_results ?? []) {
      const meta = t.result?.metadata;
      if (!meta) continue;
      const dicom = meta["format"] === "dicom" || meta["format"] === "zip";
      const pid = dicom ? text(meta["patient_id"]) || "Unknown patient" : NO_PATIENT;
      const series = seriesOf(pid, meta, dicom ? "unknown study" : "files", dicom ? `${job.job_id}/${t.task_id}` : `file:${t.input_file}`);
      if (!dicom) series.description ||= t.input_file;
      series.results.push({ jobId: job.job_id, taskId: t.task_id, operation: job.task_type, file: t.input_file, thumb: thumbOf(t), created: job.created_at });
      const other = meta["other_series"];
      if (dicom && Array.isArray(other)) for (const o of other) others.push([pid, { ...meta, ...(o as Record<string, unknown>), series_number: (o as Record<string, unknown>)["series_number"] }, job.job_id]);
    }
  }
  // Series that a ZIP held besides the one processed: listed without results, unless a task has them.
  for (const [pid, meta] of others) seriesOf(pid, meta, "unknown study", `other:${text(meta["series_instance_uid"])}`);
  const out: Patient[] = [];
  for (const [id, studies] of patients) {
    const list = [...studies.values()];
    for (const s of list) s.series.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || a.description.localeCompare(b.description));
    list.sort((a, b) => b.date.localeCompare(a.date));
    out.push({ id, studies: list });
  }
  return out.sort((a, b) => Number(a.id === NO_PATIENT) - Number(b.id === NO_PATIENT) || a.id.localeCompare(b.id));
}

export class StudiesView {
  readonly el: HTMLElement;
  private body: HTMLElement;

  constructor(private open: (jobId: string, taskId: string) => void) {
    this.body = h("div", { class: "studies-body" });
    this.el = h("section", { class: "studies", "aria-label": "Studies", "data-testid": "studies" }, this.body);
  }

  render(jobs: Iterable<Job>): void {
    const patients = groupStudies(jobs);
    if (!patients.length) {
      this.body.replaceChildren(h("p", { class: "muted list-status" }, "No results yet. Finished jobs appear here by patient, study and series."));
      return;
    }
    this.body.replaceChildren(
      ...patients.map((p) =>
        h(
          "details",
          { class: "patient", open: true, "data-patient": p.id },
          h("summary", {}, h("span", { class: "patient-id" }, p.id === NO_PATIENT ? p.id : `Patient ${p.id}`), h("span", { class: "muted" }, ` · ${p.studies.length} stud${p.studies.length === 1 ? "y" : "ies"}`)),
          ...p.studies.map((s) =>
            h(
              "div",
              { class: "study", "data-study": s.uid },
              h("div", { class: "study-head" }, s.description || (p.id === NO_PATIENT ? "Files" : "Study"), h("span", { class: "muted" }, s.date ? ` · ${fmtDate(s.date)}` : "")),
              h("ul", { class: "series-list" }, ...s.series.map((se) => this.seriesItem(se))),
            ),
          ),
        ),
      ),
    );
  }

  private seriesItem(se: Series): HTMLElement {
    const first = se.results[0];
    const title = [se.number !== null ? `#${se.number}` : "", se.modality, se.description || "(no description)"].filter(Boolean).join(" ");
    const thumb = h("span", { class: "thumb", "aria-hidden": "true" }, first?.thumb ? h("img", { src: first.thumb, alt: "", loading: "lazy" }) : null);
    const results = se.results.map((r) => {
      const b = h("button", { type: "button", class: "small secondary", title: `${r.file} · job ${r.jobId.slice(0, 8)}` }, r.operation);
      b.addEventListener("click", () => this.open(r.jobId, r.taskId));
      return b;
    });
    return h(
      "li",
      { class: "series", "data-series": se.uid },
      thumb,
      h(
        "span",
        { class: "series-main" },
        h("span", { class: "series-title", title }, title),
        h("span", { class: "muted series-sub" }, se.results.length ? `${se.results.length} result(s)${se.slices ? ` · ${se.slices} slices` : ""}` : "in an uploaded ZIP; not processed"),
        results.length ? h("span", { class: "row tight" }, ...results) : null,
      ),
    );
  }
}

function fmtDate(d: string): string {
  return /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d;
}
