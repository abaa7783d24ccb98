import type { CaseRef } from '../src/domain/activity-contract';
import { errorText } from '../src/domain/errors';
import type { RunCaseInput } from '../src/domain/message';
import type { ResolvedCaseSpec } from '../src/domain/runtime-spec';
import type { AdoptableContainer, PredecessorContainer } from '../src/docker/docker-sandbox';
import { LABELS } from '../src/docker/labels';
import type { Logger } from '../src/logger';
import type { CaseSandbox } from './case-execution';
import { workerBoundReason, type CaseNetworks } from './case-network';

/** A container an earlier attempt of the case left behind. */
export interface Leftover {
  id: string;
  networks: string[];
  /** Its attempt label (undefined: not known). */
  attempt: number | undefined;
}

export interface CaseLeftoversDeps {
  sandbox: Pick<CaseSandbox, 'listManagedContainers' | 'inspectPredecessor' | 'remove'>;
  networks: Pick<CaseNetworks, 'removeLeftover'>;
}

/**
 * What earlier attempts of a case left on this Docker host (their worker died before removing
 * them): found once per retry, then either one is adopted or all are removed (`settle`).
 */
export function createCaseLeftovers(deps: CaseLeftoversDeps) {
  const { sandbox } = deps;

  /**
   * What earlier attempts of the case left on this Docker host — the container the last one
   * heartbeated and those labelled with the case — newest attempt first.
   */
  async function find(ref: CaseRef, heartbeatedContainerId: string | undefined): Promise<Leftover[]> {
    const listed = await sandbox.listManagedContainers({
      workflowId: ref.workflowId,
      runCaseId: ref.runCaseId,
    });
    const found: Leftover[] = listed.map((c) => ({
      id: c.id,
      networks: c.networks,
      attempt: attemptOf(c.labels),
    }));
    if (heartbeatedContainerId && !found.some((c) => c.id === heartbeatedContainerId))
      found.unshift({ id: heartbeatedContainerId, networks: [], attempt: undefined });
    return found.sort((a, b) => (b.attempt ?? 0) - (a.attempt ?? 0));
  }

  /**
   * The one rule for leftovers: only an attempt that goes on to run the case (`adoptable`, its
   * spec and input) may adopt one of them; every other leftover is removed here, before the attempt
   * goes on — also when it ends early (a stored record, a closed case, a spooled record, no spec).
   */
  async function settle(
    leftovers: Leftover[],
    adoptable: { spec: ResolvedCaseSpec; caseInput: RunCaseInput } | null,
    log: Logger,
  ): Promise<AdoptableContainer | null> {
    if (adoptable) return adoptOrRemove(leftovers, adoptable.spec, adoptable.caseInput, log);
    for (const c of leftovers) await removePredecessor(c);
    return null;
  }

  /** The container and, best effort, its case network (its worker died before removing them). */
  async function removePredecessor(c: Leftover, log?: Logger): Promise<void> {
    await sandbox.remove(c.id);
    for (const name of c.networks)
      await deps.networks
        .removeLeftover(name)
        .catch((err: unknown) =>
          log?.warn(
            { code: 'E_SANDBOX_NETWORK_REMOVE', network: name, err: errorText(err) },
            'could not remove the case network; the reaper will',
          ),
        );
  }

  /**
   * The newest earlier attempt's container that still runs with the case command recorded in it
   * (running or finished) is adopted, unless the case relies on what died with that attempt's
   * worker (workerBoundReason); every other leftover is removed.
   */
  async function adoptOrRemove(
    leftovers: Leftover[],
    spec: ResolvedCaseSpec,
    caseInput: RunCaseInput,
    log: Logger,
  ): Promise<AdoptableContainer | null> {
    const bound = workerBoundReason(spec, caseInput);
    let adopted: AdoptableContainer | null = null;
    for (const c of leftovers) {
      if (adopted === null) {
        let found: PredecessorContainer =
          bound === null
            ? await sandbox.inspectPredecessor(c.id)
            : { kind: 'unadoptable', reason: bound, name: c.id, networks: c.networks };
        // A warm container (LABELS.pool, no case labels) got the case's env with each exec from
        // its worker's memory, and its pool's reaper judges it by that dead worker: not adopted.
        if (found.kind === 'adoptable' && found.container.labels[LABELS.pool] !== undefined)
          found = {
            kind: 'unadoptable',
            reason: "a warm pool container: the case's env lived in the worker that died",
            name: found.container.name,
            networks: found.container.networks,
          };
        if (found.kind === 'adoptable') {
          adopted = found.container;
          log.info(
            {
              code: 'CASE_CONTAINER_ADOPTED',
              from_attempt: attemptOf(adopted.labels),
              container: adopted.name,
              finished: adopted.exitCode !== null,
            },
            "a killed worker's attempt left its agent running (or finished) in its container; adopted, the agent is not started again",
          );
          continue;
        }
        if (found.kind === 'unadoptable') {
          log.info(
            {
              code: 'CASE_ADOPTION_SKIPPED',
              reason: found.reason,
              from_attempt: c.attempt,
              container: found.name,
            },
            "an earlier attempt's container is not adopted; removed, the case starts afresh",
          );
          c.networks = [...new Set([...c.networks, ...found.networks])];
        }
      }
      await removePredecessor(c, log);
    }
    return adopted;
  }

  return { find, settle };
}

function attemptOf(labels: Record<string, string>): number | undefined {
  const n = Number(labels[LABELS.attempt]);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
