// shareId minting. A shareId is the session's bucket as two alphabet characters
// (so a push finds the shard without asking every shard; see routing.ts),
// followed by nanoid random characters over the same 64-character URL-safe
// alphabet: 6 bits each, 60 random bits at the default length of 12.
import { customAlphabet } from 'nanoid';
import { ALPHABET, alphabetValue, bucketOfShareId, bucketPrefix } from '../routing.js';

export class ShareIdMinter {
  private readonly random: () => string;

  constructor(readonly length: number) {
    this.random = customAlphabet(ALPHABET, length - 2);
  }

  /** A fresh id for `bucket`; `taken` rejects ids already live in this shard. */
  mint(bucket: number, taken: (id: string) => boolean): string {
    for (;;) {
      const id = bucketPrefix(bucket) + this.random();
      if (!taken(id)) return id;
    }
  }

  /** The bucket of a well-formed id of this tracker's length, else -1. */
  bucketOf(id: string): number {
    if (id.length !== this.length) return -1;
    for (let i = 2; i < id.length; i++) if (alphabetValue(id.charCodeAt(i)) < 0) return -1;
    return bucketOfShareId(id);
  }
}
