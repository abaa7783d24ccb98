import { Command, InvalidArgumentError } from 'commander';
import { bridgeCommand } from './commands/bridge';
import { cancelCommand } from './commands/cancel';
import { doctorCommand } from './commands/doctor';
import { replayCommand } from './commands/replay';
import { reportCommand } from './commands/report';
import { rerunCommand } from './commands/rerun';
import { rescoreCommand } from './commands/rescore';
import { runCommand } from './commands/run';
import { statusCommand } from './commands/status';
import { workerCommand } from './commands/worker';
import { CliError } from './process-context';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command()
  .name('benchctl')
  .description('agentbench-orchestrator: runs AI-agent benchmark experiments on Temporal and Docker')
  .showHelpAfterError();

program.command('worker').description('serve the Temporal task queue: run cases in Docker, write results to Postgres').action(workerCommand);
program.command('bridge').description('consume experiment.run.requested from RabbitMQ and start one workflow per message').action(bridgeCommand);
program
  .command('run')
  .description('run an experiment file locally (no RabbitMQ): progress, results table and Temporal UI link')
  .argument('<file>', 'experiment JSON file (see examples/sample-experiment.json)')
  .option('--no-worker', 'do not start an in-process worker (a running `benchctl worker` serves the run)')
  .option('--concurrency <n>', 'cases in flight (default CONSUMER_CONCURRENT_CASES)', positiveInt)
  .option('--no-report', 'do not write the HTML report (agentbench-report-<id>.html) at the end')
  .action((file: string, opts: { worker: boolean; concurrency?: number; report: boolean }) => runCommand(file, opts));
program
  .command('status')
  .description("an experiment's runs in Temporal and its cases in Postgres")
  .argument('<experimentId>', 'experiments.id', positiveInt)
  .action(statusCommand);
program
  .command('report')
  .description("write a self-contained HTML report of an experiment (cases, scores, errors, Temporal UI links)")
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
  .action((id: number, opts: { failed?: boolean; worker: boolean }) => rerunCommand(id, { failed: opts.failed === true, worker: opts.worker }));
program
  .command('rescore')
  .description("re-score an experiment's stored results with its evaluators (no container is started)")
  .argument('<experimentId>', 'experiments.id', positiveInt)
  .option('--scorer <key>', 'only this evaluator (its scores are replaced, the others kept)')
  .action((id: number, opts: { scorer?: string }) => rescoreCommand(id, opts));
program
  .command('replay')
  .description('replay a workflow history (from the server, or a JSON file) through the current workflow code')
  .argument('<workflowIdOrFile>', 'workflow id, or a history JSON file (temporal workflow show --output json)')
  .action(replayCommand);
program.command('doctor').description('check Docker, Temporal, Postgres, Redis and RabbitMQ and say how to fix what is missing').action(doctorCommand);

program.parseAsync(process.argv).then(
  // Clients that keep sockets open (pg, amqp) must not hold a finished command hostage.
  () => process.exit(),
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`benchctl: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`benchctl: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
