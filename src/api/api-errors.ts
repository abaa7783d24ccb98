import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Logger } from '../logger';
import { TemporalUnavailableError } from '../temporal/errors';

/**
 * Every error answer of the API has one shape: `{ error: { code, message, details? } }`, `code` an
 * `E_…` constant, `details` one entry per invalid field (`path` like `body.dataset.items.0.user_input`).
 * Nothing else ever reaches a client: no stack trace, no SQL, no internal message of a 5xx.
 */

export const errorDetailSchema = z.object({
  path: z
    .string()
    .meta({ description: 'Where: body, query, params or headers, then the field path, dot-separated.' }),
  code: z
    .string()
    .meta({ description: 'What is wrong (zod issue code: invalid_type, too_small, unrecognized_keys, …).' }),
  message: z.string(),
});

export const errorBodySchema = z
  .object({
    error: z.object({
      code: z
        .string()
        .meta({ description: 'E_… constant, stable across versions.', example: 'E_API_INVALID_REQUEST' }),
      message: z.string(),
      details: z.array(errorDetailSchema).optional(),
    }),
  })
  .meta({ id: 'Error', description: 'Every 4xx and 5xx answer.' });

export type ErrorDetail = z.infer<typeof errorDetailSchema>;

/** An answer other than success, thrown by handlers; the error handler writes it. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: ErrorDetail[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

interface ValidationEntry {
  keyword: string;
  instancePath: string;
  message?: string;
  params?: Record<string, unknown>;
}

const CONTEXT_NAMES: Record<string, string> = {
  body: 'body',
  querystring: 'query',
  params: 'params',
  headers: 'headers',
};

function joinPath(prefix: string, instancePath: string): string {
  const rest = instancePath.split('/').filter((p) => p !== '');
  return [prefix, ...rest].join('.');
}

/**
 * A union failure names its branches' issues; report the branch the client meant (`pick`), so a
 * bad experiment file says which field is wrong instead of "invalid input".
 */
function flattenIssue(
  prefix: string,
  entry: ValidationEntry,
  pick: (branches: ValidationEntry[][]) => ValidationEntry[] | undefined,
): ErrorDetail[] {
  const branches = entry.params?.errors as
    Array<Array<{ code: string; path: PropertyKey[]; message: string }>> | undefined;
  if (entry.keyword === 'invalid_union' && Array.isArray(branches)) {
    const asEntries = branches.map((issues) =>
      issues.map((i) => ({
        keyword: i.code,
        instancePath: `${entry.instancePath.replace(/\/$/, '')}/${i.path.map(String).join('/')}`,
        message: i.message,
      })),
    );
    const chosen = pick(asEntries);
    if (chosen)
      return chosen.map((e) => ({
        path: joinPath(prefix, e.instancePath),
        code: e.keyword,
        message: e.message ?? '',
      }));
  }
  return [
    { path: joinPath(prefix, entry.instancePath), code: entry.keyword, message: entry.message ?? 'invalid' },
  ];
}

function validationDetails(
  err: FastifyError & { validation: ValidationEntry[] },
  req: FastifyRequest,
): ErrorDetail[] {
  const prefix = CONTEXT_NAMES[err.validationContext ?? 'body'] ?? 'body';
  const body = req.body;
  // POST /v1/runs takes either { experiment_id } or an experiment file: the key says which.
  const meantExisting = typeof body === 'object' && body !== null && 'experiment_id' in body;
  const pick = (branches: ValidationEntry[][]) => branches[meantExisting ? 0 : branches.length - 1];
  return err.validation.flatMap((entry) => flattenIssue(prefix, entry, pick));
}

/** Fastify's own 4xx errors (parsing, limits), by their codes. */
const FASTIFY_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    code: 'E_API_BODY_TOO_LARGE',
    message: 'request body is larger than API_MAX_BODY_BYTES',
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'E_API_UNSUPPORTED_MEDIA_TYPE',
    message: 'send application/json',
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    status: 400,
    code: 'E_API_INVALID_REQUEST',
    message: 'Content-Length does not match the body',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    code: 'E_API_INVALID_JSON',
    message: 'the body is empty; send a JSON object',
  },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    status: 400,
    code: 'E_API_INVALID_JSON',
    message: 'the body is not valid JSON',
  },
  FST_ERR_CTP_INVALID_TYPE: {
    status: 415,
    code: 'E_API_UNSUPPORTED_MEDIA_TYPE',
    message: 'send application/json',
  },
  FST_ERR_BAD_URL: { status: 400, code: 'E_API_INVALID_REQUEST', message: 'the URL is malformed' },
  FST_ERR_ASYNC_CONSTRAINT: {
    status: 400,
    code: 'E_API_INVALID_REQUEST',
    message: 'the request is malformed',
  },
};

export function sendError(reply: FastifyReply, err: ApiError): FastifyReply {
  return reply
    .code(err.statusCode)
    .headers(err.headers)
    .type('application/json; charset=utf-8')
    .send({
      error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) },
    });
}

/** The Fastify error handler: maps everything to the one error shape; 5xx are logged, never shown. */
export function createErrorHandler(log: Logger) {
  return (err: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply => {
    if (err instanceof ApiError) return sendError(reply, err);
    if (err instanceof TemporalUnavailableError) {
      log.error(
        { code: 'E_TEMPORAL_UNAVAILABLE', err, method: req.method, url: req.routeOptions.url },
        'Temporal call failed',
      );
      return sendError(
        reply,
        new ApiError(
          503,
          'E_TEMPORAL_UNAVAILABLE',
          'Temporal does not answer; retry (a submission with the same Idempotency-Key)',
          undefined,
          {
            'retry-after': '5',
          },
        ),
      );
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const details = validationDetails(err as FastifyError & { validation: ValidationEntry[] }, req);
      return sendError(
        reply,
        new ApiError(400, 'E_API_INVALID_REQUEST', `invalid request: ${details.length} problem(s)`, details),
      );
    }
    const known = err.code ? FASTIFY_ERRORS[err.code] : undefined;
    if (known) return sendError(reply, new ApiError(known.status, known.code, known.message));
    if (err instanceof SyntaxError || (err.statusCode === 400 && /JSON/i.test(err.message))) {
      return sendError(reply, new ApiError(400, 'E_API_INVALID_JSON', 'the body is not valid JSON'));
    }
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // Another client error of Fastify's: its status, a generic code, its (non-internal) message.
      return sendError(reply, new ApiError(status, 'E_API_INVALID_REQUEST', err.message.slice(0, 200)));
    }
    log.error(
      { code: 'E_API_INTERNAL', err, method: req.method, url: req.routeOptions.url },
      'request failed',
    );
    return sendError(reply, new ApiError(500, 'E_API_INTERNAL', 'internal error; see the server log'));
  };
}
