// The network side: gRPC-Web clients for this origin, the session's tokens, one Listen
// stream that follows every room the user is in, reconnecting by itself, uploads that resume
// after a failed call, and short-lived download links. Pure decisions (what a frame does to
// the state, which sends go again, how long to wait) are in state.ts; those about files
// (chunks, which errors to resume after, how long a link is used) in attachments.ts.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AttachmentService, type Upload } from "./gen/edgechat/v1/attachments_pb.js";
import { AuthService } from "./gen/edgechat/v1/auth_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ChatService, type ClientFrameSchema, type ServerFrame } from "./gen/edgechat/v1/chat_pb.js";
import type { Attachment, Notification, RoomEvent } from "./gen/edgechat/v1/common_pb.js";
import { RoomService } from "./gen/edgechat/v1/rooms_pb.js";
import * as files from "./attachments.js";
import * as st from "./state.js";

const REFRESH_KEY = "edgechat.refresh";

type FrameKind = MessageInitShape<typeof ClientFrameSchema>["kind"];

/** Where the refresh token is kept: for good ("stay signed in") or for this tab only. */
function store(persist: boolean): Storage {
  return persist ? localStorage : sessionStorage;
}

export class Api {
  token = "";
  private readonly auth_: Interceptor = (next) => async (req) => {
    if (this.token) req.header.set("authorization", `Bearer ${this.token}`);
    return next(req);
  };
  readonly transport = createGrpcWebTransport({
    baseUrl: location.origin,
    useBinaryFormat: true,
    interceptors: [this.auth_],
  });
  readonly auth = createClient(AuthService, this.transport);
  readonly rooms = createClient(RoomService, this.transport);
  readonly chat = createClient(ChatService, this.transport);
  readonly attachments = createClient(AttachmentService, this.transport);
}

/** The signed-in user and the tokens that keep them signed in. */
export class Session {
  userId = "";
  username = "";
  private refreshToken = "";
  private persist = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Bumped whenever the session is replaced or ended: a refresh still in flight for an
   * older one must neither install its tokens nor, when refused, throw out the new session
   * (remove its stored token, go back to the form).
   */
  private epoch = 0;
  /** Called with each new access token (the stream re-authenticates with it). */
  onToken: (token: string) => void = () => {};
  /** Called when the session cannot be kept (refresh refused): back to the login form. */
  onLost: (why: string) => void = () => {};

  constructor(readonly api: Api) {}

  async login(username: string, password: string, register: boolean, persist: boolean): Promise<void> {
    this.end();
    const r = register
      ? await this.api.auth.register({ username, password, displayName: "" })
      : await this.api.auth.login({ username, password });
    this.persist = persist;
    this.accept(r.accessToken, r.refreshToken, Number(r.accessExpiresAtMs), r.user?.id ?? "", r.user?.username ?? username);
  }

  /** Stops refreshing this session (the app went back to the login form). */
  end(): void {
    clearTimeout(this.timer);
    this.epoch++;
  }

  /** Signs in again with a stored refresh token, if there is one. */
  async resume(): Promise<boolean> {
    const epoch = this.epoch;
    for (const persist of [false, true]) {
      const token = store(persist).getItem(REFRESH_KEY);
      if (!token) continue;
      this.persist = persist;
      this.refreshToken = token;
      try {
        await this.refresh(epoch);
        return true;
      } catch (e) {
        if (epoch !== this.epoch) return true; // Replaced meanwhile: the new session stands.
        if (ConnectError.from(e).code === Code.Unauthenticated) store(persist).removeItem(REFRESH_KEY);
        else throw e;
      }
    }
    return false;
  }

  /** Logs out this device, or (`everywhere`) every device and open stream of the user. */
  async logout(everywhere: boolean): Promise<void> {
    this.end();
    try {
      await this.api.auth.logout({ refreshToken: this.refreshToken, allDevices: everywhere });
    } finally {
      store(this.persist).removeItem(REFRESH_KEY);
      this.api.token = "";
    }
  }

