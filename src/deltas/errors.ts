/** A delta that cannot be used; `problems` lists every issue found, each naming its tensor or field. */
export class DeltaValidationError extends Error {
  readonly code = 'invalid_delta';
  constructor(readonly deltaName: string, readonly problems: string[], options?: { cause?: unknown }) {
    super(`delta '${deltaName}' is invalid: ${problems.join('; ')}`, options);
    this.name = 'DeltaValidationError';
  }
}
