/**
 * The error a compute's sessions meet once a newer compute took its branch over.
 *
 * @module
 */

/**
 * A newer compute took this branch over (it won a higher term at the safekeepers, which fences this one at the
 * pageserver too): this compute's writes are refused from then on, and it does not take the branch back by itself.
 */
export class ComputeFencedError extends Error {
  /** The branch taken over. */
  readonly branch: string;
  /**
   * @param branch the branch
   * @param reason what the safekeepers or the pageserver said
   */
  constructor(branch: string, reason: string) {
    super(
      `branch ${branch} was taken over by a newer compute (${reason}): this compute no longer serves it; ` +
        `use the newer compute, or restart this one to take the branch back`,
    );
    this.name = "ComputeFencedError";
    this.branch = branch;
  }
}
