/**
 * An exclusive lock on a data directory, so that two processes never open it: `flock` on `tarn.lock`, which also
 * holds the holder's pid for the error the second process gets. The OS drops the lock when the holder dies.
 *
 * @module
 */
import { DatabaseLockedError } from "./errors.ts";

/** A held directory lock. */
export class DirLock {
  readonly #file: Deno.FsFile;

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Takes the lock or throws {@linkcode DatabaseLockedError} naming the holder's pid. */
  static async acquire(dir: string): Promise<DirLock> {
    const path = `${dir}/tarn.lock`;
    const file = await Deno.open(path, { read: true, write: true, create: true });
    if (!(await file.tryLock(true))) {
      const text = await Deno.readTextFile(path).catch(() => "");
      file.close();
      const pid = Number.parseInt(text, 10);
      throw new DatabaseLockedError(dir, Number.isFinite(pid) ? pid : undefined);
    }
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    return new DirLock(file);
  }

  /** Releases the lock. */
  async release(): Promise<void> {
    await this.#file.unlock();
    this.#file.close();
  }
}
