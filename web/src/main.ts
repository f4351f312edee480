// The page: a login form, then rooms on the left (or on top on a phone), the open room's
// messages and a composer with an "Attach" file picker. Everything a server or user sent is
// put in as text (textContent) or as an attribute, never as HTML; attachments are images
// (img src) or download links, both to a same-origin link the server signs. No framework:
// the whole view is a few lists redrawn from state.ts on each change, which at chat sizes
// costs less than a framework's runtime.

import { Code, ConnectError } from "@connectrpc/connect";
import { NotificationKind, PresenceStatus, RoomRole, Visibility, type Member, type Notification } from "./gen/edgechat/v1/common_pb.js";
import { Api, Links, Session, Stream, attachmentRefs, change, upload, type Status } from "./connection.js";
import * as files from "./attachments.js";
import * as st from "./state.js";

type Child = Node | string | null | false;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) if (c) e.append(c);
  return e;
}

function describe(e: unknown): string {
  const err = ConnectError.from(e);
  if (err.code === Code.Unavailable || err.code === Code.Unknown) return "the server cannot be reached; try again";
  return err.rawMessage || String(e);
}

const api = new Api();
const session = new Session(api);
const links = new Links(api);
let state = st.newState("");
let stream: Stream | undefined;
let status: Status = { state: "connecting" };
const names = new Map<string, string>();
/** Rooms whose member names are being read again. */
const namesLoading = new Set<string>();
/** The read marker last sent per room. */
const readUpTo = new Map<string, number>();
/** Rooms whose History said there is an older page than the lines shown. */
const older = new Set<string>();
const root = document.getElementById("app")!;

/** What was typed but not sent survives a lost session (log in again, it is still there). */
let draft = "";

function showLogin(message = ""): void {
  if (composer) draft = composer.value;
  stream?.stop();
  stream = undefined;
  session.end();
  const user = el("input", { id: "username", name: "username", autocomplete: "username", required: "", autocapitalize: "none" });
  const pass = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: "" });
  const keep = el("input", { id: "keep", type: "checkbox" });
  const error = el("p", { class: "error", role: "alert" }, message);
  const submit = async (register: boolean) => {
    error.textContent = "";
    try {
      await session.login(user.value.trim(), pass.value, register, keep.checked);
      await start();
    } catch (e) {
      error.textContent = describe(e);
    }
  };
  const form = el(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    el("h1", { id: "login-title" }, "edgechat"),
    el("label", { for: "username" }, "Username"),
    user,
    el("label", { for: "password" }, "Password"),
    pass,
    el("label", { class: "check" }, keep, " Stay signed in on this device"),
    el("div", { class: "buttons" }, el("button", { type: "submit" }, "Log in"), el("button", { type: "button", id: "register" }, "Register")),
    error,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void submit(false);
  });
  form.querySelector("#register")!.addEventListener("click", () => {
    if (form.reportValidity()) void submit(true);
  });
  root.replaceChildren(form);
  user.focus();
}

/** The newest notifications (at most 50), oldest first. */
let notes: Notification[] = [];
const NOTES_KEPT = 50;

function noteText(n: Notification): string {
  const from = names.get(n.fromUserId) ?? "someone";
  switch (n.kind) {
    case NotificationKind.DIRECT_MESSAGE:
      return `${from} sent you a direct message: ${n.text}`;
    case NotificationKind.MENTION:
      return `${from} mentioned you: ${n.text}`;
    case NotificationKind.INVITE:
      return `${from} invited you to a room`;
    default:
      return n.text || "a notification";
  }
}

/** Reads the stored notifications, page by page (ascending ids), keeping the newest. */
async function loadNotifications(): Promise<void> {
  let after = 0n;
  for (let page = 0; page < 20; page++) {
    const r = await api.chat.listNotifications({ afterId: after, limit: 100 });
    notes = [...notes, ...r.notifications].slice(-NOTES_KEPT);
    if (r.notifications.length < 100) break;
    after = r.notifications[r.notifications.length - 1].id;
  }
}

function renderNotes(): void {
  const list = document.getElementById("note-list");
  const summary = document.getElementById("note-count");
  if (!list || !summary) return;
  const unread = notes.filter((n) => !n.read).length;
  summary.textContent = unread > 0 ? `Notifications (${unread} new)` : "Notifications";
  list.replaceChildren(
    ...[...notes].reverse().map((n) => {
      const b = button(noteText(n), `Open the room of: ${noteText(n)}`, async () => {
        if (state.rooms.get(n.roomId)?.member) {
          st.openRoom(state, n.roomId);
          render();
        }
      });
      b.classList.add("note");
      if (!n.read) b.classList.add("unread");
      return el("li", {}, b);
    }),
  );
}