  /**
   * Trades the refresh token for new tokens. Refresh tokens rotate and a reused one revokes
   * its whole family, so tabs sharing a stored token ("stay signed in") must not refresh with
   * a copy another tab has already rotated: one refresh at a time across tabs (Web Locks),
   * each with the token as stored now.
   */
  private async refresh(epoch: number): Promise<void> {
    const run = async () => {
      if (epoch !== this.epoch) return;
      this.refreshToken = store(this.persist).getItem(REFRESH_KEY) ?? this.refreshToken;
      const r = await this.api.auth.refresh({ refreshToken: this.refreshToken });
      if (epoch !== this.epoch) return;
      this.accept(r.accessToken, r.refreshToken, Number(r.accessExpiresAtMs), r.user?.id ?? "", r.user?.username ?? "");
    };
    if (typeof navigator !== "undefined" && navigator.locks) await navigator.locks.request("edgechat-refresh", run);
    else await run();
  }

  private accept(access: string, refresh: string, expiresAtMs: number, userId: string, username: string): void {
    this.api.token = access;
    this.refreshToken = refresh;
    if (userId) this.userId = userId;
    if (username) this.username = username;
    store(this.persist).setItem(REFRESH_KEY, refresh);
    this.onToken(access);
    // Refresh a minute before expiry, or after three quarters of a short lifetime (at least
    // 5 s from now); retry soon on a network error.
    const left = expiresAtMs - Date.now();
    const due = Math.max(5_000, Math.min(left - 60_000, left * 0.75));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refreshLoop(), due);
  }

  private async refreshLoop(): Promise<void> {
    const epoch = this.epoch;
    try {
      await this.refresh(epoch);
    } catch (e) {
      if (epoch !== this.epoch) return;
      if (ConnectError.from(e).code === Code.Unauthenticated) {
        store(this.persist).removeItem(REFRESH_KEY);
        this.onLost("your session has ended; log in again");
      } else {
        this.timer = setTimeout(() => this.refreshLoop(), 5_000);
      }
    }
  }
}

/** What the stream tells the app. */
export type Status =
  | { state: "connecting" }
  | { state: "connected" }
  /** `retryAt` null: the browser has no network; the stream reconnects when it is back. */
  | { state: "offline"; retryAt: number | null };

/** A message's attachments in the state's terms. */
export function attachmentRefs(list: Attachment[]): st.AttachmentRef[] {
  return list.map((a) => ({ id: a.id, name: a.name, size: Number(a.size), mediaType: a.mediaType, width: a.width, height: a.height }));
}

/** Decodes a RoomEvent into the state's terms. */
export function change(ev: RoomEvent, me: string): st.Change {
  switch (ev.kind.case) {
    case "message": {
      const m = ev.kind.value;
      return {
        kind: "message",
        senderId: m.senderId,
        text: m.text,
        atMs: Number(m.sentAtMs),
        deleted: m.deleted,
        editedAtMs: Number(m.editedAtMs),
        mentionsMe: m.mentionUserIds.includes(me),
        replyTo: Number(m.replyToSeq),
        threadSeq: Number(m.threadSeq),
        attachments: attachmentRefs(m.attachments),
      };
    }
    case "reaction": {
      const r = ev.kind.value;
      return { kind: "reaction", targetSeq: Number(r.targetSeq), emoji: r.emoji, added: r.added, mine: ev.actorId === me };
    }
    case "pin":
      return { kind: "pin", targetSeq: Number(ev.kind.value.targetSeq), pinned: ev.kind.value.pinned };
    case "edited":
      return { kind: "edited", targetSeq: Number(ev.kind.value.targetSeq), text: ev.kind.value.text };
    case "deleted":
      return { kind: "deleted", targetSeq: Number(ev.kind.value.targetSeq) };
    default:
      return { kind: "other" };
  }
}

