// The client's state of rooms, messages and sends, as plain data and functions: no DOM, no
// network, so it is unit-tested as is (test/unit). Seqs are numbers (uint64 on the wire;
// a room would need 2^53 events to lose precision).

/** One message line of a room. */
export interface Line {
  seq: number;
  senderId: string;
  text: string;
  atMs: number;
  edited: boolean;
  deleted: boolean;
  /** The message this one replies to (0: none). */
  replyTo?: number;
  /** On a thread's root: its replies. */
  replies?: number;
  pinned?: boolean;
  /** Distinct reactions in first-added order; `mine`: the user's own. */
  reactions?: Reaction[];
  /** Files attached, in the order sent (none once the message is deleted). */
  attachments?: AttachmentRef[];
}

/** An attachment as a message carries it (the bytes are fetched by id when shown). */
export interface AttachmentRef {
  id: string;
  name: string;
  size: number;
  /** Decided by the server from the bytes or the name. */
  mediaType: string;
  /** Pixels, for images the server could read; 0 when unknown. */
  width: number;
  height: number;
}

export interface Reaction {
  emoji: string;
  count: number;
  mine: boolean;
}

/** A room as the client shows it. */
export interface RoomView {
  id: string;
  name: string;
  topic: string;
  /** Whether the user is a member (ListRooms also lists public rooms to join). */
  member: boolean;
  /** The highest seq applied: where a resume starts (`after_seq`). 0: nothing yet. */
  lastSeq: number;
  unread: number;
  mentions: number;
  /** Messages by ascending seq. */
  lines: Line[];
}

/** A message sent but not yet acknowledged (or refused). */
export interface Pending {
  cmid: string;
  roomId: string;
  text: string;
  /** Uploaded files the message carries: every re-send names them again. */
  attachments: AttachmentRef[];
  state: "pending" | "failed";
  error?: string;
}

/** What an event from the server looks like to the state (decoded from a RoomEvent). */
export type Change =
  | {
      kind: "message";
      senderId: string;
      text: string;
      atMs: number;
      deleted: boolean;
      editedAtMs: number;
      mentionsMe: boolean;
      replyTo?: number;
      threadSeq?: number;
      attachments?: AttachmentRef[];
    }
  | { kind: "reaction"; targetSeq: number; emoji: string; added: boolean; mine: boolean }
  | { kind: "pin"; targetSeq: number; pinned: boolean }
  | { kind: "edited"; targetSeq: number; text: string }
  | { kind: "deleted"; targetSeq: number }
  | { kind: "other" };

export interface State {
  me: string;
  rooms: Map<string, RoomView>;
  pending: Pending[];
  current: string | null;
}

export function newState(me: string): State {
  return { me, rooms: new Map(), pending: [], current: null };
}

/** Merges the server's room list; what the client already applied stays. */
export function setRooms(
  s: State,
  rooms: { id: string; name: string; topic: string; member: boolean; unread: number; mentions: number }[],
): void {
  const next = new Map<string, RoomView>();
  for (const r of rooms) {
    const old = s.rooms.get(r.id);
    next.set(r.id, {
      id: r.id,
      name: r.name,
      topic: r.topic,
      member: r.member,
      lastSeq: old?.lastSeq ?? 0,
      unread: r.id === s.current ? 0 : r.unread,
      mentions: r.id === s.current ? 0 : r.mentions,
      lines: old?.lines ?? [],
    });
  }
  s.rooms = next;
  if (s.current && !next.get(s.current)?.member) s.current = null;
}

/**
 * Applies one event at `seq`. `old`: at or below what was applied (a repeat after a resume;
 * ignored). `gap`: beyond the next seq (the caller reloads from `lastSeq`). Events of a room
 * the state does not know are `unknown`.
 */
