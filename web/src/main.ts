// The page: a login form, then rooms on the left (or on top on a phone), the open room's
// messages and a composer. Everything a server or user sent is put in as text
// (textContent), never as HTML. No framework: the whole view is a few lists redrawn from
// state.ts on each change, which at chat sizes costs less than a framework's runtime.

import { Code, ConnectError } from "@connectrpc/connect";
import { Visibility } from "./gen/edgechat/v1/common_pb.js";
import { Api, Session, Stream, change, type Status } from "./connection.js";
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

async function loadRooms(): Promise<void> {
  const r = await api.rooms.listRooms({});
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

/** The usernames of a room's members (messages carry only user ids). */
async function loadNames(roomId: string): Promise<void> {
  const members = await api.rooms.listMembers({ roomId });
  for (const m of members.members) if (m.user) names.set(m.user.id, m.user.username);
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
    if (c.kind === "message")
      lines.push({ seq: Number(ev.seq), senderId: c.senderId, text: c.text, atMs: c.atMs, edited: c.editedAtMs !== 0, deleted: c.deleted });
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
  state = st.newState(session.userId);
  names.set(session.userId, session.username);
  await loadRooms();
  await Promise.all([...state.rooms.values()].filter((r) => r.member).map((r) => loadRoom(r.id)));
  const first = [...state.rooms.values()].find((r) => r.member);
  if (first) st.openRoom(state, first.id);
  stream = new Stream(api, state);
  stream.onStatus = (s) => {
    status = s;
    renderStatus();
  };
  stream.onChange = render;
  stream.onRoomsChanged = (roomId) =>
    void loadRooms()
      .then(() => (state.rooms.get(roomId)?.member ? loadNames(roomId) : undefined))
      .then(render, () => {});
  stream.onTyping = (roomId, userId) => {
    typing.set(`${roomId} ${userId}`, Date.now() + TYPING_SHOWN_MS);
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  };
  stream.onUnauthenticated = async () => {
    try {
      return await session.resume();
    } catch {
      return true; // A network error: keep trying to connect.
    }
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
      await session.logout();
    } finally {
      showLogin();
    }
  });
  composer = el("textarea", { id: "composer", rows: "2", "aria-label": "Message", placeholder: "Write a message", maxlength: "4096" });
  composer.value = draft;
  const send = el("button", { type: "submit" }, "Send");
  const form = el("form", { id: "send" }, composer, send);
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
  const create = el("form", { id: "create" }, newRoom, el("button", { type: "submit" }, "Create"));
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api.rooms.createRoom({ name: newRoom.value.trim(), topic: "", visibility: Visibility.PUBLIC, readOnly: false });
      newRoom.value = "";
      await loadRooms();
      st.openRoom(state, r.id);
      stream?.reopen();
      render();
    } catch (e) {
      alertLine(describe(e));
    }
  });
  root.replaceChildren(
    el(
      "div",
      { class: "shell" },
      el("header", {}, el("strong", {}, "edgechat"), el("span", { id: "me" }, session.username), statusLine, logout),
      el("nav", { "aria-label": "Rooms" }, el("ul", { id: "rooms" }), create, el("p", { id: "notice", role: "alert" })),
      el(
        "main",
        {},
        el("h2", { id: "room-title" }),
        el("p", { id: "topic" }),
        el("ol", { id: "messages", "aria-live": "polite" }),
        el("p", { id: "typing", "aria-live": "polite" }),
        el("p", { id: "editing", hidden: "" }, "Editing a message: Enter saves, Escape cancels"),
        form,
      ),
    ),
  );
  render();
  renderStatus();
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
  const p = st.addPending(state, state.current, text, crypto.randomUUID());
  render();
  void stream?.sendFrame(p);
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
        `#${r.name}`,
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
  document.getElementById("room-title")!.textContent = room ? `#${room.name}` : "No room yet: create or join one";
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
        l.deleted ? el("em", { class: "text" }, "message deleted") : el("span", { class: "text" }, l.text),
        l.edited && !l.deleted && el("span", { class: "mark" }, "(edited)"),
        actions,
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
