import { move, transferableSymbol, valueSymbol } from 'piscina';
import { decodeOtlpBody, type OtlpBodyRequest, type OtlpBodyResult } from './otlp-body';

/**
 * The decode pool's task (otlp-decode-pool): one body → its rows, in a worker thread. The COPY
 * text (megabytes for a 1000-span request) is handed to the collector's thread, not copied: its
 * buffer is its own memory (otel-copy-text), transferred with the answer.
 */
export default async function decodeInWorker(req: OtlpBodyRequest): Promise<OtlpBodyResult> {
  const result = await decodeOtlpBody(req);
  if (!result.ok) return result;
  return move({
    get [transferableSymbol]() {
      return [result.copyText.buffer];
    },
    get [valueSymbol]() {
      return result;
    },
  }) as unknown as OtlpBodyResult;
}