export function applyEvent(s: State, roomId: string, seq: number, c: Change): "new" | "old" | "gap" | "unknown" {
  const room = s.rooms.get(roomId);
  if (!room) return "unknown";
  if (seq <= room.lastSeq) return "old";
  if (room.lastSeq !== 0 && seq !== room.lastSeq + 1) return "gap";
  room.lastSeq = seq;
  switch (c.kind) {
    case "message":
      insertLine(room, {
        seq,
        senderId: c.senderId,
        text: c.text,
        atMs: c.atMs,
        edited: c.editedAtMs !== 0,
        deleted: c.deleted,
        ...(c.replyTo ? { replyTo: c.replyTo } : {}),
        ...(c.attachments?.length && !c.deleted ? { attachments: c.attachments } : {}),
      });
      if (c.threadSeq) {
        const root = room.lines.find((x) => x.seq === c.threadSeq);
        if (root) root.replies = (root.replies ?? 0) + 1;
      }
      if (roomId !== s.current && c.senderId !== s.me && !c.deleted) {
        room.unread += 1;
        if (c.mentionsMe) room.mentions += 1;
      }
      break;
    case "edited": {
      const l = room.lines.find((x) => x.seq === c.targetSeq);
      if (l) {
        l.text = c.text;
        l.edited = true;
      }
      break;
    }
    case "deleted": {
      const l = room.lines.find((x) => x.seq === c.targetSeq);
      if (l) {
        l.deleted = true;
        l.text = "";
        if (l.reactions) l.reactions = [];
        if (l.attachments) l.attachments = [];
        if (l.pinned) l.pinned = false;
      }
      break;
    }
    case "reaction": {
      const l = room.lines.find((x) => x.seq === c.targetSeq);
      if (l) countReaction(l, c.emoji, c.added, c.mine);
      break;
    }
    case "pin": {
      const l = room.lines.find((x) => x.seq === c.targetSeq);
      if (l) l.pinned = c.pinned;
      break;
    }
    case "other":
      break;
  }
  return "new";
}

/** Counts one reaction change into a line, as the server counts it into the message. */
export function countReaction(l: Line, emoji: string, added: boolean, mine: boolean): void {
  const list = (l.reactions ??= []);
  const r = list.find((x) => x.emoji === emoji);
  if (added) {
    if (r) {
      r.count += 1;
      r.mine ||= mine;
    } else list.push({ emoji, count: 1, mine });
  } else if (r) {
    r.count -= 1;
    if (mine) r.mine = false;
    if (r.count <= 0) list.splice(list.indexOf(r), 1);
  }
}

/** Adds older lines from History (scroll-back); never moves `lastSeq` backwards. */
export function addHistory(s: State, roomId: string, lines: Line[]): void {
  const room = s.rooms.get(roomId);
  if (!room) return;
  for (const l of lines) insertLine(room, l);
  const top = lines.reduce((m, l) => Math.max(m, l.seq), 0);
  if (top > room.lastSeq) room.lastSeq = top;
}

function insertLine(room: RoomView, line: Line): void {
  const at = room.lines.findIndex((x) => x.seq >= line.seq);
  if (at === -1) room.lines.push(line);
  else if (room.lines[at].seq === line.seq) room.lines[at] = line;
  else room.lines.splice(at, 0, line);
}

/** Opens a room: its unread counts are read. */
export function openRoom(s: State, roomId: string): void {
  s.current = roomId;
  const room = s.rooms.get(roomId);
  if (room) {
    room.unread = 0;
    room.mentions = 0;
  }
}

/**
 * Records a send before it goes out; its id makes every re-send the same message, with the
 * same attachments.
 */
export function addPending(s: State, roomId: string, text: string, cmid: string, attachments: AttachmentRef[] = []): Pending {
  const p: Pending = { cmid, roomId, text, attachments, state: "pending" };
  s.pending.push(p);
  return p;
}

/** The server stored it: the pending line goes (the event shows the message). */
export function acked(s: State, cmid: string): void {
  s.pending = s.pending.filter((p) => p.cmid !== cmid);
}

/**
 * A refusal. `UNAVAILABLE` (the server is stopping or its storage failed) is not final: the
 * send stays pending and goes again on reconnect. Anything else marks it failed.
 */
export function refused(s: State, cmid: string, code: string, message: string): void {
  if (code === "UNAVAILABLE") return;
  const p = s.pending.find((x) => x.cmid === cmid);
  if (p) {
    p.state = "failed";
    p.error = `${code}: ${message}`;
  }
}

/** Sends to make (again) on a fresh stream: every pending one, in the order typed. */
export function toResend(s: State): Pending[] {
  return s.pending.filter((p) => p.state === "pending");
}

/** A failed send tried again: pending once more, same id. */
export function retry(s: State, cmid: string): Pending | undefined {
  const p = s.pending.find((x) => x.cmid === cmid);
  if (p) {
    p.state = "pending";
    delete p.error;
  }
  return p;
}

/** The delay before reconnect attempt `n` (0-based): 0.5 s doubling to 30 s, with jitter. */
export function backoffMs(n: number, random: number): number {
  const base = Math.min(30_000, 500 * 2 ** Math.min(n, 6));
  return Math.round(base * (0.5 + random / 2));
}
