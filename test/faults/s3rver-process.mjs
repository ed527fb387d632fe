// An S3 endpoint in a process of its own, so a fault test can stop it (SIGKILL) and start it
// again on the same port and directory. Prints {"port": N} once it listens.
// usage: node s3rver-process.mjs PORT DIRECTORY BUCKET
import S3rver from 's3rver';

const [port, directory, bucket] = process.argv.slice(2);
const server = new S3rver({ address: '127.0.0.1', port: Number(port), silent: true, directory, configureBuckets: [{ name: bucket }] });
const info = await server.run();
process.stdout.write(`${JSON.stringify({ port: info.port })}\n`);
