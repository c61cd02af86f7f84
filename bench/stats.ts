// Statistics every bench part uses: the median, and which measurements were quiet
// enough to count on a shared machine.

export function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// A shared 2-core machine: when other processes take a sizeable share of a
// core during a measurement, both the server and the generator lose it. Such
// measurements stay in the JSON, but the medians use only the quiet ones
// (unless no measurement was quiet).
export const NOISE_CORES = 0.25;
