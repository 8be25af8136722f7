/** A failure the CLI reports as `Error: <message>` and exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** Bad flags or missing arguments: exit 2. */
export class UsageError extends CliError {
  constructor(message: string, hint?: string) {
    super(message, 2, hint);
  }
}

/** A non-2xx Hub answer: `Error: <message> (<status> <code>)`, exit 1. */
export class ApiError extends CliError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly requestId?: string,
    readonly details?: unknown,
  ) {
    super(`${message} (${status} ${code})`, 1);
  }
}