/**
 * Searches the user's rooms (newest first) and lists the hits under the search box; a hit
 * opens its room. `pageToken` continues the list ("More results"). A bad query (no word, too
 * long) shows the server's reason.
 */
async function runSearch(query: string, pageToken: string): Promise<void> {
  const list = document.getElementById("search-results");
  if (!list) return;
  if (!query.trim()) {
    list.replaceChildren();
    return;
  }
  const r = await api.chat.search({ query, roomId: "", limit: 20, pageToken }).catch((e: unknown) => {
    alertLine(describe(e));
    return undefined;
  });
  if (!r) return;
  alertLine("");
  const items = r.hits.map((h) => {
    const room = state.rooms.get(h.roomId);
    const who = names.get(h.message?.senderId ?? "") ?? "someone";
    const text = `#${room?.name ?? "a room"} · ${who}: ${h.message?.text ?? ""}`;
    const b = button(text, `Open #${room?.name ?? "the room"} at: ${text}`, async () => {
      if (!state.rooms.get(h.roomId)?.member) return;
      st.openRoom(state, h.roomId);
      render();
      await loadRoom(h.roomId);
      render();
    });
    b.classList.add("hit");
    return el("li", {}, b);
  });
  const old = pageToken ? [...list.querySelectorAll("li:not(.more)")] : [];
  if (old.length === 0 && items.length === 0) items.push(el("li", { class: "none" }, "No message has all of these words"));
  if (r.nextPageToken) {
    const token = r.nextPageToken;
    const more = button("More results", "Show older search results", () => void runSearch(query, token));
    items.push(el("li", { class: "more" }, more));
  }
  list.replaceChildren(...old, ...items);
}

async function loadRooms(): Promise<void> {
  const r = await api.rooms.listRooms({});
  for (const x of r.rooms) {
    roles.set(x.id, x.myRole);
    if (x.visibility === Visibility.DIRECT) direct.add(x.id);
    if (x.readOnly) readOnlyRooms.add(x.id);
    else readOnlyRooms.delete(x.id);
  }
  st.setRooms(
    state,
    r.rooms.map((x) => ({
      id: x.id,
      name: x.name,
      topic: x.topic,
      member: x.myRole !== 0,
      unread: Number(x.unreadCount),
      mentions: Number(x.mentionCount),
    })),
  );
}

/** Each room's members as last read, and everyone's presence as last heard. */
const members = new Map<string, Member[]>();
const presence = new Map<string, number>();
/** The user's role in each room (from ListRooms). */
const roles = new Map<string, RoomRole>();
const readOnlyRooms = new Set<string>();
/** Direct rooms (named after the other user: shown as @name). */
const direct = new Set<string>();
const label = (r: st.RoomView) => `${direct.has(r.id) ? "@" : "#"}${r.name}`;

/** The members of a room, their names (messages carry only user ids) and presence. */
async function loadNames(roomId: string): Promise<void> {
  const r = await api.rooms.listMembers({ roomId });
  members.set(roomId, r.members);
  for (const m of r.members) {
    if (!m.user) continue;
    names.set(m.user.id, m.user.username);
    presence.set(m.user.id, m.presence);
  }
}

/** Loads the newest page of a room the state has nothing of yet, and its members' names. */
async function loadRoom(roomId: string): Promise<void> {
  const room = state.rooms.get(roomId);
  if (!room?.member) return;
  await loadNames(roomId);
  if (room.lines.length === 0) {
    const h = await api.chat.history({ roomId, limit: 50, beforeSeq: 0n, afterSeq: 0n });
    applyHistory(roomId, h.events, h.hasMore);
  }
}

function applyHistory(roomId: string, events: import("./gen/edgechat/v1/common_pb.js").RoomEvent[], hasMore: boolean): void {
  const lines: st.Line[] = [];
  for (const ev of events) {
    const c = change(ev, state.me);
    if (c.kind === "message" && ev.kind.case === "message") {
      const m = ev.kind.value;
      lines.push({
        seq: Number(ev.seq),
        senderId: c.senderId,
        text: c.text,
        atMs: c.atMs,
        edited: c.editedAtMs !== 0,
        deleted: c.deleted,
        replyTo: Number(m.replyToSeq),
        replies: m.replyCount,
        pinned: m.pinned,
        reactions: m.reactions.map((r) => ({ emoji: r.emoji, count: r.count, mine: r.mine })),
        ...(c.attachments?.length && !c.deleted ? { attachments: c.attachments } : {}),
      });
    }
  }
  st.addHistory(state, roomId, lines);
  if (hasMore) older.add(roomId);
  else older.delete(roomId);
}

