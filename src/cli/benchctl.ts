import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { apiCommand } from './commands/api';
import { bridgeCommand } from './commands/bridge';
import { cancelCommand } from './commands/cancel';
import { doctorCommand } from './commands/doctor';
import { registerSearchAttributesCommand } from './commands/register-search-attributes';
import { replayCommand } from './commands/replay';
import { reportCommand } from './commands/report';
import { rerunCommand } from './commands/rerun';
import { rescoreCommand } from './commands/rescore';
import { runCommand } from './commands/run';
import { statusCommand } from './commands/status';
import { workerCommand } from './commands/worker';
import { CliError } from './process-context';
import { errorStackText } from '../domain/errors';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command()
  .name('benchctl')
  .description('agentbench-orchestrator: runs AI-agent benchmark experiments on Temporal and Docker')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  .showHelpAfterError();

program
  .command('worker')
  .description('serve the Temporal task queue: run cases in Docker, write results to Postgres')
  .action(workerCommand);
program
  .command('bridge')
  .description('consume experiment.run.requested from RabbitMQ and start one workflow per message')
  .action(bridgeCommand);
program
  .command('api')
  .description(
    'serve the HTTP API: submit runs, follow them (status, cases, Server-Sent Events), cancel, retry failed; relay result events',
  )
  .action(apiCommand);
program
  .command('run')
  .description('run an experiment file locally (no RabbitMQ): progress, results table and Temporal UI link')
  .argument('<file>', 'experiment JSON file (see examples/sample-experiment.json), or a tasks.jsonl batch')
  .option('--no-worker', 'do not start an in-process worker (a running `benchctl worker` serves the run)')
  .option('--concurrency <n>', 'cases in flight (default CONSUMER_CONCURRENT_CASES)', positiveInt)
  .option('--no-report', 'do not write the HTML report (agentbench-report-<id>.html) at the end')
  .option(
    '--tasks',
    'the file is a batch of tasks (one JSON task a line), whatever its extension (.jsonl is one)',
  )
  .option('--out <dir>', 'batches: where trajectories/<task_id>.json and summary.json go', './output')
  .option('--no-cache', 'batches: run every task even when a stored result of the same inputs exists')
  .option('--skip-invalid', 'batches: skip invalid lines (each is reported) instead of failing the batch')
  .option(
    '--json',
    'print one JSON object at the end (outcome, counts, links) instead of the bar and the table',
  )
  .action((file: string, opts: Parameters<typeof runCommand>[1]) => runCommand(file, opts));
program
  .command('status')
  .description("an experiment's runs in Temporal and its cases in Postgres")
  .argument('<experimentId>', 'experiments.id', positiveInt)
  .option('--json', 'print one JSON object (runs and cases) instead of the tables')
  .action((id: number, opts: { json?: boolean }) => statusCommand(id, opts));
program
  .command('report')
  .description(
    'write a self-contained HTML report of an experiment (cases, scores, errors, Temporal UI links)',
  )
  .argument('<experimentId>', 'experiments.id')
  .option('--out <file>', 'where to write it; - for standard output (default ./agentbench-report-<id>.html)')
  .action((id: string, opts: { out?: string }) => reportCommand(id, opts));
program
  .command('cancel')
  .description("cancel an experiment's running workflows (containers stopped, remaining cases canceled)")
  .argument('<experimentId>', 'experiments.id', positiveInt)
  .option('--no-wait', 'return once the cancellation is requested')
  .action((id: number, opts: { wait: boolean }) => cancelCommand(id, opts));
program
  .command('rerun')
  .description("rerun an experiment's failed cases as new attempts, the way the platform's retry does")
  .argument('<experimentId>', 'experiments.id', positiveInt)
  .option('--failed', 'rerun the latest cases whose status is failed')
  .option('--no-worker', 'do not start an in-process worker (a running `benchctl worker` serves the run)')
  .action((id: number, opts: { failed?: boolean; worker: boolean }) =>
    rerunCommand(id, { failed: opts.failed === true, worker: opts.worker }),
  );
program
  .command('rescore')
  .description("re-score an experiment's stored results with its evaluators (no container is started)")
  .argument('<experimentId>', 'experiments.id', positiveInt)
  .option('--scorer <key>', 'only this evaluator (its scores are replaced, the others kept)')
  .action((id: number, opts: { scorer?: string }) => rescoreCommand(id, opts));
program
  .command('replay')
  .description(
    'replay a workflow history (from the server, or a JSON file) through the current workflow code',
  )
  .argument(
    '<workflowIdOrFile>',
    'workflow id, or a history JSON file (temporal workflow show --output json)',
  )
  .action(replayCommand);
program
  .command('register-search-attributes')
  .description(
    'register our search attributes in TEMPORAL_NAMESPACE (idempotent; once per namespace, e.g. as a k8s Job)',
  )
  .option(
    '--wait <seconds>',
    'how long to wait for Temporal and the namespace to answer',
    (v) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('expected whole seconds');
      return n;
    },
    120,
  )
  .action((opts: { wait: number }) => registerSearchAttributesCommand(opts));
program
  .command('doctor')
  .description('check Docker, Temporal, Postgres, Redis and RabbitMQ and say how to fix what is missing')
  .action(doctorCommand);

program.parseAsync(process.argv).then(
  // Clients that keep sockets open (pg, amqp) must not hold a finished command hostage.
  () => process.exit(),
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`benchctl: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`benchctl: ${errorStackText(err)}\n`);
    process.exit(1);
  },
);
