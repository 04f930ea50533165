// When the model may categorise: it answers within a latency budget or not at all, so that a
// slow GPU (or none) never holds tabs up; the rules answer instead (rules.mjs).
//
//   const budget = new LatencyBudget({ perTabMs: 50, minMs: 400 });
//   budget.allows(n)          // may the model take a batch of n tabs now?
//   budget.deadlineMs(n)      // how long its answer may take
//   budget.record(n, ms, epoch)  // what a batch took (or, timed out, at least took); epoch:
//                                // budget.epoch when it was asked
//
// The estimate is the last batches' time per tab (an exponential average). Once the model has
// been too slow it is asked again only every `retryMs` (a probe: the GPU may be free again);
// a probe's answer counts even when it comes late. configure() starts a new epoch: answers to
// calls made before it still refine the estimate, but cannot mark the model slow under the new
// settings (a late answer landing just after a change would otherwise bar the next call).
// Pure: the clock is injected.

import { describe } from "./describe.mjs";

const MAX_TIMER_MS = 2 ** 31 - 1;

export class LatencyBudget {
  constructor({ perTabMs = 50, minMs = 400, retryMs = 60_000, smoothing = 0.5, now = () => Date.now() } = {}) {
    this.perTabMs = perTabMs; // the most the model may take per tab in a batch
    this.minMs = minMs; // ... but never less than this for a whole batch (one tab, start-up)
    this.retryMs = retryMs;
    this.smoothing = smoothing;
    this.now = now;
    this.estimate = null; // ms per tab, null until measured
    this.slowSince = null; // when the model last went over its budget
    this.epoch = 0; // configure() calls so far
  }

  configure(options) {
    const keys = ["perTabMs", "minMs", "retryMs"].filter((key) => options[key] !== undefined);
    for (const key of keys) {
      if (!(Number.isFinite(options[key]) && options[key] >= 0)) throw new Error(`${key} must be a finite number >= 0, got ${describe(options[key])}`);
    }
    for (const key of keys) this[key] = options[key]; // all or nothing
    this.slowSince = null;
    this.epoch += 1;
  }

  // Never past what a timer can wait: setTimeout fires at once for a longer delay.
  deadlineMs(n) {
    return Math.min(MAX_TIMER_MS, Math.max(this.minMs, this.perTabMs * n));
  }

  fits(n) {
    return this.estimate === null || this.estimate * n <= this.deadlineMs(n);
  }

  allows(n) {
    if (this.fits(n)) return true;
    return this.slowSince === null || this.now() - this.slowSince >= this.retryMs;
  }

  record(n, ms, epoch = this.epoch) {
    const perTab = ms / Math.max(1, n);
    this.estimate = this.estimate === null ? perTab : this.smoothing * perTab + (1 - this.smoothing) * this.estimate;
    if (epoch !== this.epoch) return; // asked under other settings
    if (ms > this.deadlineMs(n)) this.slowSince = this.now();
    else if (this.fits(n)) this.slowSince = null;
  }

  status() {
    return { perTabMs: this.perTabMs, minMs: this.minMs, estimateMs: this.estimate, slow: this.slowSince !== null };
  }
}
