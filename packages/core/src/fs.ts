import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { PfcError, type PfcErrorCode } from './errors';

/**
 * Reads a whole file. A file that cannot be read (missing, a directory, no permission) is a `PfcError` with the
 * caller's `code`, the message `<path>: cannot read: <reason>` and `details.file`.
 */
export function readFileOrThrow(path: string, code: PfcErrorCode): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new PfcError(code, `${path}: cannot read: ${(err as Error).message}`, { cause: err, details: { file: path } });
  }
}

/**
 * Writes a file atomically: the bytes go to a temporary file in the same directory, are flushed to disk,
 * and the temporary file is renamed over `path`. A crash leaves either the old file or the new one, never a torn one.
 * @param chunks bytes to write in order
 */
export function writeFileAtomic(path: string, chunks: Uint8Array | readonly Uint8Array[]): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const list = chunks instanceof Uint8Array ? [chunks] : chunks;
  const fd = openSync(tmp, 'w');
  try {
    for (const c of list) {
      let off = 0;
      while (off < c.byteLength) off += writeSync(fd, c, off, c.byteLength - off);
    }
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // directories cannot be fsync'ed on every platform; the rename is still atomic
  }
}
