import type { ConnectionLike } from '@temporalio/client';
import type Dockerode from 'dockerode';
import type pg from 'pg';
import { pingDocker } from '../docker/docker-client';
import type { ReadinessCheck } from './readiness';

/**
 * The readiness checks of our dependencies (readiness.ts runs them, each under a deadline). Each is
 * one cheap round trip on the connection the command already holds, never a new connection.
 */

/** `GetSystemInfo` on the command's Temporal client connection: the frontend answers the workflow API. */
export function temporalCheck(connection: ConnectionLike, timeoutMs: number): ReadinessCheck {
  return async () => {
    await connection.withDeadline(Date.now() + timeoutMs, () => connection.workflowService.getSystemInfo({}));
  };
}

/** One `SELECT 1` through the pool (a pool starved by activities shows up here too). */
export function postgresCheck(pool: pg.Pool): ReadinessCheck {
  return async () => {
    await pool.query('SELECT 1');
  };
}

export function dockerCheck(docker: Dockerode, timeoutMs: number): ReadinessCheck {
  return async () => {
    if (!(await pingDocker(docker, timeoutMs))) throw new Error('the Docker daemon does not answer');
  };
}
