// Live updates of jobs: Server-Sent Events per job, polled and re-opened with backoff when the
// stream ends early or fails, and the "interrupted" note that the list and the detail show.

import { ApiError, getJob, streamJobEvents, type Job } from "./api";
import { Backoff } from "./retry";
import { isTerminal } from "./status";

const MAX_STREAMS = 4; // HTTP/1.1 allows ~6 connections per origin; leave room for the rest

export const INTERRUPTED_TEXT = "Live updates interrupted — retrying…";

/** Shows or hides the "interrupted" note `live` of the job shown by `el` (a row or the detail). */
export function showInterrupted(el: HTMLElement, live: HTMLElement, on: boolean): void {
  live.textContent = on ? INTERRUPTED_TEXT : "";
  live.hidden = !on;
  if (on) el.dataset.live = "interrupted";
  else delete el.dataset.live;
}

/**
 * Follows jobs through SSE (a few streams at a time, the others queued) and re-connects. When the
 * stream and the polls fail (e.g. 503 while the jobs service is down) it says so through
 * `onTrouble(id, true)`, keeps retrying with backoff, and says `onTrouble(id, false)` once an
 * answer comes again.
 */
export class Watcher {
  private active = new Map<string, AbortController>();
  private queue: string[] = [];
  private troubled = new Set<string>();
  constructor(
    private onJob: (job: Job) => void,
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
    let done = false;
    const backoff = new Backoff(500, 10_000);
    const seen = (job: Job) => {
      done = isTerminal(job.status);
      this.trouble(id, false);
      this.onJob(job);
    };
    /** False when following must stop: aborted, or the job is gone (404). */
    const failed = (e: unknown): boolean => {
      if (ctrl.signal.aborted) return false;
      if (e instanceof ApiError && e.status === 404) {
        this.onGone(id);
        return false;
      }
      this.trouble(id, true); // 503, network error, ...: say so and retry
      return true;
    };
    while (!ctrl.signal.aborted) {
      try {
        await streamJobEvents(
          id,
          (job) => {
            backoff.reset(); // the stream works: a later break starts again from the first delay
            seen(job);
          },
          ctrl.signal,
        );
      } catch (e) {
        if (!failed(e)) return;
      }
      if (ctrl.signal.aborted || done) return;
      // The stream ended early (server restart, proxy timeout) or failed: wait, poll once, then
      // re-connect, backing off.
      await backoff.wait(ctrl.signal);
      if (ctrl.signal.aborted) return;
      try {
        seen(await getJob(id));
        if (done) return;
      } catch (e) {
        if (!failed(e)) return;
      }
    }
  }
}