async function olderPage(roomId: string): Promise<void> {
  const room = state.rooms.get(roomId);
  const first = room?.lines[0]?.seq;
  if (!room || !first) return;
  const h = await api.chat.history({ roomId, beforeSeq: BigInt(first), afterSeq: 0n, limit: 50 });
  applyHistory(roomId, h.events, h.hasMore);
  render();
}

async function start(): Promise<void> {
  // Nothing of a previous session on this page survives into the next (it may be another
  // user's): state, names, members, notifications and every per-room note.
  state = st.newState(session.userId);
  notes = [];
  links.clear();
  for (const m of [names, members, presence, roles, readUpTo, typing]) m.clear();
  for (const x of [namesLoading, older, readOnlyRooms, direct]) x.clear();
  names.set(session.userId, session.username);
  await loadRooms();
  await Promise.all([...state.rooms.values()].filter((r) => r.member).map((r) => loadRoom(r.id)));
  await loadNotifications();
  const first = [...state.rooms.values()].find((r) => r.member);
  if (first) st.openRoom(state, first.id);
  stream = new Stream(api, state);
  stream.onStatus = (s) => {
    status = s;
    renderStatus();
  };
  stream.onChange = render;
  stream.onMessage = (roomId, userId) => typing.delete(`${roomId} ${userId}`);
  stream.onRoomsChanged = (roomId) =>
    void loadRooms()
      .then(() => (state.rooms.get(roomId)?.member ? loadNames(roomId) : undefined))
      .then(render, () => {});
  stream.onPresence = (userId, status) => {
    presence.set(userId, status);
    renderMembers();
  };
  stream.onNotification = (n) => {
    notes = [...notes.filter((x) => x.id !== n.id), n].slice(-NOTES_KEPT);
    alertLine(noteText(n));
    renderNotes();
    // A direct room or an invite is a room the list does not have yet.
    if (!state.rooms.get(n.roomId)?.member) void refreshRooms();
  };
  stream.onTyping = (roomId, userId) => {
    typing.set(`${roomId} ${userId}`, Date.now() + TYPING_SHOWN_MS);
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  };
  const mine = stream;
  stream.onUnauthenticated = async () => {
    try {
      if (await session.resume()) return true;
    } catch {
      return true; // A network error: keep trying to connect.
    }
    // Already back at the form, or signed in anew, while the refresh was out.
    if (stream !== mine) return false;
    // Revoked (logged out everywhere, disabled): back to the form; the draft is kept.
    showLogin("your session has ended; log in again");
    return false;
  };
  session.onToken = (t) => void stream?.reauthenticate(t);
  session.onLost = (why) => showLogin(why);
  renderShell();
  void stream.run();
}

let composer: HTMLTextAreaElement | undefined;
/** The message being edited in the composer, if any. */
let editing: { roomId: string; seq: number } | null = null;
/** Who is typing where: "room user" -> until when (ms). */
const typing = new Map<string, number>();
/** How long a typing notice shows (the server lets one through every 2 s). */
const TYPING_SHOWN_MS = 3_000;
let lastTypingSent = 0;

