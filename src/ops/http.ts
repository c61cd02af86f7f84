// The opt-in ops listener (--metrics-port): GET /metrics and GET /healthz.
// Plain node:http; it shares the main thread with the UDP hot path, so each
// request does one stats or ping round to the shards and nothing heavier.
import http from 'node:http';
import type { Logger } from 'pino';
import { ListenError } from '../io/open-io.js';
import type { Health } from './health.js';
import type { Metrics } from './metrics.js';

export async function startOpsServer(host: string, port: number, metrics: Metrics, health: () => Promise<Health>, log: Logger): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    };
    const text = 'text/plain; charset=utf-8';
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, text, 'only GET\n');
    if (path === '/metrics') {
      metrics.render().then((body) => reply(200, metrics.contentType, body),
        (err: unknown) => { log.error({ err }, 'metrics scrape failed'); reply(500, text, 'metrics failed\n'); });
    } else if (path === '/healthz') {
      health().then((h) => reply(h.ok ? 200 : 503, text, `${h.ok ? '' : 'unhealthy: '}${h.reason}\n`),
        (err: unknown) => reply(503, text, `unhealthy: ${(err as Error).message}\n`));
    } else reply(404, text, 'not found: try /metrics or /healthz\n');
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error): void => reject(ListenError.from(err, 'TCP', '--metrics-port', 'the metrics listener') ?? err);
    server.once('error', failed);
    server.listen(port, host, () => { server.off('error', failed); resolve(); });
  });
  server.on('error', (err) => log.warn({ err }, 'ops http server error'));
  return server;
}

export function closeOpsServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections(); // keep-alive scrapers must not hold shutdown open
  });
}
