/**
 * A timeline's file events (create, resize, unlink, mkdir, rmdir) by path, in version order, and the names each
 * directory ever held: what `stat` and `readdir` answer from, and where a block's history starts over.
 *
 * @module
 */
import { BLOCK_SIZE, type FileEvent } from "./page_api.ts";
import { compareOrder, insertOrdered, type Ordered, upperBound } from "./version_order.ts";

/** One event, with where it sorts among a path's events. */
export type EventRecord = Ordered & { event: FileEvent };

/** The file events of one timeline. */
export class FileEvents {
  readonly #events = new Map<string, EventRecord[]>();
  readonly #children = new Map<string, Set<string>>();

  /** Adds an event on `path`. */
  add(path: string, record: EventRecord): void {
    let list = this.#events.get(path);
    if (list === undefined) {
      this.#events.set(path, list = []);
      const slash = path.lastIndexOf("/");
      const [parent, name] = slash < 0 ? ["", path] : [path.slice(0, slash), path.slice(slash + 1)];
      let names = this.#children.get(parent);
      if (names === undefined) this.#children.set(parent, names = new Set());
      names.add(name);
    }
    insertOrdered(list, record);
  }

  /** The newest event on `path` at or before `lsn`; undefined when this timeline has none (ask the ancestor). */
  latest(path: string, lsn: bigint): FileEvent | undefined {
    const list = this.#events.get(path);
    const i = list === undefined ? -1 : upperBound(list, lsn) - 1;
    return i < 0 ? undefined : list![i].event;
  }

  /** The latest event at or before `lsn` that ends the block's earlier history (create, unlink, cut below it). */
  resetPoint(path: string, blkno: number, lsn: bigint): EventRecord | undefined {
    const list = this.#events.get(path);
    if (list === undefined) return undefined;
    for (let i = upperBound(list, lsn) - 1; i >= 0; i--) {
      const e = list[i].event;
      if (e.kind !== "resize" || e.size_bytes <= blkno * BLOCK_SIZE) return list[i];
    }
    return undefined;
  }

  /** Every path this timeline has events for. */
  paths(): Iterable<string> {
    return this.#events.keys();
  }

  /** Every name `path` ever held on this timeline (some may not exist at a given LSN). */
  children(path: string): Iterable<string> {
    return this.#children.get(path) ?? [];
  }

  /** A merge replaced layers `generations`: their events give way to `merged`, which now live in `generation`. */
  replaceGenerations(
    generations: Set<number>,
    merged: { path: string; lsn: bigint; seq: number; event: FileEvent }[],
    generation: number,
  ): void {
    const paths = new Set(merged.map((e) => e.path));
    for (const path of paths) this.#events.set(path, this.#events.get(path)!.filter((r) => !generations.has(r.gen)));
    for (const e of merged) this.#events.get(e.path)!.push({ lsn: e.lsn, gen: generation, seq: e.seq, event: e.event });
    for (const path of paths) this.#events.get(path)!.sort(compareOrder);
  }

  /** Drops the events on `path` that `doomed` picks (a rewind, or versions a new owner did not recover). */
  dropWhere(path: string, doomed: (record: EventRecord) => boolean): void {
    this.#events.set(path, this.#events.get(path)!.filter((r) => !doomed(r)));
  }
}
