// The results chart: hand-written SVG, no dependencies. Left panel: closed-loop
// pulse replies/s per server (median, min–max whisker). Right: open-loop p99.
import { f, k } from './format.js';
import type { BenchResults } from './results.js';

export function renderSvg(r: BenchResults): string {
  const bars: { label: string; value: number; min?: number; max?: number; p99: number }[] = r.servers
    .filter((s) => s.median)
    .map((s) => ({ label: s.name, value: s.median!.closedRate, min: s.median!.closedRateMin, max: s.median!.closedRateMax, p99: s.median!.p99 }));
  if (r.scale) bars.push({ label: `tracker, ${r.scale.peers.toLocaleString('en')} peers`, value: r.scale.closed.load.replyRate, p99: r.scale.open.load.latencyMs.p99 });
  const W = 820;
  const labelW = 210;
  const rateW = 300; // longest bar of the left panel, plus ~60 px for its label
  const p99X = labelW + rateW + 70;
  const p99W = W - p99X - 60;
  const barH = 22;
  const gap = 8;
  const top = 52;
  const H = top + bars.length * (barH + gap) + 30;
  const maxRate = Math.max(1, ...bars.map((b) => b.max ?? b.value));
  const maxP99 = Math.max(0.001, ...bars.map((b) => (Number.isNaN(b.p99) ? 0 : b.p99)));
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const color = (label: string) => (label.startsWith('echo') ? '#9aa5b1' : label.startsWith('naive') ? '#e3a34b' : '#3d7dca');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${labelW}" y="38" font-size="13" font-weight="bold">closed loop: pulse replies/s</text>`,
    `<text x="${p99X}" y="38" font-size="13" font-weight="bold">open loop: p99 latency, ms</text>`,
    `<text x="10" y="18" fill="#555">median of the rounds; the whisker spans min–max</text>`,
  ];
  bars.forEach((b, i) => {
    const y = top + i * (barH + gap);
    const w = (b.value / maxRate) * rateW;
    parts.push(`<text x="${labelW - 8}" y="${y + barH * 0.7}" text-anchor="end">${esc(b.label)}</text>`);
    parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color(b.label)}"/>`);
    if (b.min !== undefined && b.max !== undefined) {
      const x0 = labelW + (b.min / maxRate) * rateW;
      const x1 = labelW + (b.max / maxRate) * rateW;
      parts.push(`<line x1="${x0.toFixed(1)}" x2="${x1.toFixed(1)}" y1="${y + barH / 2}" y2="${y + barH / 2}" stroke="#222"/>`);
    }
    parts.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH * 0.7}">${esc(k(b.value))}</text>`);
    const px = p99X;
    const pw = Number.isNaN(b.p99) ? 0 : (b.p99 / maxP99) * p99W;
    parts.push(`<rect x="${px}" y="${y}" width="${pw.toFixed(1)}" height="${barH}" fill="${color(b.label)}" opacity="0.7"/>`);
    parts.push(`<text x="${(px + pw + 4).toFixed(1)}" y="${y + barH * 0.7}">${esc(f(b.p99, 3))}</text>`);
  });
  parts.push(`<text x="${labelW}" y="${H - 10}" fill="#555">${esc(`${r.machine.cpus} × ${r.machine.cpuModel}, Node ${r.machine.node}, ${r.date}`)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

