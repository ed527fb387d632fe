/**
 * The module a worker thread starts from. Compiled (dist/*.js, the production entry) a thread
 * loads its JavaScript directly; run from the TypeScript sources (development, tests) it starts
 * from a small .mjs shim that registers tsx first, since worker threads do not inherit the main
 * thread's module hooks on every Node version.
 *
 * @example new Worker(threadEntry(import.meta.url, 'worker'), { workerData })
 */
export function threadEntry(callerUrl: string, module: string): URL {
  const compiled = callerUrl.endsWith('.js');
  return new URL(compiled ? `./${module}.js` : `./${module}-entry.mjs`, callerUrl);
}
