// Job and task status: the names the API sends, which of them are final, and the progress shown
// for each. The same names and terminal set as services/common/status.py (a test compares them).

export const STATUSES = ["PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"] as const;
export type Status = (typeof STATUSES)[number];

/** States a job or task never leaves. */
export const TERMINAL_STATUSES = ["SUCCESS", "FAILED", "CANCELLED"] as const;
const TERMINAL: ReadonlySet<string> = new Set(TERMINAL_STATUSES);

export function isTerminal(status: string): boolean {
  return TERMINAL.has(status);
}

/** Progress to show: a finished or failed job or task is at 100 %, a cancelled one stays where
 *  it stopped, a running one shows what the server says. */
export function shownProgress(item: { status: string; progress: number }): number {
  return isTerminal(item.status) && item.status !== "CANCELLED" ? 100 : item.progress;
}
