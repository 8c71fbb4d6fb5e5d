// What a task's result holds, read from what the processor marks (services/processor/imaging/
// outputs.py): each output's role ("primary": the result; "preview": a PNG of a volume's middle
// slice; "input": the unprocessed input in a form a browser can show, written for DICOM and
// DICOM-series ZIP inputs; "values" / "input_values": a grey 2D DICOM result / input in real units
// as a one-slice NIfTI, for windowing), its media type, and the result's metadata (`format` of the input,
// `content: "mask"` for a mask). The viewer is chosen from these, never from the operation's name.

import { fileUrl, type Job, type Output, type Task, type TaskResultBody } from "./api";

/** How a browser shows a file: NiiVue for a volume, an <img> for an image; null: it cannot. */
export type ViewKind = "volume" | "image" | null;

/** The outputs of a result, primary first; a result without the list has its one output_file. */
export function outputsOf(result: TaskResultBody): Output[] {
  if (result.outputs?.length) return result.outputs;
  return [{ filename: result.output_file, url: result.output_url, media_type: "", size: NaN, sha256: "", role: "primary" }];
}

function withRole(outputs: Output[], role: string): Output | undefined {
  return outputs.find((o) => o.role === role);
}

export function primaryOf(outputs: Output[]): Output | undefined {
  return withRole(outputs, "primary") ?? outputs[0];
}

/**
 * By media type; by name where the media type does not tell: NIfTI is sent as application/gzip
 * (the name says it is a volume), and an output without the list has no media type at all.
 */
export function viewKind(file: { media_type: string; filename: string }): ViewKind {
  if (/\.nii(\.gz)?$/i.test(file.filename)) return "volume";
  if (/^image\/(png|jpeg|gif|webp)$/.test(file.media_type) || /\.(png|jpe?g)$/i.test(file.filename)) return "image";
  return null;
}

/** The input formats (the result's metadata `format`) that a browser can show as they are. */
const INPUT_VIEW: Record<string, ViewKind> = { nifti: "volume", png: "image", jpeg: "image", dicom: null, zip: null };

function inputKind(task: Task, result: TaskResultBody): ViewKind {
  const format = String(result.metadata?.["format"] ?? "");
  return format in INPUT_VIEW ? INPUT_VIEW[format] : viewKind({ filename: task.input_file, media_type: "" });
}

export interface BeforeSource {
  url: string;
  /** File name (NiiVue picks the format from it; signed URLs end in ?token=...). */
  name: string;
  /** A signed URL loads as it is; otherwise it needs the identity headers. */
  signed: boolean;
}

/**
 * The "before" of a result to show as `kind`: the processor's role "input" output (a signed URL
 * from the API) or else the input file itself when a browser can show its format (its URL is
 * not in the API response, so it is built, unsigned). Null when there is neither.
 */
export function beforeOf(job: Job, task: Task, result: TaskResultBody, kind: "volume" | "image"): BeforeSource | null {
  const view = withRole(outputsOf(result), "input");
  if (view && viewKind(view) === kind) return { url: view.url, name: view.filename, signed: true };
  if (inputKind(task, result) === kind) return { url: fileUrl(job.user_id, job.job_id, task.input_file), name: task.input_file, signed: false };
  return null;
}

/**
 * A mask (labels on the input's grid), overlaid on its input by default. The processor marks it
 * only in the result's metadata (`content: "mask"`, written by the threshold operation): outputs
 * have no mask role, and a mask NIfTI has the media type of any other volume.
 */
export function isMask(result: TaskResultBody): boolean {
  return result.metadata?.["content"] === "mask";
}

/** The picture of a job in the list: the first volume preview or 2D result that is an image. */
export function thumbnailOutput(job: Job): Output | null {
  for (const t of job.task_results ?? []) {
    const images = (t.result ? outputsOf(t.result) : []).filter((o) => viewKind(o) === "image");
    const o = withRole(images, "preview") ?? withRole(images, "primary");
    if (o) return o;
  }
  return null;
}

/** A 2D image for the 2D viewer: real units (a NIfTI of values) or display pixels (PNG/JPEG). */
export interface PlaneRef {
  url: string;
  name: string;
  signed: boolean;
  real: boolean;
}

/** The result as the 2D viewer reads it: its real values when the processor wrote them, else the
 *  primary image. */
export function afterPlane(result: TaskResultBody): PlaneRef | null {
  const outputs = outputsOf(result);
  const values = withRole(outputs, "values");
  if (values) return { url: values.url, name: values.filename, signed: true, real: true };
  const primary = primaryOf(outputs);
  return primary && viewKind(primary) === "image" ? { url: primary.url, name: primary.filename, signed: true, real: false } : null;
}

/** The input as the 2D viewer reads it, in the same kind of values as the result when possible. */
export function beforePlane(job: Job, task: Task, result: TaskResultBody, realAfter: boolean): PlaneRef | null {
  const values = withRole(outputsOf(result), "input_values");
  if (values && realAfter) return { url: values.url, name: values.filename, signed: true, real: true };
  const before = beforeOf(job, task, result, "image");
  return before ? { ...before, real: false } : null;
}

/** The kind of a task's result ("2d" / "volume"), from its metadata, else guessed from the input
 *  name (a DICOM file may be either: null). */
export function resultKind(task: Task): "2d" | "volume" | null {
  const k = task.result?.metadata?.["kind"];
  if (k === "2d" || k === "volume") return k;
  if (/\.(nii|nii\.gz|zip)$/i.test(task.input_file)) return "volume";
  if (/\.(png|jpe?g)$/i.test(task.input_file)) return "2d";
  return null;
}

/**
 * Params that apply to one kind of result only. The catalogue's schema may say so itself with
 * `x-applies-to: ["2d"]` on a property (read first); otherwise this table, from the catalogue's
 * descriptions: output_format picks the file format of 2D results (volumes are always .nii.gz),
 * spacing and shape resample volumes.
 */
const PARAM_KINDS: Record<string, ("2d" | "volume")[]> = { output_format: ["2d"], spacing: ["volume"], shape: ["volume"] };

/** The job's params that apply to its tasks' kinds (all of them while the kinds are unknown). */
export function applicableParams(job: Job, schema?: Record<string, unknown>): [string, unknown][] {
  const kinds = new Set((job.task_results ?? []).map(resultKind));
  const props = (schema?.["properties"] ?? {}) as Record<string, Record<string, unknown>>;
  return Object.entries(job.params ?? {}).filter(([name]) => {
    const declared = props[name]?.["x-applies-to"];
    const applies = Array.isArray(declared) ? (declared as string[]) : PARAM_KINDS[name];
    if (!applies || !kinds.size || kinds.has(null)) return true;
    return [...kinds].some((k) => k !== null && applies.includes(k));
  });
}
