/** What the replica tests share: reading a job's whole event log through the API's pages. */
type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Every event of a job, newest first (the API's order), following `has_more` through pages of 100. */
export async function allEvents(url: string, id: string): Promise<Json[]> {
  const events: Json[] = [];
  for (;;) {
    const res = await fetch(`${url}/admin/v1/fine_tuning/jobs/${id}/events?limit=100${events.length ? `&after=${events.at(-1).id}` : ''}`);
    const page = (await res.json()) as Json;
    events.push(...page.data);
    if (!page.has_more) return events;
  }
}
