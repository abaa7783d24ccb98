import { createDockerClient, pingDocker } from '../../docker/docker-client';
import { connectTemporalClient } from '../../temporal/connection';
import { createCaseWorker } from '../../temporal/case-worker';
import { CliError, loadConfigOrExit, openDatabase, processLogger, stopSignal } from '../process-context';

/** `benchctl worker`: serves the task queue until SIGINT/SIGTERM, then drains in-flight work. */
export async function workerCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'worker');
  const docker = createDockerClient(config.docker.socketPath);
  if (!(await pingDocker(docker, 5000))) {
    throw new CliError(`Docker does not answer at ${config.docker.socketPath} (run: npm run setup, or benchctl doctor)`);
  }
  const pool = await openDatabase(config, log);
  const client = await connectTemporalClient(config);
  const worker = await createCaseWorker({ config, log, pool, docker, client });
  log.info({ code: 'WORKER_STARTED', task_queue: config.temporal.taskQueue, temporal: config.temporal.address }, 'worker started');
  void stopSignal().then(async (signal) => {
    log.info({ code: 'WORKER_STOPPING', signal }, 'draining in-flight activities');
    await worker.shutdown();
  });
  try {
    await worker.run();
  } finally {
    await client.connection.close();
    await pool.end();
  }
}