/** One Listen stream at a time, reopened with backoff, resuming every room after its last seq. */
export class Stream {
  private streamId = "";
  private abort: AbortController | undefined;
  private stopped = false;
  /** The browser says it has no network: wait for it to come back, not for a timer. */
  private offline = typeof navigator !== "undefined" && !navigator.onLine;
  onStatus: (s: Status) => void = () => {};
  onChange: () => void = () => {};
  /** A member came, went or changed role, or the room's settings changed. */
  onRoomsChanged: (roomId: string) => void = () => {};
  /** A new message from `userId` (ends their typing notice). */
  onMessage: (roomId: string, userId: string) => void = () => {};
  /** A room mate's presence changed. */
  onPresence: (userId: string, status: number) => void = () => {};
  /** A new notification of the user (mention, direct message, invite, ...). */
  onNotification: (n: Notification) => void = () => {};
  /** Someone in `roomId` is typing (never the user). */
  onTyping: (roomId: string, userId: string) => void = () => {};
  onUnauthenticated: () => Promise<boolean> = async () => false;

  constructor(
    private readonly api: Api,
    private readonly state: st.State,
  ) {}

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
    this.wake();
  }

  /** Ends a wait between attempts early (back online, or stopped). */
  private wake: () => void = () => {};

  /** Ends the current stream so that the loop opens a new one (rooms joined or left). */
  reopen(): void {
    this.abort?.abort();
  }

  async run(): Promise<void> {
    // The browser knows before the socket does: going offline ends the stream at once (an
    // open response can otherwise sit silent for minutes), and coming back reconnects at
    // once instead of waiting out the backoff.
    const wentOffline = () => {
      this.offline = true;
      this.abort?.abort();
    };
    let cameBackOnline = false;
    const cameBack = () => {
      this.offline = false;
      cameBackOnline = true;
      this.wake();
    };
    addEventListener("offline", wentOffline);
    addEventListener("online", cameBack);
    let attempt = 0;
    while (!this.stopped) {
      this.onStatus({ state: "connecting" });
      const ctrl = new AbortController();
      this.abort = ctrl;
      try {
        const subscriptions = [...this.state.rooms.values()]
          .filter((r) => r.member)
          .map((r) => ({ roomId: r.id, afterSeq: BigInt(r.lastSeq) }));
        for await (const f of this.api.chat.listen({ subscriptions }, { signal: ctrl.signal })) {
          if (await this.frame(f)) attempt = 0;
        }
      } catch (e) {
        const err = ConnectError.from(e);
        if (this.stopped) break;
        if (err.code === Code.Unauthenticated && !(await this.onUnauthenticated())) break;
      } finally {
        this.streamId = "";
      }
      if (this.stopped) break;
      if (ctrl.signal.aborted && !this.offline) {
        // reopen(): at once.
        continue;
      }
      const wait = st.backoffMs(attempt++, Math.random());
      this.onStatus({ state: "offline", retryAt: this.offline ? null : Date.now() + wait });
      cameBackOnline = false;
      await new Promise<void>((r) => {
        const timer = setTimeout(r, this.offline ? 24 * 3600_000 : wait);
        this.wake = () => {
          clearTimeout(timer);
          r();
        };
      });
      this.wake = () => {};
      // The network came back: start the backoff over. A server that keeps refusing does
      // not reset it, so every open page backs off to 30 s instead of knocking every second.
      if (cameBackOnline) attempt = 0;
    }
    removeEventListener("offline", wentOffline);
    removeEventListener("online", cameBack);
  }

  /** Applies one frame; true once the stream is established. */
  private async frame(f: ServerFrame): Promise<boolean> {
    const k = f.kind;
    switch (k.case) {
      case "listening":
        this.streamId = k.value.streamId;
        this.onStatus({ state: "connected" });
        for (const p of st.toResend(this.state)) void this.sendFrame(p);
        return true;
      case "event": {
        const ev = k.value;
        const r = st.applyEvent(this.state, ev.roomId, Number(ev.seq), change(ev, this.state.me));
        if (r === "gap") {
          // Missed events: follow the room again from the last one applied.
          const room = this.state.rooms.get(ev.roomId);
          void this.send({ case: "subscribe", value: { roomId: ev.roomId, afterSeq: BigInt(room?.lastSeq ?? 0) } });
        }
        if (ev.kind.case === "member" || ev.kind.case === "roomUpdated") this.onRoomsChanged(ev.roomId);
        if (ev.kind.case === "message" && r === "new") this.onMessage(ev.roomId, ev.kind.value.senderId);
        this.onChange();
        return false;
      }
      case "sendAck":
        st.acked(this.state, k.value.clientMessageId);
        this.onChange();
        return false;
      case "error":
        if (k.value.clientMessageId) {
          st.refused(this.state, k.value.clientMessageId, k.value.code, k.value.message);
          this.onChange();
        }
        return false;
      case "presence":
        this.onPresence(k.value.userId, k.value.status);
        return false;
      case "notification":
        this.onNotification(k.value);
        return false;
      case "typing":
        if (k.value.userId !== this.state.me) this.onTyping(k.value.roomId, k.value.userId);
        return false;
      case "goingAway":
        this.abort?.abort();
        return false;
      default:
        return false;
    }
  }

  /** Sends a message (already recorded as pending); it goes out once a stream is open. */
  async sendFrame(p: st.Pending): Promise<boolean> {
    const attachmentIds = p.attachments.map((a) => a.id);
    return this.send({ case: "send", value: { roomId: p.roomId, clientMessageId: p.cmid, text: p.text, attachmentIds } });
  }

  /** Tells the room's other members that the user is typing (the server throttles too). */
  async typing(roomId: string): Promise<boolean> {
    return this.send({ case: "typing", value: { roomId } });
  }

  /** Moves the user's read marker (so unread counts agree on every device). */
  async markRead(roomId: string, seq: number): Promise<boolean> {
    return this.send({ case: "markRead", value: { roomId, seq: BigInt(seq) } });
  }

  /** Re-authenticates the open stream with a fresh access token. */
  async reauthenticate(token: string): Promise<boolean> {
    return this.send({ case: "reauthenticate", value: { accessToken: token } });
  }

  /** Whether the frame was taken by an open stream. */
  private async send(kind: FrameKind): Promise<boolean> {
    if (!this.streamId) return false; // Pending sends go again when the next stream opens.
    try {
      await this.api.chat.sendFrame({ streamId: this.streamId, frame: { kind } });
      return true;
    } catch {
      // The stream is going or gone: the loop reconnects and pending sends go again.
      return false;
    }
  }
}

