// Retrying requests that failed for a reason that may pass (a service restarting, the network):
// the one backoff rule of the page (first delay, doubled after each failure, capped; back to the
// first delay after a success) and which errors are worth retrying.

import { ApiError } from "./api";

/** Waits `ms`, or less when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
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

/** 4xx answers other than timeouts / rate limits: retrying will not help. */
export function isFinal(e: unknown): boolean {
  return e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
}

export class Backoff {
  private delay: number;
  constructor(
    private readonly first: number,
    private readonly max: number,
  ) {
    this.delay = first;
  }

  /** The wait before the next attempt. */
  get next(): number {
    return this.delay;
  }

  reset(): void {
    this.delay = this.first;
  }

  /** Waits the current delay (cut short by `signal`) and doubles the next one. */
  async wait(signal?: AbortSignal): Promise<void> {
    const ms = this.delay;
    this.delay = Math.min(this.delay * 2, this.max);
    await sleep(ms, signal);
  }
}

export interface RetryOptions {
  backoff: Backoff;
  /** True when the caller no longer wants the answer (a newer load started): stop quietly. */
  stale: () => boolean;
  /** Called before each wait with the error and the wait in ms. */
  onRetry: (e: unknown, delayMs: number) => void;
  /** Errors for which another attempt cannot help; they are thrown. Default: isFinal. */
  final?: (e: unknown) => boolean;
}

/** Calls `attempt` until it succeeds, a final error is thrown, or the caller goes stale
 *  (then resolves to `undefined`). */
export async function retry<T>(attempt: () => Promise<T>, opts: RetryOptions): Promise<T | undefined> {
  const final = opts.final ?? isFinal;
  for (;;) {
    try {
      const value = await attempt();
      return opts.stale() ? undefined : value;
    } catch (e) {
      if (opts.stale()) return undefined;
      if (final(e)) throw e;
      opts.onRetry(e, opts.backoff.next);
      await opts.backoff.wait();
      if (opts.stale()) return undefined;
    }
  }
}
