export { deadLetterQueueName } from './dead-letter';
export { MessageLocks, createRedis, processedKey, processingKey } from './redis-lock';
export { startBridge, type BridgeDeps, type BridgeHandle, type StartRun } from './experiment-bridge';
export { START_ATTEMPTS_HEADER } from './start-attempts';
