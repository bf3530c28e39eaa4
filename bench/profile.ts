/**
 * Self-time shares of a broker `.cpuprofile` (from `BENCH_CPU_PROF=<dir> npm
 * run bench`, or `node --cpu-prof`), grouped as docs/performance.md groups
 * them. A sample's group is that of the nearest frame, from the sampled one
 * up its stack, that belongs to a group: native and Node-internal frames
 * (crypto, JSON, Buffer, streams) count for whatever called them.
 *
 *   node --import tsx bench/profile.ts <file.cpuprofile>...
 */
import { readFile } from 'node:fs/promises';

interface CallFrame {
  functionName: string;
  url: string;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const TOP_FRAMES = 15;

/** First match wins; `url` is the script's URL, `name` the function's. */
const GROUPS: { group: string; url?: RegExp; name?: RegExp }[] = [
  { group: '(idle)', name: /^\(idle\)$/ },
  { group: 'garbage collection', name: /^\(garbage collector\)$/ },
  { group: 'SQLite audit writes', url: /better-sqlite3|\/src\/audit\/sqlite\/|\/audit\/sqlite\/|\/audit\/core\/(group-commit|store|backend)\./ },
  { group: 'checkpointer verify walk', url: /\/audit\/core\/verify-walk\.|\/audit\/checkpoints\.|\/audit\/trusted-head\./ },
  { group: 'JWS sign + verify', url: /\/jose\/|\/oidc\/(jws|verify|jwks)\.|\/providers\/jwt\/|\/keys\/signing-key\./ },
  { group: 'canonical JSON + hashing', url: /canonicalize|\/audit\/record\.|\/pipeline\/audit-entry\./ },
  { group: 'logging (winston)', url: /winston|logform|readable-stream|\/src\/logger\.|\/dist\/logger\./ },
  { group: 'express routing + body parsing', url: /\/(express|router|body-parser|raw-body|iconv-lite|qs|type-is|content-type|on-finished|finalhandler|send|accepts|negotiator|mime-types|path-to-regexp|statuses|http-errors|depd|debug|media-typer|parseurl|cookie)\// },
  { group: 'rate limits', url: /rate-limiter-flexible|\/limits\// },
  { group: 'AWS SDK', url: /@aws-sdk|@smithy|@aws-crypto|fast-xml-parser/ },
  { group: 'metrics (prom-client)', url: /prom-client/ },
  { group: 'policy evaluation', url: /\/policy\/|@bufbuild|re2js|\/claims\// },
  { group: 'broker code, other', url: /\/(src|dist)\// },
  { group: 'Node HTTP + net', url: /^node:(_http|http|net|stream|internal\/(streams|http|net))/ },
];

function ownGroup(frame: CallFrame): string | undefined {
  for (const { group, url, name } of GROUPS) {
    if (url && url.test(frame.url)) return group;
    if (name && name.test(frame.functionName)) return group;
  }
  return undefined;
}

export function groupShares(profile: CpuProfile): { shares: { group: string; share: number; ms: number }[]; topFrames: { frame: string; group: string; ms: number }[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const child of n.children ?? []) parent.set(child, n.id);
  const groupOf = new Map<number, string>();
  const resolve = (id: number): string => {
    const known = groupOf.get(id);
    if (known !== undefined) return known;
    const own = ownGroup(byId.get(id)!.callFrame);
    const up = parent.get(id);
    const group = own ?? (up === undefined ? 'other (Node internals, program)' : resolve(up));
    groupOf.set(id, group);
    return group;
  };
  const totals = new Map<string, number>();
  const frames = new Map<string, { groups: Set<string>; micros: number }>();
  let all = 0;
  profile.samples.forEach((id, i) => {
    const micros = profile.timeDeltas[i] ?? 0;
    const group = resolve(id);
    totals.set(group, (totals.get(group) ?? 0) + micros);
    const { functionName, url } = byId.get(id)!.callFrame;
    const frame = `${functionName || '(anonymous)'} ${url.replace(/^.*\/node_modules\//, '').replace(/^file:\/\/.*\/(src|dist)\//, '$1/')}`.trim();
    const entry = frames.get(frame) ?? { groups: new Set<string>(), micros: 0 };
    entry.groups.add(group);
    entry.micros += micros;
    frames.set(frame, entry);
    all += micros;
  });
  return {
    shares: [...totals].map(([group, micros]) => ({ group, share: micros / all, ms: micros / 1000 })).sort((a, b) => b.share - a.share),
    topFrames: [...frames].map(([frame, { groups, micros }]) => ({ frame, group: [...groups].join(' / '), ms: micros / 1000 })).sort((a, b) => b.ms - a.ms).slice(0, TOP_FRAMES),
  };
}

async function main(files: string[]): Promise<void> {
  if (files.length === 0) throw new Error('usage: node --import tsx bench/profile.ts <file.cpuprofile>...');
  for (const file of files) {
    const { shares, topFrames } = groupShares(JSON.parse(await readFile(file, 'utf8')) as CpuProfile);
    const busy = shares.filter((s) => s.group !== '(idle)').reduce((sum, s) => sum + s.ms, 0);
    console.log(`\n${file}: ${Math.round(busy)} ms busy; shares of all samples, and of the busy ones:`);
    console.table(shares.map((s) => ({ group: s.group, 'of all': `${(s.share * 100).toFixed(1)}%`, 'of busy': s.group === '(idle)' ? '' : `${((s.ms / busy) * 100).toFixed(1)}%`, ms: Math.round(s.ms) })));
    console.log(`top ${TOP_FRAMES} frames by self time (the groups its samples counted for):`);
    console.table(topFrames.map((f) => ({ frame: f.frame.slice(0, 90), group: f.group, ms: Math.round(f.ms) })));
  }
}

await main(process.argv.slice(2));
