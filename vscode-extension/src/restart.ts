/**
 * When to restart a server process that died: exponential backoff, and give up after too many
 * crashes in a window (a server that dies at start-up must not be restarted forever).
 */

export interface RestartDecision {
  restart: boolean;
  delayMs: number; // wait before restarting (0 when not restarting)
  firstInBurst: boolean; // the first crash after a quiet period: tell the user (once)
}

export class RestartPolicy {
  private crashes: number[] = [];

  constructor(
    readonly baseMs = 1000,
    readonly maxDelayMs = 30000,
    readonly maxCrashes = 5,
    readonly windowMs = 3 * 60 * 1000,
  ) {}

  /** Record a crash at `now` (ms) and decide. */
  onCrash(now: number): RestartDecision {
    this.crashes = this.crashes.filter((t) => now - t < this.windowMs);
    const firstInBurst = this.crashes.length === 0;
    this.crashes.push(now);
    const n = this.crashes.length;
    if (n > this.maxCrashes) return { restart: false, delayMs: 0, firstInBurst };
    return { restart: true, delayMs: Math.min(this.maxDelayMs, this.baseMs * 2 ** (n - 1)), firstInBurst };
  }

  /** A restart the user asked for: forget the crash history. */
  reset(): void {
    this.crashes = [];
  }
}
