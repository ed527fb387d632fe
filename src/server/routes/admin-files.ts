import { Hono, type Context } from 'hono';
import { DatasetError } from '../../training/dataset.js';
import type { ServerState } from '../context.js';
import { ApiError } from '../errors.js';
import { fileBytes, readUpload, textField } from '../form.js';
import { idempotencyKeyOf, requireTraining } from './admin-common.js';
import { TrainingFileConflictError } from '../../training/file-store.js';
import { audit } from '../audit.js';

/**
 * Training files (admin keys), in OpenAI's Files shape: `POST /admin/v1/files` (multipart
 * `file` + `purpose=fine-tune`) tokenizes every line before storing anything, so a bad line is
 * a 400 naming it; `GET /admin/v1/files[/{id}[/content]]`; `DELETE /admin/v1/files/{id}`.
 */
export function adminFileRoutes(state: ServerState): Hono {
  const app = new Hono();

  app.post('/admin/v1/files', async (c) => {
    const training = requireTraining(state);
    const declared = Number(c.req.header('content-length') ?? NaN);
    if (declared > state.maxTrainingFileBytes + 256 * 1024) throw new ApiError(413, `upload of ${declared} bytes exceeds the limit of ${state.maxTrainingFileBytes}`, 'file', 'body_too_large');
    const form = await readUpload(c, { fields: ['purpose'], files: { file: state.maxTrainingFileBytes }, spoolDir: state.spoolDir });
    let bytes: Uint8Array;
    let filename: string;
    try {
      const purpose = textField(form, 'purpose');
      if (purpose !== 'fine-tune') throw new ApiError(400, `purpose must be 'fine-tune', got '${purpose.slice(0, 40)}'`, 'purpose', 'invalid_value');
      bytes = await fileBytes(form, 'file');
      filename = (form.files['file']?.filename ?? '').slice(0, 255) || 'training.jsonl';
    } finally {
      await form.cleanup();
    }
    state.quotas.checkTrainingFile(c.get('tenant'), bytes.length);
    let rows: number;
    try {
      rows = training.validate(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (err) {
      if (err instanceof DatasetError) throw new ApiError(400, `invalid training file: ${err.message}`, 'file', 'invalid_training_file');
      if (err instanceof TypeError) throw new ApiError(400, 'invalid training file: not UTF-8 text', 'file', 'invalid_training_file');
      throw err;
    }
    const idempotencyKey = idempotencyKeyOf(c);
    const stored = await training.files.put({ filename, tenant: c.get('tenant'), rows }, bytes, idempotencyKey !== undefined ? { idempotencyKey } : {}).catch((error: unknown) => {
      if (error instanceof TrainingFileConflictError) throw new ApiError(422, error.message, 'Idempotency-Key', error.code);
      throw error;
    });
    audit(state, c, 'file.create', { file: stored.id, bytes: stored.bytes, rows });
    return c.json(stored, 201);
  });

  app.get('/admin/v1/files', async (c) => {
    await requireTraining(state).files.refresh();
    return c.json({ object: 'list', data: requireTraining(state).files.list(), has_more: false });
  });

  app.get('/admin/v1/files/:id', async (c) => {
    return c.json(await findFile(state, c));
  });

  app.get('/admin/v1/files/:id/content', async (c) => {
    const file = await findFile(state, c);
    const bytes = await requireTraining(state).files.read(file.id);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { 'content-type': 'application/jsonl' });
  });

  app.delete('/admin/v1/files/:id', async (c) => {
    const file = await findFile(state, c);
    await requireTraining(state).files.remove(file.id);
    audit(state, c, 'file.delete', { file: file.id });
    return c.json({ id: file.id, object: 'file', deleted: true });
  });

  return app;
}

/** The file as the store has it (uploaded through any replica). */
async function findFile(state: ServerState, c: Context) {
  const id = c.req.param('id')!;
  const file = await requireTraining(state).files.find(id);
  if (!file) throw new ApiError(404, `no file '${id}'`, 'file_id', 'file_not_found');
  return file;
}
