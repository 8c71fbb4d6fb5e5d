// REST client of the gateway (README, "Using the API"; /openapi.json). Every request goes to the
// same origin with relative URLs and carries the caller's identity from identityHeaders().

import { parseSSE } from "./sse";
import type { Status } from "./status";

export interface Output {
  filename: string;
  url: string;
  media_type: string;
  size: number;
  sha256: string;
  role: string; // "primary" | "preview" | "input"
}

export interface TaskResultBody {
  input_file: string;
  output_file: string;
  output_url: string;
  task_type: string;
  outputs?: Output[];
  metadata?: Record<string, unknown>;
}

export interface Task {
  task_id: string;
  status: Status;
  progress: number;
  input_file: string;
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
  result: TaskResultBody | null;
  /** What the processor noted (decoder, warnings, step times); empty until the task finishes. */
  logs?: string[];
}

export interface Job {
  job_id: string;
  user_id: string;
  status: Status;
  progress: number;
  message: string;
  task_type: string;
  params: Record<string, unknown>;
  created_at: string;
  updated_at: string;
  task_results: Task[];
}

export interface Operation {
  name: string;
  title: string;
  description: string;
  accepts: string[];
  params_schema: Record<string, unknown>;
  outputs: string;
}

// ---- identity -----------------------------------------------------------------------------
// The gateway says how it learns who calls (GET /config): the X-User-ID header ("header" mode) or
// a Bearer token ("jwt" mode; pasted, or handed over by an OIDC redirect as #access_token=...).

const USER_KEY = "radiology.userId";
const TOKEN_KEY = "radiology.accessToken";
const USER_ID_RE = /^[A-Za-z0-9._@-]{1,64}$/;

export type AuthMode = "header" | "jwt";
let authMode: AuthMode = "header";

export function validUserId(id: string): boolean {
  return USER_ID_RE.test(id) && id !== "." && id !== "..";
}

/** The `sub` claim of a JWT, for display only (the gateway verifies the token); "" if none. */
export function tokenSubject(token: string): string {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload)) as { sub?: unknown };
    return typeof claims.sub === "string" ? claims.sub : "";
  } catch {
    return "";
  }
}

export const identity = {
  get mode(): AuthMode {
    return authMode;
  },
  /** Who is signed in: the user id (header mode) or the token's subject (jwt mode). */
  get userId(): string {
    return authMode === "jwt" ? tokenSubject(this.token) : (localStorage.getItem(USER_KEY) ?? "");
  },
  get token(): string {
    return sessionStorage.getItem(TOKEN_KEY) ?? "";
  },
  set(userId: string): void {
    localStorage.setItem(USER_KEY, userId);
  },
  setToken(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
};

/** Asks the gateway for its auth mode; in jwt mode takes a token from `#access_token=` (an OIDC
 *  redirect) and removes it from the address bar and history. */
export async function loadAuthMode(): Promise<AuthMode> {
  try {
    const res = await fetch("/config");
    if (res.ok) authMode = ((await res.json()) as { auth: AuthMode }).auth === "jwt" ? "jwt" : "header";
  } catch {
    /* an older gateway or none: header mode */
  }
  const token = new URLSearchParams(location.hash.slice(1)).get("access_token");
  if (authMode === "jwt" && token) {
    identity.setToken(token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return authMode;
}

/** Headers that say who the caller is: X-User-ID, or Authorization: Bearer in jwt mode. */
export function identityHeaders(): Record<string, string> {
  if (authMode === "jwt") return identity.token ? { Authorization: `Bearer ${identity.token}` } : {};
  return identity.userId ? { "X-User-ID": identity.userId } : {};
}

// ---- errors -------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(
    public status: number,
    public detail: string,
    public code: string,
  ) {
    super(detail);
  }
  /** One line a person can read, e.g. "415 Unsupported Media Type: notes.txt is not an image". */
  get text(): string {
    const reason = REASONS[this.status];
    return this.status ? `${this.status}${reason ? " " + reason : ""}: ${this.detail}` : this.detail;
  }
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  413: "Too Large",
  415: "Unsupported Media Type",
  422: "Invalid Parameters",
  429: "Too Many Requests",
  503: "Service Unavailable",
};

function detailOf(body: unknown): { detail: string; code: string } | null {
  if (body && typeof body === "object" && "detail" in body) {
    const b = body as { detail: unknown; code?: unknown };
    const detail =
      typeof b.detail === "string"
        ? b.detail
        : Array.isArray(b.detail) // FastAPI validation errors
          ? b.detail.map((d) => (d && typeof d === "object" && "msg" in d ? String(d.msg) : String(d))).join("; ")
          : JSON.stringify(b.detail);
    return { detail, code: typeof b.code === "string" ? b.code : "" };
  }
  return null;
}

/** What to tell a person about any error: the API's readable line, or the error's own text. */
export function errorText(e: unknown): string {
  return e instanceof ApiError ? e.text : String(e);
}

export function errorFrom(status: number, text: string): ApiError {
  let parsed: { detail: string; code: string } | null = null;
  try {
    parsed = detailOf(JSON.parse(text));
  } catch {
    /* not JSON */
  }
  if (parsed) return new ApiError(status, parsed.detail, parsed.code);
  return new ApiError(status, text.trim().slice(0, 300) || `HTTP ${status}`, "http_error");
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, { ...init, headers: { ...identityHeaders(), ...(init.headers ?? {}) } });
  } catch (e) {
    throw new ApiError(0, `The server cannot be reached (${(e as Error).message}).`, "network");
  }
  const text = await res.text();
  if (!res.ok) throw errorFrom(res.status, text);
  return (text ? JSON.parse(text) : null) as T;
}

