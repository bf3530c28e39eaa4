import { evaluate } from './evaluate.js';
import { withGrantRendered } from './explain.js';
import type { PolicySet } from './types.js';

/** What a policy set decides for a recorded request: as the exchange would, or that it has no such policy. */
export type ImpactDecision = 'allow' | 'deny' | 'unknown_policy';

/** The parts of an audit record the replay reads (docs/audit.md): never a secret, the log holds none. */
export interface RecordedRequest {
  issuer: string | null;
  subject: string | null;
  policy: string | null;
  audience: readonly string[] | null;
  claims: Readonly<Record<string, unknown>> | null;
}

/** One (subject, issuer, policy) whose decision differs between the two sets, and how many recorded requests it covers. */
export interface ImpactRow {
  subject: string;
  issuer: string;
  policy: string;
  before: ImpactDecision;
  after: ImpactDecision;
  requests: number;
}

export interface ImpactTally {
  /** Replays one record against both sets; records without a verified claim set (refused before verification) are skipped. */
  add(record: RecordedRequest): void;
  /** Records replayed (not skipped). */
  replayed(): number;
  /** The changes, newly allowed first, then by request count. */
  rows(): ImpactRow[];
}

/**
 * Replays recorded requests against two policy sets, exactly as an exchange
 * evaluates a verified token (the named policy, the issuer's deny policies,
 * then whether the claims can fill the grant), and counts the requests
 * whose decision differs. Audiences are not checked again: the recorded
 * token passed the broker's audience check when it was verified.
 */
export function createImpactTally(before: PolicySet, after: PolicySet): ImpactTally {
  const changes = new Map<string, ImpactRow>();
  let replayed = 0;
  return {
    add(record) {
      const { issuer, subject, policy, claims } = record;
      if (issuer === null || subject === null || policy === null || claims === null) return;
      replayed += 1;
      const token = { issuerName: issuer, claims, audiences: [...(record.audience ?? [])] };
      const was = decide(before, policy, token);
      const now = decide(after, policy, token);
      if (was === now) return;
      const key = JSON.stringify([subject, issuer, policy, was, now]);
      const row = changes.get(key);
      if (row === undefined) changes.set(key, { subject, issuer, policy, before: was, after: now, requests: 1 });
      else row.requests += 1;
    },
    replayed: () => replayed,
    rows: () => [...changes.values()].sort((a, b) => Number(isNewlyAllowed(b)) - Number(isNewlyAllowed(a)) || b.requests - a.requests || a.subject.localeCompare(b.subject)),
  };
}

/** True when a row grants what the before set did not: the change a review must look at. */
export function isNewlyAllowed(row: Pick<ImpactRow, 'before' | 'after'>): boolean {
  return row.after === 'allow' && row.before !== 'allow';
}

function decide(set: PolicySet, policyName: string, token: { issuerName: string; claims: Readonly<Record<string, unknown>>; audiences: string[] }): ImpactDecision {
  const policy = set.byName.get(policyName);
  if (policy === undefined) return 'unknown_policy';
  return withGrantRendered(policy, evaluate(set, policy, token), token.claims).allowed ? 'allow' : 'deny';
}
