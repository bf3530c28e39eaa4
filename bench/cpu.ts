/**
 * CPU accounting around a load run (Linux /proc): the CPU time a process
 * spent with all its threads (the broker's SQLite worker and libuv's pool
 * included), and how busy the whole machine was. Throughput on a machine
 * shared by the load generator and the server depends on how the two split
 * the cores; CPU time per request does not, so it is the steadier figure.
 */
import { readFile } from 'node:fs/promises';

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** User + system CPU seconds of `pid` and its threads so far; undefined where /proc is not readable. */
export async function processCpuSeconds(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // Fields after the command name (which may hold spaces, so split after its closing parenthesis): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** Busy and total ticks of all cores so far (the `cpu` line of /proc/stat). */
async function machineTicks(): Promise<{ busy: number; total: number } | undefined> {
  const stat = await readFile('/proc/stat', 'utf8').catch(() => undefined);
  const line = stat?.split('\n')[0];
  if (line === undefined || !line.startsWith('cpu ')) return undefined;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // idle and iowait are the 4th and 5th.
  const total = ticks.reduce((a, b) => a + b, 0);
  return { busy: total - ticks[3]! - ticks[4]!, total };
}

export interface CpuSpan {
  /** CPU seconds of each watched process during the span, in the order given. */
  processSeconds: (number | undefined)[];
  /** CPU seconds of this process (the load generator) during the span. */
  selfSeconds: number;
  /** Share of all cores that was busy during the span, 0 to 1. */
  machineBusy: number | undefined;
}

/** Starts measuring; `end()` gives what the watched processes, this one and the machine used since. */
export async function startCpuSpan(pids: (number | undefined)[]): Promise<{ end: () => Promise<CpuSpan> }> {
  const before = await Promise.all(pids.map(processCpuSeconds));
  const self = process.cpuUsage();
  const machine = await machineTicks();
  return {
    end: async () => {
      const after = await Promise.all(pids.map(processCpuSeconds));
      const selfUsed = process.cpuUsage(self);
      const machineAfter = await machineTicks();
      return {
        processSeconds: after.map((a, i) => (a === undefined || before[i] === undefined ? undefined : a - before[i])),
        selfSeconds: (selfUsed.user + selfUsed.system) / 1e6,
        machineBusy: machine && machineAfter ? (machineAfter.busy - machine.busy) / Math.max(1, machineAfter.total - machine.total) : undefined,
      };
    },
  };
}
