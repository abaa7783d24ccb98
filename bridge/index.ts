export { dedupSuffix } from './dedup-key';
export {
  assertDeadLetterQueue,
  deadLetterQueueName,
  publishDeadLetter,
  type DeadLetterReason,
} from './dead-letter';
export {
  CONTRACT_LOCK_TTL,
  MessageLocks,
  createRedis,
  processedKey,
  processingKey,
  type AcquireResult,
  type LockTtl,
} from './redis-lock';
export {
  startBridge,
  type BridgeDeps,
  type BridgeHandle,
  type BridgeStats,
  type StartRun,
} from './experiment-bridge';
