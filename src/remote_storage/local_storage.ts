/**
 * A local directory as an object store (`--remote file:///path`): each object a file under the directory, written
 * to a temporary name, fsynced and renamed, so that a reader or a crash sees the old object or the new one.
 *
 * @module
 */
import { assertKey, assertPrefix, type RemoteStorage, RemoteStorageError } from "./remote_storage.ts";

/** Temporary files of unfinished puts end with this, after a UUID; listings skip them. */
const PARTIAL = ".partial";
/** A temporary file's name: `<key>.<uuid>.partial` (a key may end with `.partial` itself: a WAL segment's does). */
const TEMPORARY = /\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.partial$/;
/** The most files a listing walks: a guard against a runaway tree. */
const MAX_LISTED = 10_000_000;

/** Objects as files under a directory. */
export class LocalStorage implements RemoteStorage {
  readonly url: string;
  readonly #dir: string;

  /** @param dir the directory (created on the first put) */
  constructor(dir: string) {
    this.#dir = dir.replace(/\/+$/, "");
    this.url = `file://${this.#dir}`;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    assertKey(key);
    const path = `${this.#dir}/${key}`;
    const parent = path.slice(0, path.lastIndexOf("/"));
    const temp = `${path}.${crypto.randomUUID()}${PARTIAL}`;
    try {
      await Deno.mkdir(parent, { recursive: true });
      using file = await Deno.open(temp, { write: true, create: true, truncate: true });
      for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      await file.sync();
      await Deno.rename(temp, path);
      using dir = await Deno.open(parent);
      await dir.sync();
    } catch (error) {
      await Deno.remove(temp).catch(() => {});
      throw new RemoteStorageError(`put ${key} in ${this.url}`, error, false);
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    assertKey(key);
    try {
      return await Deno.readFile(`${this.#dir}/${key}`);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw new RemoteStorageError(`get ${key} from ${this.url}`, error, false);
    }
  }

  async list(prefix: string): Promise<string[]> {
    assertPrefix(prefix);
    const keys: string[] = [];
    const slash = prefix.lastIndexOf("/");
    const start = slash < 0 ? "" : prefix.slice(0, slash);
    const pending = [start];
    while (pending.length > 0) {
      const dir = pending.pop()!;
      try {
        for await (const entry of Deno.readDir(dir === "" ? this.#dir : `${this.#dir}/${dir}`)) {
          const key = dir === "" ? entry.name : `${dir}/${entry.name}`;
          if (entry.isDirectory) pending.push(key);
          else if (entry.isFile && !TEMPORARY.test(key) && key.startsWith(prefix)) keys.push(key);
          if (keys.length > MAX_LISTED) throw new Error(`more than ${MAX_LISTED} objects`);
        }
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) continue;
        throw new RemoteStorageError(`list ${prefix} in ${this.url}`, error, false);
      }
    }
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    assertKey(key);
    try {
      await Deno.remove(`${this.#dir}/${key}`);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new RemoteStorageError(`delete ${key} in ${this.url}`, error, false);
      }
    }
  }

  close(): void {
    // Files need no connection.
  }
}