function renderShell(): void {
  const statusLine = el("p", { id: "status", role: "status", "aria-live": "polite" });
  const logout = el("button", { type: "button", id: "logout" }, "Log out");
  logout.addEventListener("click", async () => {
    try {
      await session.logout(false);
    } finally {
      showLogin();
    }
  });
  const everywhere = button("Log out everywhere", "Log out on every device and end every open session", async () => {
    if (!confirm("Log out on every device?")) return;
    try {
      await session.logout(true);
    } finally {
      showLogin();
    }
  });
  everywhere.id = "logout-all";
  const markAll = button("Mark all read", "Mark every notification read", async () => {
    const last = notes[notes.length - 1];
    if (!last) return;
    try {
      await api.chat.markNotificationsRead({ upToId: last.id });
      for (const n of notes) n.read = true;
      renderNotes();
    } catch (e) {
      alertLine(describe(e));
    }
  });
  composer = el("textarea", { id: "composer", rows: "2", "aria-label": "Message", placeholder: "Write a message", maxlength: "4096" });
  composer.value = draft;
  const send = el("button", { type: "submit" }, "Send");
  // A real file input (keyboard and screen readers reach it), drawn as its label.
  attachInput = el("input", { id: "attach", type: "file", multiple: "" });
  attachInput.disabled = uploading;
  attachInput.addEventListener("change", () => {
    const chosen = [...(attachInput?.files ?? [])];
    if (attachInput) attachInput.value = ""; // the same file chosen again is a new change
    void sendFiles(chosen);
  });
  const attach = el("label", { for: "attach", class: "attach" }, "Attach");
  const form = el("form", { id: "send" }, composer, attachInput, attach, send);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendMessage();
  });
  composer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      sendMessage();
    } else if (ev.key === "Escape" && editing) {
      stopEditing();
    }
  });
  composer.addEventListener("input", () => {
    if (!state.current || editing || Date.now() - lastTypingSent < 2_000) return;
    lastTypingSent = Date.now();
    void stream?.typing(state.current);
  });
  const newRoom = el("input", { id: "new-room", "aria-label": "New room name", placeholder: "new-room", required: "" });
  const priv = el("input", { id: "new-private", type: "checkbox" });
  const create = el(
    "form",
    { id: "create" },
    newRoom,
    el("button", { type: "submit" }, "Create"),
    el("label", { class: "check" }, priv, " private (invite only)"),
  );
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const visibility = priv.checked ? Visibility.PRIVATE : Visibility.PUBLIC;
      const r = await api.rooms.createRoom({ name: newRoom.value.trim(), topic: "", visibility, readOnly: false });
      priv.checked = false;
      newRoom.value = "";
      await loadRooms();
      st.openRoom(state, r.id);
      stream?.reopen();
      render();
    } catch (e) {
      alertLine(describe(e));
    }
  });
  const searchBox = el("input", { id: "search-q", type: "search", "aria-label": "Search messages", placeholder: "Search messages", maxlength: "256" });
  const search = el("form", { id: "search", role: "search" }, searchBox, el("button", { type: "submit" }, "Search"));
  search.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void runSearch(searchBox.value, "");
  });
  root.replaceChildren(
    el(
      "div",
      { class: "shell" },
      el("header", {}, el("strong", {}, "edgechat"), el("span", { id: "me" }, session.username), statusLine, logout, everywhere),
      el(
        "nav",
        { "aria-label": "Rooms" },
        el("ul", { id: "rooms" }),
        create,
        search,
        el("ol", { id: "search-results", "aria-live": "polite" }),
        el("p", { id: "notice", role: "alert" }),
        el("details", { id: "notifications" }, el("summary", { id: "note-count" }, "Notifications"), el("ol", { id: "note-list" }), markAll),
      ),
      el(
        "main",
        {},
        el("h2", { id: "room-title" }),
        el("p", { id: "topic" }),
        roomTools(),
        el("ol", { id: "messages", "aria-live": "polite" }),
        el("p", { id: "typing", "aria-live": "polite" }),
        el("p", { id: "editing", hidden: "" }, "Editing a message: Enter saves, Escape cancels"),
        el("p", { id: "upload", "aria-live": "polite" }),
        form,
      ),
    ),
  );
  render();
  renderStatus();
}

/**
 * A form naming one user by username, acting on the open room. The API takes user ids and has
 * no user search, so the name must be one seen in the user's rooms.
 */
function userForm(id: string, verb: string, act: (roomId: string, userId: string) => Promise<unknown>): HTMLFormElement {
  const input = el("input", { id: `${id}-name`, "aria-label": `Username to ${verb.toLowerCase()}`, placeholder: "username" });
  const form = el("form", { id }, input, el("button", { type: "submit" }, verb));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const roomId = state.current;
    const name = input.value.trim().toLowerCase();
    if (!roomId || !name) return;
    const userId = [...names.entries()].find(([, n]) => n === name)?.[0];
    if (!userId) {
      alertLine(`no user named ${name} seen in your rooms`);
      return;
    }
    input.value = "";
    void roomAction(() => act(roomId, userId));
  });
  return form;
}

