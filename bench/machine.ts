// How busy the whole machine is, from /proc/stat. On a shared 2-core box other
// processes steal cycles from both the server and the generator; the bench
// reports how much, so a noisy round can be recognised as such.
import { readFileSync } from 'node:fs';

const CLK_TCK = 100; // Linux USER_HZ

export interface MachineCpu {
  /** CPU seconds spent busy, all cores, since boot. */
  busySeconds: number;
  /** CPU seconds the hypervisor gave to someone else, all cores. */
  stealSeconds: number;
}

export function machineCpu(): MachineCpu | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal ...
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return {
      busySeconds: (user! + nice! + system! + irq! + softirq!) / CLK_TCK,
      stealSeconds: (steal ?? 0) / CLK_TCK,
    };
  } catch {
    return undefined;
  }
}

/** This process's CPU seconds, all threads (the load generator included). */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
