import readline from 'node:readline';

interface InterruptTarget {
  workflowId: string;
  cancel(): Promise<unknown>;
  /** Stops the progress bar before anything is written to the terminal. */
  pause(): void;
  /** True when this process serves the run: leaving means nobody does, unless another worker polls. */
  inProcessWorker: boolean;
}

function ask(question: string): Promise<string> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    // Ctrl-C at the prompt takes the default.
    rl.once('SIGINT', () => {
      rl.close();
      resolve('');
    });
    rl.question(question, (answer) => {
      rl.close();
      resolve(answer);
    });
  });
}

/**
 * Ctrl-C while a run is followed: the run is not left behind silently. On a terminal the user is
 * asked (default: cancel); without one (CI, a pipe) the run is canceled. A canceled run is still
 * followed to its end (containers stopped, remaining cases canceled); a second Ctrl-C leaves at once.
 */
export function onInterrupt(target: InterruptTarget): { canceled(): boolean; dispose(): void } {
  let state: 'running' | 'asking' | 'canceling' = 'running';
  const say = (line: string) => process.stderr.write(`benchctl: ${line}\n`);
  const cancel = () => {
    state = 'canceling';
    say(`canceling run ${target.workflowId} (Ctrl-C again to leave without waiting)`);
    target.cancel().catch((err: unknown) => say(`cancel of ${target.workflowId} failed: ${String(err)}`));
  };
  const leave = () => {
    say(
      target.inProcessWorker
        ? `left run ${target.workflowId} running; no worker of this process serves it now (benchctl worker, or benchctl cancel)`
        : `left run ${target.workflowId} running (benchctl status / benchctl cancel)`,
    );
    process.exit(130);
  };
  const handler = () => {
    if (state === 'canceling') {
      say(`left without waiting; cancellation of ${target.workflowId} is requested`);
      process.exit(130);
    }
    if (state === 'asking') return;
    target.pause();
    if (!process.stdin.isTTY || !process.stderr.isTTY) return cancel();
    state = 'asking';
    void ask(`\nCancel run ${target.workflowId}? [Y/n] `).then((answer) => {
      if (/^n(o)?$/i.test(answer.trim())) leave();
      else cancel();
    });
  };
  process.on('SIGINT', handler);
  return {
    canceled: () => state === 'canceling',
    dispose: () => process.off('SIGINT', handler),
  };
}
