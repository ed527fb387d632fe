/** A model directory that cannot be served: the message names the file and, where it applies, the tensor. */
export class ModelLoadError extends Error {
  readonly code = 'model_load_error';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ModelLoadError';
  }
}