// ---- endpoints ----------------------------------------------------------------------------

let operations: Operation[] = [];

export async function listOperations(): Promise<{ operations: Operation[] }> {
  const body = await request<{ operations: Operation[] }>("/operations");
  operations = body.operations ?? [];
  return body;
}

/** An operation of the catalogue as last loaded (undefined before it loads). */
export function knownOperation(name: string): Operation | undefined {
  return operations.find((o) => o.name === name);
}

export function listJobs(limit: number, cursor?: string | null, status?: string | null): Promise<{ jobs: Job[]; next_cursor: string | null }> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (cursor) q.set("cursor", cursor);
  if (status) q.set("status", status);
  return request(`/jobs?${q}`);
}

export function getJob(id: string): Promise<Job> {
  return request(`/jobs/${encodeURIComponent(id)}`);
}

export function cancelJob(id: string): Promise<unknown> {
  return request(`/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
}

export function deleteJob(id: string): Promise<unknown> {
  return request(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/**
 * URL of one of a job's files, `GET /files/{user_id}/{job_id}/{filename}`. Only for a file the API
 * gives no URL for (a job's input): it is not signed, so fetch it with the identity headers.
 * Outputs come with signed URLs (`url`, `output_url`); use those.
 */
export function fileUrl(userId: string, jobId: string, filename: string): string {
  return `/files/${encodeURIComponent(userId)}/${encodeURIComponent(jobId)}/${encodeURIComponent(filename)}`;
}

/** Fetches a file with the identity headers; returns the Blob (for an object URL) or throws. */
export async function fetchBlob(url: string, signal?: AbortSignal): Promise<Blob> {
  const res = await fetch(url, { headers: identityHeaders(), signal });
  if (!res.ok) throw errorFrom(res.status, await res.text());
  return res.blob();
}

/** The answer to POST /jobs. */
export interface CreatedJob extends Pick<Job, "job_id" | "user_id" | "status" | "created_at"> {
  task_ids: string[];
}

export interface UploadHandle {
  promise: Promise<CreatedJob>;
  abort: () => void;
}

/**
 * POST /jobs as multipart (field `files` per file, `task_type`, `params` as JSON text) through
 * XMLHttpRequest, whose upload.onprogress reports bytes sent. `onProgress(loaded, total)`.
 */
export function uploadJob(
  files: File[],
  taskType: string,
  params: Record<string, unknown>,
  onProgress: (loaded: number, total: number) => void,
): UploadHandle {
  const form = new FormData();
  form.append("task_type", taskType);
  form.append("params", JSON.stringify(params));
  for (const f of files) form.append("files", f, f.name);
  const xhr = new XMLHttpRequest();
  const promise = new Promise<CreatedJob>((resolve, reject) => {
    xhr.open("POST", "/jobs");
    for (const [k, v] of Object.entries(identityHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText) as CreatedJob);
        } catch {
          reject(new ApiError(xhr.status, "The server answered with something that is not JSON.", "bad_response"));
        }
      } else reject(errorFrom(xhr.status, xhr.responseText));
    };
    xhr.onerror = () => reject(new ApiError(0, "The upload failed: the server cannot be reached.", "network"));
    xhr.onabort = () => reject(new ApiError(0, "The upload was cancelled.", "aborted"));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/**
 * Follows GET /jobs/{id}/events (Server-Sent Events) through fetch() and a ReadableStream, so the
 * identity headers go along (EventSource cannot send headers). Calls onJob for every `job` event.
 * Resolves when the stream ends (the server closes it after a terminal state) or on abort.
 */
export async function streamJobEvents(id: string, onJob: (job: Job) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/jobs/${encodeURIComponent(id)}/events`, {
    headers: { ...identityHeaders(), Accept: "text/event-stream" },
    signal,
    cache: "no-store",
  });
  if (!res.ok) throw errorFrom(res.status, await res.text());
  if (!res.body) throw new ApiError(0, "This browser cannot read streamed responses.", "no_stream");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = parseSSE((ev) => {
    if (ev.event === "job" || ev.event === "message") {
      try {
        onJob(JSON.parse(ev.data) as Job);
      } catch {
        /* ignore a malformed event */
      }
    }
  });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  } finally {
    reader.releaseLock();
  }
}
