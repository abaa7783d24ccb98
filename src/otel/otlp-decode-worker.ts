import { decodeOtlpBody, type OtlpBodyRequest, type OtlpBodyResult } from './otlp-body';

/** The decode pool's task (otlp-decode-pool): one body → its rows, in a worker thread. */
export default function decodeInWorker(req: OtlpBodyRequest): Promise<OtlpBodyResult> {
  return decodeOtlpBody(req);
}
