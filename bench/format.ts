// Number formatting shared by the table and the chart. NaN prints as a dash.

export const k = (n: number) => (Number.isNaN(n) ? '—' : n >= 10_000 ? `${(n / 1000).toFixed(1)} k` : n.toFixed(0));
export const f = (n: number, d = 2) => (Number.isNaN(n) ? '—' : n.toFixed(d));
export const pct = (n: number) => (Number.isNaN(n) ? '—' : `${(n * 100).toFixed(n < 0.01 && n > 0 ? 3 : 1)} %`);
export const mb = (n: number) => (Number.isNaN(n) ? '—' : `${(n / 2 ** 20).toFixed(0)} MB`);
export const x = (n: number) => (Number.isNaN(n) ? '—' : `${n.toFixed(2)} ×`);
export const cores = (n: number) => (Number.isNaN(n) ? '—' : `${n.toFixed(2)} cores`);
