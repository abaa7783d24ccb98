import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runOne, SCENARIOS } from '../chaos/scenarios';
import { startChaosServices, type ChaosServices } from '../chaos/services';

/**
 * The fast, deterministic scenarios of the chaos suite (`npm run chaos`), run by `npm test` against
 * the same private Postgres, Redis, RabbitMQ, Temporal and dockerd. Only scenarios that hold on
 * main are listed; the others stay in `npm run chaos` until their fixes land.
 */
const IN_NPM_TEST = [
  'Redis down during intake (30)',
  'dockerd restart mid-case (6)',
  'two deployments on one Docker host',
  'Postgres down while cases finish (8)',
  'live-container limit saturated (limit 1, 3×20 s, 1 attempt)',
  'long cases crossing a history cap of 60',
  '`temporal workflow terminate` mid-run (8)',
];

describe('chaos suite, fast scenarios (private services restarted for real)', () => {
  let services: ChaosServices;
  before(async () => {
    services = await startChaosServices();
  });
  after(async () => {
    await services?.destroy();
  });

  for (const name of IN_NPM_TEST) {
    const scenario = SCENARIOS.find((s) => s.name === name);
    test(name, async () => {
      assert.ok(scenario?.fast, `${name} is a fast scenario of test/chaos/scenarios.ts`);
      const o = await runOne(scenario, services);
      assert.ok(o.pass, `${name}: ${JSON.stringify(o, null, 2)}`);
    });
  }
});
