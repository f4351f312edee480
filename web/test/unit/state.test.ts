// The client state's rules, without a browser or a server.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as st from "../../src/state.ts";

const msg = (senderId: string, text: string, mentionsMe = false): st.Change => ({
  kind: "message",
  senderId,
  text,
  atMs: 1,
  deleted: false,
  editedAtMs: 0,
  mentionsMe,
});

function twoRooms(): st.State {
  const s = st.newState("me");
  st.setRooms(s, [
    { id: "a", name: "a", topic: "", member: true, unread: 0, mentions: 0 },
    { id: "b", name: "b", topic: "", member: true, unread: 2, mentions: 1 },
  ]);
  st.openRoom(s, "a");
  return s;
}

test("events apply once, in order; a gap is reported, not papered over", () => {
  const s = twoRooms();
  assert.equal(st.applyEvent(s, "a", 1, msg("u", "one")), "new");
  assert.equal(st.applyEvent(s, "a", 2, msg("u", "two")), "new");
  assert.equal(st.applyEvent(s, "a", 2, msg("u", "two again")), "old", "a repeat after resume");
  assert.equal(st.applyEvent(s, "a", 4, msg("u", "four")), "gap");
  assert.deepEqual(s.rooms.get("a")!.lines.map((l) => l.text), ["one", "two"]);
  assert.equal(s.rooms.get("a")!.lastSeq, 2, "a gap does not move the resume point");
  assert.equal(st.applyEvent(s, "zz", 1, msg("u", "?")), "unknown");
});

test("unread and mention counts grow only in rooms not open, and not for one's own messages", () => {
  const s = twoRooms();
  st.applyEvent(s, "b", 1, msg("u", "hi @me", true));
  st.applyEvent(s, "b", 2, msg("me", "mine"));
  st.applyEvent(s, "a", 1, msg("u", "seen"));
  assert.deepEqual([s.rooms.get("b")!.unread, s.rooms.get("b")!.mentions], [3, 2]);
  assert.equal(s.rooms.get("a")!.unread, 0);
  st.openRoom(s, "b");
  assert.deepEqual([s.rooms.get("b")!.unread, s.rooms.get("b")!.mentions], [0, 0]);
});

test("edits and deletes change the line they target", () => {
  const s = twoRooms();
  st.applyEvent(s, "a", 1, msg("u", "typo"));
  st.applyEvent(s, "a", 2, { kind: "edited", targetSeq: 1, text: "fixed" });
  assert.deepEqual(s.rooms.get("a")!.lines[0], { seq: 1, senderId: "u", text: "fixed", atMs: 1, edited: true, deleted: false });
  st.applyEvent(s, "a", 3, { kind: "deleted", targetSeq: 1 });
  assert.equal(s.rooms.get("a")!.lines[0].deleted, true);
  assert.equal(s.rooms.get("a")!.lines[0].text, "");
});

test("history merges older pages below live lines without moving the resume point back", () => {
  const s = twoRooms();
  st.applyEvent(s, "a", 10, msg("u", "live"));
  st.addHistory(s, "a", [
    { seq: 8, senderId: "u", text: "eight", atMs: 1, edited: false, deleted: false },
    { seq: 9, senderId: "u", text: "nine", atMs: 1, edited: false, deleted: false },
  ]);
  assert.deepEqual(s.rooms.get("a")!.lines.map((l) => l.seq), [8, 9, 10]);
  assert.equal(s.rooms.get("a")!.lastSeq, 10);
});

test("a send stays pending until acked; a final refusal fails it, UNAVAILABLE does not", () => {
  const s = twoRooms();
  st.addPending(s, "a", "first", "c1");
  st.addPending(s, "a", "second", "c2");
  st.addPending(s, "a", "third", "c3");
  st.refused(s, "c2", "UNAVAILABLE", "server is shutting down");
  st.refused(s, "c3", "PERMISSION_DENIED", "read-only room");
  assert.deepEqual(st.toResend(s).map((p) => p.cmid), ["c1", "c2"], "in the order typed, failed ones not");
  st.acked(s, "c1");
  assert.deepEqual(s.pending.map((p) => [p.cmid, p.state]), [["c2", "pending"], ["c3", "failed"]]);
  const again = st.retry(s, "c3");
  assert.equal(again?.cmid, "c3", "a retry keeps its id: the server stores it once");
  assert.deepEqual(st.toResend(s).map((p) => p.cmid), ["c2", "c3"]);
});

