// The attachment rules of the page (which files go, the chunks of an upload, sizes, links),
// without a browser or a server.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code } from "@connectrpc/connect";
import * as files from "../../src/attachments.ts";

test("the chunk plan covers the file from where the server stands, 256 KiB at a time", () => {
  const K = 1024;
  assert.deepEqual(files.chunkPlan(10, 0), [{ offset: 0, end: 10 }], "a small file is one chunk");
  assert.deepEqual(files.chunkPlan(600 * K, 0), [
    { offset: 0, end: 256 * K },
    { offset: 256 * K, end: 512 * K },
    { offset: 512 * K, end: 600 * K },
  ]);
  assert.deepEqual(files.chunkPlan(512 * K, 256 * K), [{ offset: 256 * K, end: 512 * K }], "exactly on a boundary");
  assert.deepEqual(files.chunkPlan(600 * K, 300 * K), [
    { offset: 300 * K, end: 556 * K },
    { offset: 556 * K, end: 600 * K },
  ], "a resume mid-chunk goes on from `received`, not from a boundary");
  assert.deepEqual(files.chunkPlan(100, 100), [], "all stored: nothing to send");
  assert.deepEqual(files.chunkPlan(100, 200), []);
  const plan = files.chunkPlan(10 * K * K + 1, 0);
  assert.equal(plan.length, 41);
  assert.ok(plan.every((c) => c.end - c.offset <= files.CHUNK_BYTES && c.end > c.offset));
  assert.ok(plan.every((c, i) => i === 0 || c.offset === plan[i - 1].end), "no gaps, no overlaps");
});

test("only failures on the way are resumed; refusals end the upload", () => {
  for (const c of [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Aborted, Code.FailedPrecondition])
    assert.equal(files.resumable(c), true, Code[c]);
  for (const c of [Code.InvalidArgument, Code.ResourceExhausted, Code.NotFound, Code.PermissionDenied, Code.Unauthenticated, Code.Canceled])
    assert.equal(files.resumable(c), false, Code[c]);
});

test("at most 10 files a message, none empty", () => {
  const f = (name: string, size = 1) => ({ name, size });
  assert.equal(files.checkFiles([f("a"), f("b")]), null);
  assert.equal(files.checkFiles(Array.from({ length: 10 }, (_, i) => f(`f${i}`))), null);
  assert.match(files.checkFiles(Array.from({ length: 11 }, (_, i) => f(`f${i}`)))!, /at most 10 files/);
  assert.equal(files.checkFiles([f("a"), f("empty.txt", 0)]), "empty.txt is empty");
});

test("images the server serves inline are shown; everything else is a download", () => {
  for (const t of ["image/png", "image/jpeg", "image/gif", "image/webp"]) assert.equal(files.shownInline(t), true, t);
  for (const t of ["image/bmp", "image/heic", "image/svg+xml", "application/pdf", "text/plain", "application/octet-stream", "", "IMAGE/PNG"])
    assert.equal(files.shownInline(t), false, t);
});

test("sizes read as people say them", () => {
  assert.equal(files.humanSize(0), "0 B");
  assert.equal(files.humanSize(1023), "1023 B");
  assert.equal(files.humanSize(1024), "1.0 KB");
  assert.equal(files.humanSize(1229), "1.2 KB");
  assert.equal(files.humanSize(10188), "9.9 KB");
  assert.equal(files.humanSize(10200), "10 KB", "not 10.0");
  assert.equal(files.humanSize(40 * 1024), "40 KB");
  assert.equal(files.humanSize(1024 * 1024 - 1), "1.0 MB", "not 1024 KB");
  assert.equal(files.humanSize(3.5 * 1024 * 1024), "3.5 MB");
  assert.equal(files.humanSize(10 * 1024 * 1024), "10 MB");
  assert.equal(files.humanSize(5 * 1024 ** 5), "5120 TB");
});

test("progress is a whole percentage that says 100 only when done", () => {
  assert.equal(files.percent(0, 1000), 0);
  assert.equal(files.percent(400, 1000), 40);
  assert.equal(files.percent(999, 1000), 99);
  assert.equal(files.percent(1000, 1000), 100);
  assert.equal(files.percent(0, 0), 100);
});

test("a download link is used until shortly before it expires, whatever the clocks say", () => {
  const asked = 1_000_000;
  const life = files.LINK_LIFE_MS;
  const margin = files.LINK_MARGIN_MS;
  assert.equal(files.linkUsableUntil(asked + life, asked), asked + life - margin, "clocks agree");
  assert.equal(files.linkUsableUntil(asked + 60_000, asked), asked + 30_000, "a shorter life (or a clock ahead) is taken as said");
  assert.equal(files.linkUsableUntil(asked + 10 * life, asked), asked + life - margin, "a clock far behind: the usual life");
  assert.equal(files.linkUsableUntil(asked - 10 * life, asked), asked + life - margin, "a clock far ahead: the usual life");
  assert.ok(files.linkUsableUntil(asked + 1, asked) > asked, "a link about to expire is still used for a moment");
  assert.equal(files.linkUsableUntil(asked + 20_000, asked), asked + 10_000, "half of a life shorter than the margin");
});