/**
 * Uploads a file and returns the attachment it became (to name in a send). The file is read
 * whole (at most the server's [attachments] max_bytes, 10 MiB by default) to hash it, then
 * sent in chunks of 256 KiB from where the server says it stands. A call that fails on the
 * way (network, restarting server; `files.resumable`) is followed, after a backoff, by
 * GetUpload and the chunks from there: at most `files.UPLOAD_RETRIES` failures in a row. A
 * refusal (too large, over quota, bad name) is thrown as is. Every call carries the access
 * token current when it is made (the Api's interceptor), so the session's refresh timer keeps
 * a long upload signed in.
 */
export async function upload(api: Api, file: File, onProgress: (stored: number) => void = () => {}): Promise<Attachment> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const sha256 = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const size = bytes.length;
  let up: Upload | undefined;
  /** An answer may have been lost: ask where the upload stands before the next chunk. */
  let ask = false;
  let failures = 0;
  for (;;) {
    try {
      // StartUpload again for the same file answers the same unfinished upload.
      if (!up) up = await api.attachments.startUpload({ name: file.name, size: BigInt(size), sha256 });
      else if (ask) up = await api.attachments.getUpload({ uploadId: up.uploadId });
      ask = false;
      if (up.attachment) {
        onProgress(size);
        return up.attachment;
      }
      const received = Number(up.received);
      onProgress(received);
      const [next] = files.chunkPlan(size, received);
      // Every byte stored and yet no attachment: ask again (it counts as a failure).
      if (!next) throw new ConnectError(`the server has all of ${file.name} but no attachment of it`, Code.FailedPrecondition);
      const data = bytes.subarray(next.offset, next.end);
      up = await api.attachments.uploadChunk({ uploadId: up.uploadId, offset: BigInt(next.offset), data });
      failures = 0;
    } catch (e) {
      const err = ConnectError.from(e);
      if (!files.resumable(err.code) || ++failures > files.UPLOAD_RETRIES) throw err;
      ask = up !== undefined;
      await new Promise((r) => setTimeout(r, st.backoffMs(failures - 1, Math.random())));
    }
  }
}

