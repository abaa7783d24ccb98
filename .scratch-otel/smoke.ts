import { createTestDatabase } from '../test/support/database';
import { OtelCollector, caseOtelEnv } from '../src/otel/otel-collector';
import { queryCaseTelemetry } from '../src/otel/otel-repository';
import { createLogger } from '../src/logger';
import { execFileSync } from 'node:child_process';
async function main() {
  const db = await createTestDatabase();
  const c = new OtelCollector({ pool: db.pool, log: createLogger({ level: 'debug' }), host: '0.0.0.0', port: 0, maxBodyBytes: 1 << 20, allowUntokened: false });
  const { port } = await c.start();
  const token = c.issueToken({ runCaseId: 11, experimentId: 22, dataItemId: 33 });
  const env = caseOtelEnv({ endpoint: `http://host.docker.internal:${port}`, token, serviceName: 'sdk-agent', runCaseId: 11, experimentId: 22, dataItemId: 33 });
  const args = ['run', '--rm', '--add-host', 'host.docker.internal:host-gateway', ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]), 'bench/otel-sdk-agent:latest', 'python3', '/agent/run_case.py', 'hello'];
  const t0 = Date.now();
  console.log(execFileSync('docker', args, { encoding: 'utf8' }), Date.now() - t0, 'ms');
  const t = await queryCaseTelemetry(db.pool, 11, Date.now());
  console.log(JSON.stringify(t, null, 1).slice(0, 3000));
  const r = await db.pool.query('select trace_id, span_id, parent_span_id, name, service_name, status, run_case_id, experiment_id, start_time from otel_traces');
  console.table(r.rows);
  await c.stop(); await db.drop();
}
main().catch((e) => { console.error(e); process.exit(1); });