/** The open room's members and actions: a disclosure, so a phone keeps its screen. */
function roomTools(): HTMLElement {
  const inviteForm = userForm("invite", "Invite", (roomId, userId) => api.rooms.inviteMember({ roomId, userId }));
  const topic = el("input", { id: "topic-text", "aria-label": "Room topic", placeholder: "topic" });
  const topicForm = el("form", { id: "set-topic" }, topic, el("button", { type: "submit" }, "Set topic"));
  topicForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const roomId = state.current;
    if (roomId) void roomAction(() => api.rooms.updateRoom({ roomId, topic: topic.value }));
  });
  const readOnly = button("Toggle read-only", "Make the room read-only for members, or writable again", () => {
    const roomId = state.current;
    if (roomId) void roomAction(() => api.rooms.updateRoom({ roomId, readOnly: !readOnlyRooms.has(roomId) }));
  });
  const unbanForm = userForm("unban", "Unban", (roomId, userId) => api.rooms.unbanMember({ roomId, userId }));
  const leave = button("Leave room", "Leave this room", () => {
    const roomId = state.current;
    if (roomId && confirm("Leave this room?")) void roomAction(() => api.rooms.leaveRoom({ roomId }));
  });
  return el(
    "details",
    { id: "room-tools", hidden: "" },
    el("summary", { id: "member-count" }, "Members"),
    el("ul", { id: "member-list" }),
    inviteForm,
    el("div", { id: "mod-tools", hidden: "" }, topicForm, readOnly, unbanForm),
    leave,
  );
}

function alertLine(text: string): void {
  const n = document.getElementById("notice");
  if (n) n.textContent = text;
}

function renderStatus(): void {
  const line = document.getElementById("status");
  if (!line) return;
  if (status.state === "connected") line.textContent = "connected";
  else if (status.state === "connecting") line.textContent = "connecting…";
  else if (status.retryAt === null) line.textContent = "offline: waiting for the network";
  else {
    const secs = Math.max(0, Math.ceil((status.retryAt - Date.now()) / 1000));
    line.textContent = `reconnecting in ${secs} s`;
    setTimeout(renderStatus, 1000);
  }
  line.dataset.state = status.state;
}

function renderTyping(): void {
  const line = document.getElementById("typing");
  if (!line) return;
  const now = Date.now();
  const who: string[] = [];
  for (const [key, until] of typing) {
    if (until < now) typing.delete(key);
    else if (key.startsWith(`${state.current} `)) who.push(names.get(key.slice(key.indexOf(" ") + 1)) ?? "someone");
  }
  line.textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
}

function startEditing(roomId: string, line: st.Line): void {
  if (!composer) return;
  editing = { roomId, seq: line.seq };
  composer.value = line.text;
  document.getElementById("editing")?.removeAttribute("hidden");
  composer.focus();
}

function stopEditing(): void {
  editing = null;
  if (composer) composer.value = "";
  document.getElementById("editing")?.setAttribute("hidden", "");
}

/** Adds or takes back the user's reaction (the `reaction` event updates the line). */
async function toggleReaction(roomId: string, seq: number, emoji: string, mine: boolean): Promise<void> {
  try {
    const req = { roomId, seq: BigInt(seq), emoji };
    await (mine ? api.chat.removeReaction(req) : api.chat.addReaction(req));
  } catch (e) {
    alertLine(describe(e));
  }
}

/** A line's reactions as toggle buttons, and a 👍 to add when the user has none of it. */
function reactionButtons(roomId: string, l: st.Line): HTMLElement {
  const list = l.reactions ?? [];
  const chips = list.map((r) => {
    const label = `${r.mine ? "Take back" : "Add"} reaction ${r.emoji} (${r.count})`;
    const b = button(`${r.emoji} ${r.count}`, label, () => void toggleReaction(roomId, l.seq, r.emoji, r.mine));
    b.className = r.mine ? "reaction mine" : "reaction";
    b.setAttribute("aria-pressed", String(r.mine));
    return b;
  });
  if (!list.some((r) => r.emoji === "👍"))
    chips.push(button("👍", "React with 👍", () => void toggleReaction(roomId, l.seq, "👍", false)));
  return el("span", { class: "reactions" }, ...chips);
}

async function deleteLine(roomId: string, seq: number): Promise<void> {
  if (!confirm("Delete this message for everyone?")) return;
  try {
    await api.chat.deleteMessage({ roomId, seq: BigInt(seq) });
  } catch (e) {
    alertLine(describe(e));
  }
}

function sendMessage(): void {
  if (!composer || !state.current) return;
  const text = composer.value;
  if (!text.trim()) return;
  if (editing) {
    const { roomId, seq } = editing;
    stopEditing();
    // The edit comes back as an event on the stream, like everyone else's.
    api.chat.editMessage({ roomId, seq: BigInt(seq), text }).catch((e) => alertLine(describe(e)));
    return;
  }
  composer.value = "";
  lastTypingSent = 0; // typing again after a send is news (the server's gate still applies)
  const p = st.addPending(state, state.current, text, crypto.randomUUID());
  render();
  void stream?.sendFrame(p);
}

