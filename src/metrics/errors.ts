/** The port cannot be bound: one line naming the variable, so the operator knows what to change. */
export class MetricsPortInUseError extends Error {
  readonly code = 'E_METRICS_PORT_IN_USE';
  constructor(
    readonly variable: string,
    readonly host: string,
    readonly port: number,
  ) {
    super(
      `E_METRICS_PORT_IN_USE: ${variable}=${port} on ${host} is already in use (set ${variable} to a free port, or 0 to disable the endpoint)`,
    );
    this.name = 'MetricsPortInUseError';
  }
}