/**
 * Download links by attachment id, asked for (GetAttachment) when an attachment is first
 * shown and used until shortly before they expire (`files.linkUsableUntil`). One question per id
 * at a time, and a refusal is remembered for `FAILED_KEPT_MS` (a page redraws on every event:
 * it must not ask again each time). Links are the signed-in user's, so a new session starts
 * with `clear()`. Holds only links not yet expired (pruned as new ones come), so it stays as
 * small as what was shown in the last few minutes.
 */
export class Links {
  private readonly known = new Map<string, { path: string; untilMs: number; askedAtMs: number }>();
  private readonly asking = new Map<string, Promise<string>>();
  private readonly failed = new Map<string, { atMs: number; error: unknown }>();
  static readonly FAILED_KEPT_MS = 10_000;
  /** Bumped by `clear()`: an answer asked for in the previous session is not kept. */
  private epoch = 0;

  constructor(private readonly api: Api) {}

  /** A usable link already known, or undefined (then `get` it). */
  cached(id: string, nowMs = Date.now()): string | undefined {
    const l = this.known.get(id);
    return l && nowMs < l.untilMs ? l.path : undefined;
  }

  /** When the link now known for `id` was asked for (0: none). */
  askedAt(id: string): number {
    return this.known.get(id)?.askedAtMs ?? 0;
  }

  /** A usable link, asked for if none is known. */
  get(id: string): Promise<string> {
    const now = Date.now();
    const have = this.cached(id, now);
    if (have !== undefined) return Promise.resolve(have);
    const failed = this.failed.get(id);
    if (failed && now - failed.atMs < Links.FAILED_KEPT_MS) return Promise.reject(failed.error);
    let p = this.asking.get(id);
    if (!p) {
      const epoch = this.epoch;
      p = this.api.attachments
        .getAttachment({ attachmentId: id })
        .then(
          (a) => {
            if (epoch !== this.epoch) return a.downloadPath;
            for (const [k, l] of this.known) if (l.untilMs <= now) this.known.delete(k);
            const untilMs = files.linkUsableUntil(Number(a.downloadExpiresAtMs), now);
            this.known.set(id, { path: a.downloadPath, untilMs, askedAtMs: now });
            this.failed.delete(id);
            return a.downloadPath;
          },
          (error: unknown) => {
            if (epoch !== this.epoch) throw error;
            for (const [k, f] of this.failed) if (now - f.atMs >= Links.FAILED_KEPT_MS) this.failed.delete(k);
            this.failed.set(id, { atMs: now, error });
            throw error;
          },
        )
        .finally(() => {
          if (this.asking.get(id) === p) this.asking.delete(id);
        });
      this.asking.set(id, p);
    }
    return p;
  }

  /** Drops a link that did not work (the server restarted: links are signed per run). */
  forget(id: string): void {
    this.known.delete(id);
  }

  clear(): void {
    this.epoch++;
    this.known.clear();
    this.failed.clear();
    this.asking.clear();
  }
}