test("a refreshed room list keeps what was applied and drops a room no longer joined from view", () => {
  const s = twoRooms();
  st.applyEvent(s, "a", 1, msg("u", "kept"));
  st.setRooms(s, [{ id: "a", name: "renamed", topic: "t", member: false, unread: 0, mentions: 0 }]);
  assert.equal(s.rooms.get("a")!.lines.length, 1);
  assert.equal(s.rooms.get("a")!.name, "renamed");
  assert.equal(s.current, null, "kicked from the open room: nothing open");
  assert.equal(s.rooms.has("b"), false);
});

test("backoff doubles from half a second to 30 s, with jitter", () => {
  assert.equal(st.backoffMs(0, 1), 500);
  assert.equal(st.backoffMs(0, 0), 250);
  assert.equal(st.backoffMs(3, 1), 4000);
  assert.equal(st.backoffMs(50, 1), 30_000);
});

test("reactions, pins and replies change the lines they are about", () => {
  const s = twoRooms();
  st.applyEvent(s, "a", 1, msg("u", "root"));
  st.applyEvent(s, "a", 2, { ...msg("v", "reply"), replyTo: 1, threadSeq: 1 } as st.Change);
  const add = (emoji: string, mine: boolean): st.Change => ({ kind: "reaction", targetSeq: 1, emoji, added: true, mine });
  st.applyEvent(s, "a", 3, add("👍", false));
  st.applyEvent(s, "a", 4, add("👍", true));
  st.applyEvent(s, "a", 5, add("🎉", false));
  st.applyEvent(s, "a", 6, { kind: "reaction", targetSeq: 1, emoji: "🎉", added: false, mine: false });
  st.applyEvent(s, "a", 7, { kind: "pin", targetSeq: 1, pinned: true });
  const [root, reply] = s.rooms.get("a")!.lines;
  assert.deepEqual(root.reactions, [{ emoji: "👍", count: 2, mine: true }]);
  assert.equal(root.replies, 1);
  assert.equal(root.pinned, true);
  assert.equal(reply.replyTo, 1);
  st.applyEvent(s, "a", 8, { kind: "deleted", targetSeq: 1 });
  assert.deepEqual(root.reactions, [], "a tombstone keeps no reactions");
  assert.equal(root.pinned, false);
});

test("attachments ride on their line and go with a delete; a pending send keeps its ids", () => {
  const s = twoRooms();
  const cat: st.AttachmentRef = { id: "f1", name: "cat.png", size: 70, mediaType: "image/png", width: 1, height: 1 };
  st.applyEvent(s, "a", 1, { ...msg("u", ""), attachments: [cat] } as st.Change);
  st.applyEvent(s, "a", 2, { ...msg("u", "plain"), attachments: [] } as st.Change);
  const [withFile, plain] = s.rooms.get("a")!.lines;
  assert.deepEqual(withFile.attachments, [cat]);
  assert.equal("attachments" in plain, false, "no attachments, no key");
  st.applyEvent(s, "a", 3, { kind: "edited", targetSeq: 1, text: "a cat" });
  assert.deepEqual(withFile.attachments, [cat], "an edit changes the text only");
  st.applyEvent(s, "a", 4, { kind: "deleted", targetSeq: 1 });
  assert.deepEqual(withFile.attachments, [], "a tombstone shows no files");
  st.applyEvent(s, "a", 5, { ...msg("u", ""), deleted: true, attachments: [cat] } as st.Change);
  assert.equal(s.rooms.get("a")!.lines[2].attachments, undefined, "nor does a message that arrives deleted");

  st.addPending(s, "a", "", "c1", [cat]);
  st.addPending(s, "a", "text only", "c2");
  st.refused(s, "c1", "NOT_FOUND", "no such attachment");
  st.retry(s, "c1");
  assert.deepEqual(
    st.toResend(s).map((p) => [p.cmid, p.attachments.map((a) => a.id)]),
    [["c1", ["f1"]], ["c2", []]],
    "a re-send names the same files",
  );
});