let attachInput: HTMLInputElement | undefined;
/** Files of one message are being uploaded (one batch at a time: the picker is disabled). */
let uploading = false;

/** The line above the composer that tells how an upload goes, or why it failed. */
function uploadLine(text: string, error = false): void {
  const line = document.getElementById("upload");
  if (!line) return;
  line.textContent = text;
  line.classList.toggle("error", error);
  if (error) line.setAttribute("role", "alert");
  else line.removeAttribute("role");
}

/**
 * Uploads the chosen files one after another, saying how far each is, then sends one message
 * with them through the same pending path as typed text: recorded first, re-sent on every new
 * stream with its id and the same attachment ids until acked. Its text is what the composer
 * holds when the last upload is done (it may be empty), unless the user went to another room
 * or is editing a message meanwhile: then the files go alone. A failed upload sends nothing.
 */
async function sendFiles(chosen: File[]): Promise<void> {
  const roomId = state.current;
  if (!roomId || chosen.length === 0 || uploading) return;
  const why = files.checkFiles(chosen);
  if (why) {
    uploadLine(why, true);
    return;
  }
  const mine = state;
  const done: st.AttachmentRef[] = [];
  uploading = true;
  if (attachInput) attachInput.disabled = true;
  let current = chosen[0];
  try {
    for (const f of chosen) {
      current = f;
      uploadLine(`uploading ${f.name} 0%`);
      const a = await upload(api, f, (stored) => uploadLine(`uploading ${f.name} ${files.percent(stored, f.size)}%`));
      done.push(...attachmentRefs([a]));
    }
  } catch (e) {
    uploadLine(`could not upload ${current.name}: ${describe(e)}`, true);
    return;
  } finally {
    uploading = false;
    if (attachInput) attachInput.disabled = false;
  }
  if (state !== mine) return; // Logged out meanwhile: the next session is not this one.
  uploadLine("");
  const caption = state.current === roomId && !editing ? composer : undefined;
  const text = caption?.value ?? "";
  if (caption) {
    caption.value = "";
    lastTypingSent = 0;
  }
  const p = st.addPending(state, roomId, text, crypto.randomUUID(), done);
  render();
  void stream?.sendFrame(p);
}

/** A message's attachments, under its text. */
function attachmentList(list: st.AttachmentRef[]): HTMLElement {
  return el("div", { class: "attachments" }, ...list.map(attachmentView));
}

/**
 * One attachment: an image for the types the server serves inline, else a download link
 * showing name and size. Either gets its link from `links` (asked for when first shown);
 * until then the image has no source and the link no target.
 */
function attachmentView(a: st.AttachmentRef): HTMLElement {
  if (files.shownInline(a.mediaType)) {
    const img = el("img", { class: "attachment", alt: a.name, "data-attachment": a.id });
    // The size known up front keeps the list from jumping when the image arrives.
    if (a.width > 0) img.width = a.width;
    if (a.height > 0) img.height = a.height;
    withLink(img, a.id, (path) => (img.src = path));
    let retried = false;
    img.addEventListener("error", () => {
      // A link the server no longer takes (it restarted: links are signed per run): ask for
      // a new one, once, unless this one is fresh (then the file itself is the trouble).
      if (retried || Date.now() - links.askedAt(a.id) < 10_000) return;
      retried = true;
      links.forget(a.id);
      withLink(img, a.id, (path) => (img.src = path));
    });
    return img;
  }
  const link = el("a", { class: "attachment file", download: a.name, "data-attachment": a.id }, `${a.name} (${files.humanSize(a.size)})`);
  withLink(link, a.id, (path) => (link.href = path));
  let fresh = false;
  link.addEventListener("click", (ev) => {
    // A page left open longer than a link lives: get a fresh one, then download.
    if (fresh || links.cached(a.id) === link.getAttribute("href")) {
      fresh = false;
      return;
    }
    ev.preventDefault();
    withLink(link, a.id, (path) => {
      link.href = path;
      fresh = true;
      link.click();
    });
  });
  return link;
}

/** Applies the attachment's link to its element now if known, else once it is. */
function withLink(e: HTMLElement, id: string, apply: (path: string) => void): void {
  const known = links.cached(id);
  if (known !== undefined) {
    apply(known);
    return;
  }
  links.get(id).then(apply, (err: unknown) => {
    e.classList.add("unavailable");
    e.title = `cannot be shown: ${describe(err)}`;
  });
}

