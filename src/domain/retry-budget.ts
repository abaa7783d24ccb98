/**
 * How long failures are waited out, by time rather than by count (issue 13). Pure: the run starter
 * computes a run's budget from these, the activities wait within them.
 */

/**
 * How long a case phase rides out an outage of Docker or Postgres in place, heartbeating, before it
 * gives the failure to Temporal's retry policy. Longer than the 60 s outages we promise to survive
 * (issue 13 item 7): a restart of either service costs no attempt and never re-runs an agent.
 */
export const INFRA_OUTAGE_BUDGET_MS = 120_000;

/**
 * The outage of Temporal itself we promise a run survives (issue 13): longer than the container
 * phase's heartbeat timeout, so the attempts in flight lapse and are retried once it is back.
 */
export const TEMPORAL_OUTAGE_BUDGET_MS = 5 * 60_000;

/**
 * How long a case's container phase may keep retrying, from its first attempt's scheduling: the
 * CONSUMER_MAX_RETRIES full-length attempts it was always allowed, plus a Temporal outage and a
 * Docker/Postgres outage on top. By time, not by count: an outage that lapses heartbeats, or a
 * worker killed a few times in a row, costs attempts of a few seconds each, not the case.
 */
export function caseRetryBudgetSeconds(s: {
  caseActivityTimeoutSeconds: number;
  caseMaxAttempts: number;
}): number {
  return (
    s.caseMaxAttempts * s.caseActivityTimeoutSeconds +
    (TEMPORAL_OUTAGE_BUDGET_MS + INFRA_OUTAGE_BUDGET_MS) / 1000
  );
}
