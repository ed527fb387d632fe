/**
 * Which methods a path has routes for, so a request with another method gets 405 and an `Allow`
 * header rather than a 404 that suggests the path does not exist (RFC 9110 §15.5.6).
 */

/** A registered route as hono lists it (`app.routes`); middleware is registered with method 'ALL'. */
export interface RouteEntry {
  method: string;
  path: string;
}

/**
 * The methods of the routes whose pattern matches `path` (hono's `:param` one segment, `*` the rest),
 * sorted; HEAD is allowed wherever GET is, as hono answers it.
 *
 * @example allowedMethods([{ method: 'POST', path: '/v1/completions' }], '/v1/completions') // ['POST']
 */
export function allowedMethods(routes: readonly RouteEntry[], path: string): string[] {
  const methods = new Set<string>();
  for (const route of routes) {
    if (route.method === 'ALL' || !patternOf(route.path).test(path)) continue;
    methods.add(route.method);
    if (route.method === 'GET') methods.add('HEAD');
  }
  return [...methods].sort();
}

const patterns = new Map<string, RegExp>();

function patternOf(routePath: string): RegExp {
  let pattern = patterns.get(routePath);
  if (!pattern) {
    const body = routePath
      .split('/')
      .map((part) => (part === '*' ? '.*' : part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    patterns.set(routePath, (pattern = new RegExp(`^${body.replace(/\/\.\*$/, '(?:/.*)?')}$`)));
  }
  return pattern;
}