/** Reads the room list again; a newly joined room is followed from a fresh stream. */
async function refreshRooms(): Promise<void> {
  const before = new Set([...state.rooms.values()].filter((r) => r.member).map((r) => r.id));
  await loadRooms();
  const added = [...state.rooms.values()].filter((r) => r.member && !before.has(r.id));
  await Promise.all(added.map((r) => loadRoom(r.id)));
  if (added.length > 0) stream?.reopen();
  render();
}

async function roomAction(action: () => Promise<unknown>): Promise<void> {
  try {
    await action();
    await refreshRooms();
  } catch (e) {
    alertLine(describe(e));
  }
}

async function openDirect(userId: string): Promise<void> {
  try {
    const r = await api.rooms.openDirect({ userId });
    await refreshRooms();
    st.openRoom(state, r.id);
    render();
  } catch (e) {
    alertLine(describe(e));
  }
}

const PRESENCE_TEXT: Record<number, string> = {
  [PresenceStatus.ONLINE]: "online",
  [PresenceStatus.AWAY]: "away",
};

function renderMembers(): void {
  const list = document.getElementById("member-list");
  const count = document.getElementById("member-count");
  if (!list || !count) return;
  const roomId = state.current;
  const ms = roomId ? (members.get(roomId) ?? []) : [];
  count.textContent = `Members (${ms.length})`;
  const mine = roomId ? (roles.get(roomId) ?? RoomRole.UNSPECIFIED) : RoomRole.UNSPECIFIED;
  list.replaceChildren(
    ...ms.map((m) => {
      const u = m.user!;
      const p = PRESENCE_TEXT[presence.get(u.id) ?? m.presence] ?? "offline";
      const li = el(
        "li",
        { "data-user": u.username },
        el("span", { class: `dot ${p}`, "aria-hidden": "true" }),
        el("span", { class: "name" }, u.username),
        el("span", { class: "presence" }, p),
        m.role >= RoomRole.MODERATOR && el("span", { class: "role" }, m.role === RoomRole.OWNER ? "owner" : "moderator"),
      );
      if (u.id !== state.me) {
        li.append(button("Message", `Send ${u.username} a direct message`, () => void openDirect(u.id)));
        if (roomId && mine >= RoomRole.MODERATOR && m.role < mine) {
          const promote = m.role < RoomRole.MODERATOR && mine === RoomRole.OWNER;
          const demote = m.role === RoomRole.MODERATOR;
          if (promote || demote) {
            const role = promote ? RoomRole.MODERATOR : RoomRole.MEMBER;
            li.append(
              button(promote ? "Make moderator" : "Make member", `${promote ? "Make" : "Demote"} ${u.username} ${promote ? "a moderator" : "to member"}`, () =>
                void roomAction(() => api.rooms.setMemberRole({ roomId, userId: u.id, role })).then(() => loadNames(roomId)).then(render),
              ),
            );
          }
          li.append(
            button("Kick", `Remove ${u.username} from the room`, () =>
              void roomAction(() => api.rooms.removeMember({ roomId, userId: u.id, ban: false, reason: "" })),
            ),
            button("Ban", `Ban ${u.username} from the room`, () =>
              void roomAction(() => api.rooms.removeMember({ roomId, userId: u.id, ban: true, reason: "" })),
            ),
          );
        }
      }
      return li;
    }),
  );
  const tools = document.getElementById("room-tools");
  if (tools) tools.hidden = !roomId;
  const modTools = document.getElementById("mod-tools");
  if (modTools) modTools.hidden = mine < RoomRole.MODERATOR;
}

async function join(roomId: string): Promise<void> {
  try {
    await api.rooms.joinRoom({ roomId });
    await loadRooms();
    await loadRoom(roomId);
    st.openRoom(state, roomId);
    stream?.reopen();
    render();
  } catch (e) {
    alertLine(describe(e));
  }
}

