// The browser suite: a real `edgechat serve` (the debug binary cargo built, or $EDGECHAT_BIN)
// on a temporary data directory and an ephemeral port, driven through Debian's Chromium
// (/usr/bin/chromium or $CHROMIUM) with playwright-core. Two users chat from two browser
// contexts, one on a phone-sized window and one on a desktop-sized one; each goes offline and
// comes back. Screenshots go to ../target/web-screenshots/. Exit status 0 only if every
// check passed.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const bin = process.env.EDGECHAT_BIN ?? resolve("../target/debug/edgechat");
const shots = resolve("../target/web-screenshots");
const dir = mkdtempSync(join(tmpdir(), "edgechat-web-"));
mkdirSync(shots, { recursive: true });

/** Starts `edgechat serve` on `listen`; resolves with the process and its port. */
function serve(listen) {
  // Access tokens of 30 s (the shortest allowed): every page refreshes its session and
  // re-authenticates its stream several times during the suite.
  const env = { ...process.env, EDGECHAT_AUTH_ACCESS_TTL_SECS: "30" };
  const child = spawn(bin, ["serve", "--listen", listen, "--data-dir", dir], { stdio: ["ignore", "pipe", "inherit"], env });
  return new Promise((ok, fail) => {
    child.on("error", fail);
    child.on("exit", (c) => fail(new Error(`edgechat serve exited with ${c}`)));
    createInterface({ input: child.stdout }).once("line", (l) => ok([child, Number(l.trim().split(":").pop())]));
  });
}
let [server, port] = await serve("127.0.0.1:0");
const base = `https://localhost:${port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

let failed = false;
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failed = true;
};
const WAIT = 20_000;

async function register(ctx, name) {
  const page = await ctx.newPage();
  page.on("pageerror", (e) => check(false, `${name}: page error ${e.message}`));
  await page.goto(base);
  await page.fill("#username", name);
  await page.fill("#password", "correct horse battery");
  await page.click("#register");
  await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
  return page;
}

/** The message texts the page shows, in order (acked lines only). */
const texts = (page) => page.$$eval("#messages li.line:not(.pending):not(.failed) .text", (els) => els.map((e) => e.textContent));

async function waitForTexts(page, wanted, what) {
  try {
    await page.waitForFunction(
      (w) => {
        const got = [...document.querySelectorAll("#messages li.line:not(.pending):not(.failed) .text")].map((e) => e.textContent);
        return w.every((t) => got.includes(t));
      },
      wanted,
      { timeout: WAIT },
    );
  } catch {
    check(false, `${what}: waited for ${JSON.stringify(wanted)}, shown ${JSON.stringify(await texts(page))}`);
    return;
  }
  const got = await texts(page);
  const once = wanted.every((t) => got.filter((g) => g === t).length === 1);
  const order = wanted.map((t) => got.indexOf(t));
  check(once && order.every((v, i) => i === 0 || v > order[i - 1]), `${what}: each once, in order`);
}

async function send(page, text) {
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
}

try {
  const desktop = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const phone = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 375, height: 740 }, hasTouch: true });
  const alice = await register(desktop, "alice");
  check(true, "alice registered and her stream is connected");
  await alice.fill("#new-room", "general");
  await alice.click("#create button");
  await alice.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#general", null, { timeout: WAIT });
  const bob = await register(phone, "bob");
  await bob.click("text=Join #general");
  await bob.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#general", null, { timeout: WAIT });
  check(true, "bob joined #general from a phone-sized window");

  await send(alice, "hello bob");
  await waitForTexts(bob, ["hello bob"], "a live message reaches the other browser");
  await send(bob, "hi alice");
  await waitForTexts(alice, ["hi alice"], "and back");
  try {
    await alice.waitForFunction(
      () => [...document.querySelectorAll("#messages li.line")].some((li) => li.querySelector(".who")?.textContent === "bob" && li.querySelector(".text")?.textContent === "hi alice"),
      null,
      { timeout: WAIT },
    );
    check(true, "a member who joined later is shown by name");
  } catch {
    check(false, "a member who joined later is shown by name");
  }

  // Typing shows on the other side (the server lets one notice per user and room through
  // every 2 s, and bob's send above typed too).
  await bob.waitForTimeout(2_100);
  await bob.type("#composer", "typ");
  try {
    await alice.waitForFunction(() => document.querySelector("#typing")?.textContent === "bob is typing…", null, { timeout: WAIT });
    check(true, "typing shows on the other side");
  } catch {
    check(false, `typing shows on the other side (shown: ${await alice.textContent("#typing")})`);
  }
  await bob.fill("#composer", "");

  // Alice edits and deletes her own messages; Bob sees both.
  await alice.click('#messages li.line:has(.text:text-is("hello bob")) button:text-is("Edit")');
  await alice.fill("#composer", "hello bob (edited)");
  await alice.press("#composer", "Enter");
  await waitForTexts(bob, ["hello bob (edited)"], "an edit shows on the other side");
  check((await bob.textContent('#messages li.line:has(.text:text-is("hello bob (edited)")) .mark')) === "(edited)", "marked edited");
  // Bob reacts to it: both see the count, pressed only on bob's side (it is his).
  const edited = '#messages li.line:has(.text:text-is("hello bob (edited)"))';
  await bob.click(`${edited} button[aria-label="React with 👍"]`);
  try {
    await alice.waitForSelector(`${edited} .reactions button[aria-pressed="false"]:text-is("👍 1")`, { timeout: WAIT });
    await bob.waitForSelector(`${edited} .reactions button[aria-pressed="true"]:text-is("👍 1")`, { timeout: WAIT });
    check(true, "a reaction shows on both sides, pressed for its author only");
  } catch {
    check(false, "a reaction shows on both sides, pressed for its author only");
  }
  await send(alice, "oops");
  await waitForTexts(bob, ["oops"], "a message to delete");
  alice.once("dialog", (d) => void d.accept());
  await alice.click('#messages li.line:has(.text:text-is("oops")) button:text-is("Delete")');
  try {
    await bob.waitForFunction(() => [...document.querySelectorAll("#messages em.text")].some((e) => e.textContent === "message deleted"), null, { timeout: WAIT });
    check(!(await texts(bob)).includes("oops"), "a delete leaves a tombstone on the other side");
  } catch {
    check(false, "a delete leaves a tombstone on the other side");
  }

  // The member list shows who is online; the owner sets the topic; a direct message.
  await alice.click("#member-count");
  try {
    await alice.waitForFunction(() => document.querySelector('#member-list li[data-user="bob"] .presence')?.textContent === "online", null, { timeout: WAIT });
    check(true, "the member list shows bob online");
  } catch {
    check(false, `the member list shows bob online (${await alice.textContent("#member-list")})`);
  }
  await alice.fill("#topic-text", "Plans for <b>Friday</b>");
  await alice.click('#set-topic button');
  try {
    await bob.waitForFunction(() => document.querySelector("#topic")?.textContent === "Plans for <b>Friday</b>", null, { timeout: WAIT });
    check((await bob.$$("#topic b")).length === 0, "a topic set by the owner shows on the other side, as text");
  } catch {
    check(false, "a topic set by the owner shows on the other side");
  }
  await alice.click('#member-list li[data-user="bob"] button:text-is("Message")');
  await alice.waitForFunction(() => document.querySelector("#room-title")?.textContent === "@bob", null, { timeout: WAIT });
  await send(alice, "psst, just you");
  await waitForTexts(alice, ["psst, just you"], "a direct message is sent");
  try {
    await bob.waitForSelector('#rooms button:has-text("@alice")', { timeout: WAIT });
    await bob.click('#rooms button:has-text("@alice")');
    await waitForTexts(bob, ["psst, just you"], "the direct room appears for bob with the message");
  } catch {
    check(false, "the direct room appears for bob with the message");
  }
  await bob.click("#note-count");
  try {
    await bob.waitForSelector('#note-list .note:has-text("alice sent you a direct message: psst, just you")', { timeout: WAIT });
    check(true, "the notification is listed");
  } catch {
    check(false, `the notification is listed (${await bob.textContent("#note-list")})`);
  }
  await bob.click('#rooms button:has-text("#general")');
  await alice.click('#rooms button:has-text("#general")');
  await bob.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#general", null, { timeout: WAIT });

  // Bob goes offline while Alice sends; back online he shows every message once, in order.
  await phone.setOffline(true);
  await bob.waitForSelector('#status[data-state="offline"]', { timeout: WAIT });
  check(true, "bob's page says it is reconnecting");
  for (const t of ["while you were away 1", "while you were away 2", "while you were away 3"]) await send(alice, t);
  await waitForTexts(alice, ["while you were away 3"], "alice's sends are acked");
  await phone.setOffline(false);
  await bob.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
  await waitForTexts(bob, ["hello bob (edited)", "hi alice", "while you were away 1", "while you were away 2", "while you were away 3"], "bob resumes without gaps or repeats");

  // Search: newest first across bob's rooms, a hit opens its room; a query with no word says so.
  await bob.click('#rooms button:has-text("@alice")');
  await bob.fill("#search-q", "AWAY while");
  await bob.press("#search-q", "Enter");
  try {
    await bob.waitForFunction(() => document.querySelectorAll("#search-results .hit").length === 3, null, { timeout: WAIT });
    const hits = await bob.$$eval("#search-results .hit", (els) => els.map((e) => e.textContent));
    check(
      JSON.stringify(hits) === JSON.stringify([3, 2, 1].map((n) => `#general · alice: while you were away ${n}`)),
      `search lists the matches newest first (${JSON.stringify(hits)})`,
    );
    await bob.click("#search-results .hit >> nth=0");
    await bob.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#general", null, { timeout: WAIT });
    check(true, "a search hit opens its room");
  } catch (e) {
    check(false, `search: ${e.message} (${await bob.textContent("#search-results")})`);
  }
  await bob.fill("#search-q", "*** --");
  await bob.press("#search-q", "Enter");
  try {
    await bob.waitForFunction(() => /no word/.test(document.querySelector("#notice")?.textContent ?? ""), null, { timeout: WAIT });
    check(true, "a query with no word says why");
  } catch {
    check(false, `a query with no word says why (notice: ${await bob.textContent("#notice")})`);
  }
  await bob.fill("#search-q", "");

  // Alice types while offline: pending, then delivered exactly once when she is back.
  await desktop.setOffline(true);
  await alice.waitForSelector('#status[data-state="offline"]', { timeout: WAIT });
  await send(alice, "typed while offline");
  check((await alice.$$("#messages li.pending")).length === 1, "the offline message shows as pending");
  await desktop.setOffline(false);
  await waitForTexts(bob, ["typed while offline"], "the offline message is delivered once on reconnect");
  await alice.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 0, null, { timeout: WAIT });
  await waitForTexts(alice, ["typed while offline"], "and acked on the sender's side");

  // The server restarts under open pages: both reconnect by themselves and chat on.
  await new Promise((r) => {
    server.once("exit", r);
    server.kill("SIGTERM");
  });
  await Promise.all([alice, bob].map((p) => p.waitForSelector('#status[data-state="offline"]', { timeout: WAIT })));
  // While it is down the pages back off (0.5 s doubling, with jitter): after some 6 s of
  // refusals the next attempt is seconds away, not one second.
  // (The status counts down, so take the longest wait it shows over the next 4 s.)
  await alice.waitForTimeout(6_000);
  let retryIn = 0;
  for (let i = 0; i < 40; i++) {
    retryIn = Math.max(retryIn, Number((await alice.textContent("#status")).match(/in (\d+) s/)?.[1] ?? 0));
    await alice.waitForTimeout(100);
  }
  check(retryIn >= 2, `a page backs off while the server is down (longest wait shown: ${retryIn} s)`);
  [server] = await serve(`127.0.0.1:${port}`);
  await Promise.all([alice, bob].map((p) => p.waitForSelector('#status[data-state="connected"]', { timeout: WAIT })));
  check(true, "both pages reconnect after a server restart");
  await send(alice, "after the restart");
  await waitForTexts(bob, ["after the restart"], "and the chat goes on");

  // Markup in a message is text, never markup.
  const evil = '<img src=x onerror="window.__owned=1"><script>window.__owned=2</script>';
  await send(alice, evil);
  await waitForTexts(bob, [evil], "markup arrives as the text that was typed");
  check((await bob.evaluate(() => window.__owned)) === undefined, "and never runs");
  check((await bob.$$("#messages img, #messages script")).length === 0, "and makes no elements");

  await bob.screenshot({ path: join(shots, "phone.png") });
  await alice.screenshot({ path: join(shots, "desktop.png") });
  console.log(`screenshots in ${shots}`);

  // Attachments. Alice picks a picture and a text file, with a caption: bob's page shows the
  // picture loaded through its download link (same origin, so the CSP's img-src 'self'
  // allows it) and the text file as a download link with its size, which the server serves
  // as a download. Bob sends a file of two chunks with no text; a delete takes the files away.
  const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==", "base64");
  await alice.fill("#composer", "see attached");
  await alice.setInputFiles("#attach", [
    { name: "dot.png", mimeType: "image/png", buffer: png },
    { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("twelve bytes") },
  ]);
  const withFiles = '#messages li.line:has(.text:text-is("see attached"))';
  for (const [page, who] of [[bob, "the other side"], [alice, "the sender's side"]]) {
    try {
      await page.waitForFunction(
        () => {
          const line = [...document.querySelectorAll("#messages li.line")].find((li) => li.querySelector(".text")?.textContent === "see attached");
          const img = line?.querySelector("img.attachment");
          return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0 && !!line.querySelector("a.attachment[href]");
        },
        null,
        { timeout: WAIT },
      );
      const img = await page.$eval(`${withFiles} img.attachment`, (i) => ({ alt: i.alt, w: i.getAttribute("width"), h: i.getAttribute("height"), src: i.getAttribute("src") }));
      check(
        img.alt === "dot.png" && img.w === "1" && img.h === "1" && img.src.startsWith("/attachments/"),
        `a picture shows on ${who}, loaded through its download link (${JSON.stringify(img)})`,
      );
    } catch (e) {
      check(false, `a picture shows on ${who}: ${e.message} (${await page.textContent("#upload")})`);
    }
  }
  try {
    const link = await bob.$eval(`${withFiles} a.attachment`, (a) => ({ text: a.textContent, download: a.getAttribute("download"), href: a.getAttribute("href") }));
    check(
      link.text === "notes.txt (12 B)" && link.download === "notes.txt" && link.href.startsWith("/attachments/"),
      `a file that is not a picture is a download link with its size (${JSON.stringify(link)})`,
    );
    check((await bob.$$(`${withFiles} img`)).length === 1, "and is not shown inline");
    const got = await bob.evaluate(async (href) => {
      const r = await fetch(href);
      return { status: r.status, disposition: r.headers.get("content-disposition") ?? "", body: await r.text() };
    }, link.href);
    check(got.status === 200 && got.disposition.startsWith("attachment") && got.body === "twelve bytes", `the link downloads the file (${JSON.stringify(got)})`);
  } catch (e) {
    check(false, `a file that is not a picture is a download link: ${e.message}`);
  }
  check((await alice.inputValue("#composer")) === "" && (await alice.textContent("#upload")) === "", "the caption went with the files");

  // The answer to bob's first chunk is lost on the way (the chunk is stored): his page asks
  // where the upload stands and sends only the rest.
  let chunks = 0;
  let asked = 0;
  const chunkRoute = "**/edgechat.v1.AttachmentService/UploadChunk";
  await bob.route(chunkRoute, async (route) => {
    if (++chunks > 1) return route.continue();
    await route.fetch();
    await route.abort("connectionreset");
  });
  const countAsks = (req) => void (req.url().endsWith("/edgechat.v1.AttachmentService/GetUpload") && asked++);
  bob.on("request", countAsks);
  await bob.setInputFiles("#attach", { name: "big.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(300 * 1024, 7) });
  try {
    await alice.waitForSelector('#messages li.line a.attachment[download="big.bin"][href]', { timeout: WAIT });
    const line = await alice.$eval('#messages li.line:has(a.attachment[download="big.bin"])', (li) => ({
      text: li.querySelector(".text")?.textContent,
      link: li.querySelector("a.attachment")?.textContent,
      who: li.querySelector(".who")?.textContent,
    }));
    check(JSON.stringify(line) === JSON.stringify({ text: "", link: "big.bin (300 KB)", who: "bob" }), `a file of two chunks goes alone, with no text (${JSON.stringify(line)})`);
  } catch (e) {
    check(false, `a file of two chunks goes alone: ${e.message} (bob: ${await bob.textContent("#upload")})`);
  }
  await bob.unroute(chunkRoute);
  bob.off("request", countAsks);
  check(chunks === 2 && asked === 1, `an upload whose answer was lost resumes from where it stands (${chunks} chunks sent, ${asked} GetUpload)`);
  await bob.screenshot({ path: join(shots, "phone-attachments.png") });
  await alice.screenshot({ path: join(shots, "desktop-attachments.png") });

  alice.once("dialog", (d) => void d.accept());
  await alice.click(`${withFiles} button:text-is("Delete")`);
  try {
    await bob.waitForFunction(() => document.querySelectorAll('#messages img, #messages a.attachment:not([download="big.bin"])').length === 0, null, { timeout: WAIT });
    check(true, "a deleted message shows no attachments");
  } catch {
    check(false, "a deleted message shows no attachments");
  }

  // A 4 KiB message of one long word wraps on the phone.
  const long = "x".repeat(4096);
  await send(alice, long);
  await waitForTexts(bob, [long], "a 4 KiB message arrives whole");
  check(await bob.$eval("#messages", (m) => m.scrollWidth <= m.clientWidth + 1), "and wraps at 375 pixels");
  check((await alice.$$("#older")).length === 0, "no 'older messages' button when History has shown everything");
  // A private room: invisible to bob until alice invites him by name; then he joins.
  await alice.fill("#new-room", "secret");
  await alice.check("#new-private");
  await alice.click("#create button");
  await alice.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#secret", null, { timeout: WAIT });
  check((await bob.$$('#rooms button:has-text("secret")')).length === 0, "a private room is not listed to others");
  await alice.$eval("#room-tools", (d) => (d.open = true));
  await alice.fill("#invite-name", "bob");
  await alice.click("#invite button");
  try {
    await bob.waitForSelector('#rooms button:text-is("Join #secret")', { timeout: WAIT });
    await bob.click('#rooms button:text-is("Join #secret")');
    await bob.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#secret", null, { timeout: WAIT });
    await send(alice, "welcome to the secret room");
    await waitForTexts(bob, ["welcome to the secret room"], "an invited user joins the private room and reads it");
  } catch (e) {
    check(false, `an invite to a private room: ${e.message}`);
  }
  await alice.click('#rooms button:has-text("#general")');
  await bob.click('#rooms button:has-text("#general")');
  await bob.waitForFunction(() => document.querySelector("#room-title")?.textContent === "#general", null, { timeout: WAIT });

  // A moderator's kick: the room closes on the kicked user's page, and can be joined again
  // (it is public).
  await alice.click('#member-list li[data-user="bob"] button:text-is("Kick")');
  try {
    await bob.waitForSelector('#rooms button:text-is("Join #general")', { timeout: WAIT });
    check((await bob.textContent("#room-title")) !== "#general", "a kicked user's page closes the room");
  } catch {
    check(false, `a kicked user's page closes the room (title ${await bob.textContent("#room-title")})`);
  }
  // Typing notices go away by themselves (3 s after the last).
  await alice.waitForTimeout(3_500);
  check((await alice.textContent("#typing")) === "", `typing notices expire (shown: ${await alice.textContent("#typing")})`);


  // "Stay signed in" survives into a new tab; without it a new tab asks again.
  const carolCtx = await browser.newContext({ ignoreHTTPSErrors: true });
  const carol = await carolCtx.newPage();
  await carol.goto(base);
  await carol.fill("#username", "carol");
  await carol.fill("#password", "correct horse battery");
  await carol.check("#keep");
  await carol.click("#register");
  await carol.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
  const carol2 = await carolCtx.newPage();
  await carol2.goto(base);
  await carol2.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
  check(true, "stay signed in: a new tab is signed in");
  // The server unreachable when a page loads: the page says so and retries with backoff,
  // then signs in by itself once it answers.
  const carol3 = await carolCtx.newPage();
  await carol3.route("**/edgechat.v1.AuthService/Refresh", (r) => r.abort("connectionrefused"));
  await carol3.goto(base);
  try {
    await carol3.waitForSelector('.error:has-text("retrying in")', { timeout: WAIT });
    check(true, "an unreachable server at page load is said, with a retry");
    await carol3.unroute("**/edgechat.v1.AuthService/Refresh");
    await carol3.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    check(true, "and the page signs in once it answers");
  } catch (e) {
    check(false, `an unreachable server at page load: ${e.message}`);
  }
  // The three tabs share one stored refresh token, rotated by each refresh (a reused one
  // revokes the whole session): after every tab's refresh timer has fired (3/4 of 30 s),
  // all three are still signed in.
  await carol.waitForTimeout(25_000);
  const signedIn = await Promise.all([carol, carol2, carol3].map((t) => t.$('#status[data-state="connected"]')));
  check(signedIn.every(Boolean), "tabs sharing a stored session refresh it without revoking each other");
  const alice2 = await desktop.newPage();
  await alice2.goto(base);
  await alice2.waitForSelector("#username", { timeout: WAIT });
  check(true, "without it a new tab asks to log in");

  // Logged out everywhere from the second tab: the first goes back to the form, and the
  // draft it had is still there after logging in again.
  await alice2.fill("#username", "alice");
  await alice2.fill("#password", "correct horse battery");
  await alice2.click('button[type="submit"]');
  await alice2.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
  await alice.fill("#composer", "a draft worth keeping");
  alice2.once("dialog", (d) => void d.accept());
  await alice2.click("#logout-all");
  try {
    await alice.waitForSelector("#username", { timeout: WAIT });
    check((await alice.textContent(".error")).includes("log in again"), "a revoked session goes back to the login form, saying why");
    await alice.fill("#username", "alice");
    await alice.fill("#password", "correct horse battery");
    await alice.click('button[type="submit"]');
    await alice.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    check((await alice.inputValue("#composer")) === "a draft worth keeping", "with the draft kept");
  } catch (e) {
    check(false, `a revoked session goes back to the login form: ${e.message}`);
  }
} catch (e) {
  check(false, `the suite stopped: ${e.stack ?? e}`);
} finally {
  await browser.close();
  server.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
