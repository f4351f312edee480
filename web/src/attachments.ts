// What the app decides about attachments, as plain functions (no DOM, no network; unit-tested
// in test/unit): which files may go in one message, the chunks an upload sends from where the
// server says it stands, which errors are worth asking the server again, how a size reads,
// which files are shown as images, and how long a download link is used.

import { Code } from "@connectrpc/connect";

/** At most this many attachments to one message (SendMessageRequest.attachment_ids). */
export const MAX_FILES = 10;
/** The server takes at most 256 KiB a chunk (UploadChunk). */
export const CHUNK_BYTES = 256 * 1024;
/** Failed calls in a row an upload survives (each after a backoff) before it gives up. */
export const UPLOAD_RETRIES = 5;
/** How long the server's download links live (GetAttachment: a few minutes). */
export const LINK_LIFE_MS = 5 * 60_000;
/**
 * A download link is used until this long before it expires: a page that sets it as an
 * image's source or a link's target then has time to fetch it.
 */
export const LINK_MARGIN_MS = 30_000;

/** Media types the server serves inline (it decides them from the bytes); the rest download. */
const INLINE = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** Whether an attachment of this media type is shown as an image (else as a download link). */
export function shownInline(mediaType: string): boolean {
  return INLINE.has(mediaType);
}

/** Why these files cannot go in one message, or null if they can. */
export function checkFiles(files: { name: string; size: number }[]): string | null {
  if (files.length > MAX_FILES) return `at most ${MAX_FILES} files a message (${files.length} chosen)`;
  const empty = files.find((f) => f.size === 0);
  if (empty) return `${empty.name} is empty`;
  return null;
}

/** One chunk of an upload: bytes [offset, end) of the file. */
export interface Chunk {
  offset: number;
  end: number;
}

/** The chunks that send a file of `size` bytes from `received` on, in order. */
export function chunkPlan(size: number, received: number, chunk = CHUNK_BYTES): Chunk[] {
  const plan: Chunk[] = [];
  for (let offset = Math.max(0, received); offset < size; offset += chunk) {
    plan.push({ offset, end: Math.min(size, offset + chunk) });
  }
  return plan;
}

/**
 * Whether a failed upload call may have failed on the way (the network, a restarting server)
 * rather than been refused: then the upload asks where it stands and goes on. A fetch that
 * never got an answer comes out as `UNKNOWN`. `FAILED_PRECONDITION` is a chunk from an offset
 * the server has not reached (an earlier answer was lost): asking again fixes that too.
 */
export function resumable(code: Code): boolean {
  return (
    code === Code.Unavailable ||
    code === Code.Unknown ||
    code === Code.DeadlineExceeded ||
    code === Code.Aborted ||
    code === Code.FailedPrecondition
  );
}

/** How far an upload is, as a whole percentage (100 only when every byte is stored). */
export function percent(sent: number, size: number): number {
  if (size <= 0 || sent >= size) return 100;
  return Math.min(99, Math.floor((sent / size) * 100));
}

/** A size as people read it: "12 B", "1.2 KB", "40 KB", "3.5 MB" (units of 1024). */
export function humanSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = bytes / 1024;
  let u = 0;
  for (;;) {
    // One decimal below 10 (9.96 rounds to "10", not "10.0"); 1023.6 KB reads "1.0 MB".
    const shown = v < 9.95 ? Math.round(v * 10) / 10 : Math.round(v);
    if (shown < 1024 || u === units.length - 1) return `${shown < 10 ? shown.toFixed(1) : shown} ${units[u]}`;
    v /= 1024;
    u++;
  }
}

/**
 * Until when (by this device's clock) a download link is used: one given at `askedAtMs` (this
 * clock) that expires at `expiresAtMs` (the server's clock). Clocks disagree: one that makes
 * the link live longer than links do, or already expired, counts the usual life from when it
 * was given instead. Always later than `askedAtMs`, so a link once given is used at least
 * for a while (a page that asked again on every redraw would never stop asking).
 */
export function linkUsableUntil(expiresAtMs: number, askedAtMs: number): number {
  const left = expiresAtMs - askedAtMs;
  const life = left > 0 && left <= LINK_LIFE_MS ? left : LINK_LIFE_MS;
  return askedAtMs + Math.max(life - LINK_MARGIN_MS, life / 2);
}
