/**
 * The pinned inputs of the pretraining recipe: which Debian package installs each text, its
 * version and licence, and the SHA-256 of every file read. A missing or different file is an
 * error that says what to install, because a corpus built from other bytes is another corpus.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface PinnedFile {
  /** Absolute path as the package installs it. */
  path: string;
  sha256: string;
}

export interface PinnedSource {
  /** Debian package name. */
  package: string;
  version: string;
  /** SHA-256 of the .deb in the archive (from `apt-cache show`), for the record. */
  debSha256: string;
  licence: string;
  files: readonly PinnedFile[];
}

/**
 * The King James Version (1611) in the Bible Retrieval System's compressed format. The text is
 * out of copyright; the data file's own legend allows any use ("Users may copy, modify or
 * distribute this file at will"; /usr/share/doc/bible-kjv-text/copyright).
 */
export const KJV_SOURCE: PinnedSource = {
  package: 'bible-kjv-text',
  version: '4.38',
  debSha256: 'd61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a',
  licence: 'public domain (KJV, 1611); BRS data file: "Users may copy, modify or distribute this file at will"',
  files: [{ path: '/usr/lib/bible.data', sha256: '6c746c2acc8a34bfded980883ff1701a5d68934a1c853ebf88a07b978fe0ae0e' }],
};

/**
 * The World English Bible (2020 stable text) as a SWORD zText module: modern English, so it is
 * the "second style" for the generation task. Public domain (/usr/share/doc/sword-text-web/copyright);
 * the name "World English Bible" is a trademark, so a changed text must not be called that.
 */
export const WEB_SOURCE: PinnedSource = {
  package: 'sword-text-web',
  version: '426.0-1',
  debSha256: '930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1',
  licence: 'public domain (World English Bible; the name is a trademark of eBible.org)',
  files: [
    ['ot.bzs', '2c16645bb829c05b20f39769e1fa23212743335143833a819f29e412c6def8ce'],
    ['ot.bzv', 'dbd3b762b7159c5dd4b535f75b6ab643fb62ae44f4655aff3c5098a955a1ae57'],
    ['ot.bzz', '4633066d3872f1a3e600d2d10e667a13cd6c32bf116ca971d3c8f288bc3ea453'],
    ['nt.bzs', 'bec87a360bbc6bfbcd7de513edf928ceebb428dd2baff813aebf521bb0c6cc83'],
    ['nt.bzv', 'bb7a522d8323ccd7be462fca4dcd53c06d966c140fe260a6295e05393d259338'],
    ['nt.bzz', '5429389d9331b7a86901a73afa74f32d089cae3d5bd8dfe304b11808714a69ba'],
  ].map(([name, sha256]) => ({ path: `/usr/share/sword/modules/texts/ztext/engWEB2015eb/${name}`, sha256: sha256! })),
};

/** A pinned input that is missing or is not the pinned bytes; the message says what to install. */
export class SourceError extends Error {
  readonly code = 'corpus_source';
  constructor(message: string) {
    super(message);
    this.name = 'SourceError';
  }
}

/** How to get a source's files: the apt command, or extraction of the .deb for non-root users. */
export function installHint(source: PinnedSource): string {
  return `install Debian's ${source.package} ${source.version} (apt-get install --no-install-recommends ${source.package}=${source.version}), or unpack its .deb with dpkg-deb -x and pass that directory as the source root`;
}

/**
 * Reads one pinned file under `root` (default '/', so '/usr/lib/bible.data' is read as is) and
 * checks its SHA-256. Throws a SourceError naming the package and version to install.
 *
 * @example
 * const data = readPinned(KJV_SOURCE, KJV_SOURCE.files[0]!); // the BRS data file's bytes
 */
export function readPinned(source: PinnedSource, file: PinnedFile, root = '/'): Buffer {
  const full = path.join(root, file.path);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(full);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `cannot be read (${(err as Error).message})`;
    throw new SourceError(`${full} ${reason}: ${installHint(source)}`);
  }
  const actual = sha256(bytes);
  if (actual !== file.sha256) {
    throw new SourceError(`${full} has SHA-256 ${actual}, but the recipe pins ${file.sha256} (${source.package} ${source.version}): ${installHint(source)}`);
  }
  return bytes;
}

/**
 * Whether every file of `source` exists under `root` (it may still fail the hash check).
 *
 * @example
 * if (!sourceInstalled(KJV_SOURCE)) console.log(installHint(KJV_SOURCE));
 */
export function sourceInstalled(source: PinnedSource, root = '/'): boolean {
  return source.files.every((f) => fs.existsSync(path.join(root, f.path)));
}

/**
 * Lower-case hex SHA-256 of bytes or of a string's UTF-8 encoding.
 *
 * @example
 * sha256('abc'); // 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
 */
export function sha256(data: Uint8Array | string): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}
