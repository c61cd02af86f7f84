// Datagrams with a forged source address, as an off-path attacker sends them: a
// raw socket (root) in python3 builds the IPv4 and UDP headers (forge.py). Resolves
// once every datagram has left.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface Forged {
  from: { address: string; port: number };
  to: { address: string; port: number };
  payload: string | Buffer;
}

const SCRIPT = fileURLToPath(new URL('./forge.py', import.meta.url));

/** Whether this process may forge (raw sockets need root). */
export const canForge = process.getuid?.() === 0;

export async function forge(...datagrams: Forged[]): Promise<void> {
  const child = spawn('python3', [SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout.on('data', (b: Buffer) => { out += b; });
  child.stderr.on('data', (b: Buffer) => { err += b; });
  for (const d of datagrams) {
    child.stdin.write(JSON.stringify({ src: d.from.address, sport: d.from.port, dst: d.to.address, dport: d.to.port,
      hex: Buffer.from(d.payload).toString('hex') }) + '\n');
  }
  child.stdin.end();
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0 || out.trim() !== `sent ${datagrams.length}`) throw new Error(`forge.py failed (${code}): ${err || out}`);
}