function render(): void {
  const list = document.getElementById("rooms");
  const messages = document.getElementById("messages");
  if (!list || !messages) return;
  list.replaceChildren(
    ...[...state.rooms.values()].map((r) => {
      if (!r.member) {
        const b = el("button", { type: "button", class: "join" }, `Join #${r.name}`);
        b.addEventListener("click", () => void join(r.id));
        return el("li", {}, b);
      }
      const b = el(
        "button",
        { type: "button", class: "room", "aria-current": String(r.id === state.current) },
        label(r),
        r.unread > 0 && el("span", { class: "badge", "aria-label": `${r.unread} unread` }, String(r.unread)),
        r.mentions > 0 && el("span", { class: "badge mention", "aria-label": `${r.mentions} mentions` }, `@${r.mentions}`),
      );
      b.addEventListener("click", async () => {
        st.openRoom(state, r.id);
        render();
        await loadRoom(r.id);
        render();
      });
      return el("li", {}, b);
    }),
  );
  const room = state.current ? state.rooms.get(state.current) : undefined;
  document.getElementById("room-title")!.textContent = room ? label(room) : "No room yet: create or join one";
  document.getElementById("topic")!.textContent = room?.topic ?? "";
  if (!room) {
    messages.replaceChildren();
    return;
  }
  const stick = messages.scrollTop + messages.clientHeight >= messages.scrollHeight - 8;
  const items: Node[] = [];
  if (room.lines.length > 0 && older.has(room.id)) {
    const more = el("button", { type: "button", id: "older" }, "Load older messages");
    more.addEventListener("click", () => void olderPage(room.id));
    items.push(el("li", { class: "older" }, more));
  }
  let unknown = false;
  for (const l of room.lines) {
    const known = names.get(l.senderId);
    if (!known) unknown = true;
    const who = known ?? "…";
    const mine = l.senderId === state.me && !l.deleted;
    const actions = mine
      ? el(
          "span",
          { class: "actions" },
          button("Edit", `Edit your message "${l.text.slice(0, 30)}"`, () => startEditing(room.id, l)),
          button("Delete", `Delete your message "${l.text.slice(0, 30)}"`, () => void deleteLine(room.id, l.seq)),
        )
      : null;
    const time = new Date(l.atMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    items.push(
      el(
        "li",
        { class: "line", "data-seq": String(l.seq) },
        el("span", { class: "who" }, who),
        el("time", { datetime: new Date(l.atMs).toISOString() }, time),
        !!l.replyTo && el("span", { class: "mark reply-to" }, `↪ reply to #${l.replyTo}`),
        l.deleted ? el("em", { class: "text" }, "message deleted") : el("span", { class: "text" }, l.text),
        l.edited && !l.deleted && el("span", { class: "mark" }, "(edited)"),
        !!l.pinned && el("span", { class: "mark pinned" }, "📌 pinned"),
        !!l.replies && el("span", { class: "mark replies" }, `${l.replies} ${l.replies === 1 ? "reply" : "replies"}`),
        !l.deleted && reactionButtons(room.id, l),
        actions,
        !l.deleted && !!l.attachments?.length && attachmentList(l.attachments),
      ),
    );
  }
  if (unknown && !namesLoading.has(room.id)) {
    // A member who joined after the names were read: read them again, once.
    namesLoading.add(room.id);
    void loadNames(room.id).then(render, () => {}).finally(() => namesLoading.delete(room.id));
  }
  for (const p of state.pending.filter((x) => x.roomId === room.id)) {
    const li = el(
      "li",
      { class: `line ${p.state}`, "data-cmid": p.cmid },
      el("span", { class: "who" }, session.username),
      el("span", { class: "text" }, p.text),
      p.attachments.length > 0 && el("span", { class: "mark files" }, `📎 ${p.attachments.map((a) => a.name).join(", ")}`),
      el("span", { class: "mark" }, p.state === "pending" ? "sending…" : `not sent (${p.error ?? ""})`),
    );
    if (p.state === "failed") {
      const retry = el("button", { type: "button" }, "Retry");
      retry.addEventListener("click", () => {
        const again = st.retry(state, p.cmid);
        render();
        if (again) void stream?.sendFrame(again);
      });
      li.append(retry);
    }
    items.push(li);
  }
  messages.replaceChildren(...items);
  if (stick) messages.scrollTop = messages.scrollHeight;
  renderTyping();
  renderMembers();
  renderNotes();
  // What is on screen has been read, on every device of the user.
  if (room.lastSeq > (readUpTo.get(room.id) ?? 0)) {
    readUpTo.set(room.id, room.lastSeq);
    const id = room.id;
    void stream?.markRead(id, room.lastSeq).then((sent) => sent || readUpTo.delete(id));
  }
}

function button(text: string, label: string, onClick: () => void): HTMLButtonElement {
  const b = el("button", { type: "button", "aria-label": label }, text);
  b.addEventListener("click", onClick);
  return b;
}

async function boot(): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      if (await session.resume()) return await start();
      return showLogin();
    } catch (e) {
      // Server down at page load: say so and try again with backoff.
      const wait = st.backoffMs(attempt, Math.random());
      root.replaceChildren(el("p", { class: "error", role: "alert" }, `${describe(e)} (retrying in ${Math.ceil(wait / 1000)} s)`));
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

void boot();
