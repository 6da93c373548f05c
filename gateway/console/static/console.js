// Herald's web console: plain JavaScript over the node's own Connect API
// (JSON) and WebSocket, no build step. Views: #/channels, #/channels/ID,
// #/ring, #/nodes. The token, if any, lives in this tab's session storage.
"use strict";

const TOKEN_KEY = "herald.token";
const REFRESH_MS = 2000;

// ---- small helpers ---------------------------------------------------

// el builds an element; strings become text nodes (never HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d) ? "" : d.toLocaleTimeString();
}

function num(v) { return v === undefined || v === null || v === "" ? 0 : Number(v); }

class APIError extends Error {
  constructor(code, message, status) { super(message); this.code = code; this.status = status; }
}

// call makes one Connect unary call with JSON.
async function call(service, method, body) {
  const headers = { "Content-Type": "application/json", "Connect-Protocol-Version": "1" };
  if (token()) headers.Authorization = "Bearer " + token();
  let r;
  try {
    r = await fetch(`/herald.v1.${service}/${method}`, { method: "POST", headers, body: JSON.stringify(body || {}) });
  } catch (e) {
    throw new APIError("unavailable", "cannot reach the node: " + e.message, 0);
  }
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { message: text }; }
  if (!r.ok) throw new APIError(data.code || "unknown", data.message || r.statusText, r.status);
  return data;
}

// ---- token panel -----------------------------------------------------

const tokenPanel = {
  show(reason, isError) {
    document.getElementById("token-panel").hidden = false;
    const p = document.getElementById("token-reason");
    if (reason) p.textContent = reason;
    p.className = isError ? "error" : "";
    document.getElementById("token-input").focus();
  },
  hide() { document.getElementById("token-panel").hidden = true; },
  init() {
    document.getElementById("token-toggle").addEventListener("click", () => {
      const panel = document.getElementById("token-panel");
      if (panel.hidden) this.show(); else this.hide();
    });
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = document.getElementById("token-input").value.trim().replace(/^Bearer\s+/i, "");
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      document.getElementById("token-input").value = "";
      this.hide();
      route();
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("who").textContent = "";
      route();
    });
  },
};

// explain renders an API error into the view, opening the token panel when
// the answer says a token (or a better one) is needed.
function explain(err, what) {
  if (err.code === "unauthenticated") {
    tokenPanel.show(token()
      ? "The node refused this token (expired, or minted with another secret): paste a fresh one."
      : "This node needs a bearer token: paste one (mint it with herald token --user NAME).", true);
  } else if (err.code === "permission_denied" && what) {
    tokenPanel.show(`${what} needs an admin token: paste one (herald token --user NAME --admin).`, true);
  }
  return el("p", { class: "notice error", id: "error", "data-code": err.code },
    `${err.code}: ${err.message}`);
}

function stamp() {
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

// ---- router ----------------------------------------------------------

let current = null; // the view on screen: { stop() }

function route() {
  if (current) current.stop();
  const hash = location.hash.replace(/^#\/?/, "");
  const parts = hash.split("/").map(decodeURIComponent);
  const view = document.getElementById("view");
  view.replaceChildren();
  let name = parts[0] || "channels";
  if (name === "channels" && parts[1]) {
    current = channelView(view, parts[1]);
  } else if (name === "ring") {
    current = refreshing(view, ringView);
  } else if (name === "nodes") {
    current = refreshing(view, nodesView);
  } else {
    name = "channels";
    current = channelsView(view);
  }
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.nav === name);
  }
}

// refreshing redraws into el every ms (REFRESH_MS by default) while it is
// shown; draw returns the new content, dropped if the view has gone.
function refreshing(el, draw, ms = REFRESH_MS) {
  let stopped = false, timer = 0;
  const tick = async () => {
    const content = await draw();
    if (stopped) return;
    el.replaceChildren(...content);
    stamp();
    timer = setTimeout(tick, ms);
  };
  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

// ---- channels --------------------------------------------------------

function channelsView(view) {
  const list = el("div", { id: "channel-list" }, el("p", { class: "muted" }, "Loading channels…"));
  const status = el("p", { class: "error", id: "create-error" });
  const form = el("form", { class: "inline", id: "create-form" },
    el("input", { id: "create-id", placeholder: "channel id (a-z 0-9 . _ -)", required: true, "aria-label": "channel id" }),
    el("input", { id: "create-name", placeholder: "name (optional)", "aria-label": "channel name" }),
    el("label", {}, el("input", { id: "create-private", type: "checkbox" }), " private"),
    el("button", { id: "create-submit", type: "submit" }, "Create channel"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = document.getElementById("create-id").value.trim();
    try {
      await call("ChannelService", "CreateChannel", {
        channelId: id, name: document.getElementById("create-name").value.trim(),
        private: document.getElementById("create-private").checked,
      });
      location.hash = "#/channels/" + encodeURIComponent(id);
    } catch (err) {
      status.replaceChildren(explain(err));
    }
  });
  view.append(el("h1", {}, "Channels"), form, status, list);

  return refreshing(list, async () => {
    try {
      const channels = [];
      let cursor = "";
      for (let page = 0; page < 10; page++) { // up to 2,000 channels on screen
        const r = await call("ChannelService", "ListChannels", { limit: 200, cursor });
        channels.push(...(r.channels || []));
        cursor = r.nextCursor || "";
        if (!cursor) break;
      }
      return [channelsTable(channels, cursor !== "")];
    } catch (err) {
      return [explain(err)];
    }
  }, 5000);
}

function channelsTable(channels, more) {
  if (channels.length === 0) {
    return el("p", { class: "muted", id: "no-channels" }, "No channels you can see yet: create one above.");
  }
  return el("div", {},
    el("table", { id: "channels-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Channel"), el("th", {}, "Name"), el("th", {}, "Topic"),
        el("th", { class: "num" }, "Members"), el("th", { class: "num" }, "Last seq"), el("th", {}, ""))),
      el("tbody", {}, channels.map((c) => el("tr", { "data-channel": c.id },
        el("td", {}, el("a", { href: "#/channels/" + encodeURIComponent(c.id) }, c.id)),
        el("td", {}, c.name || ""), el("td", {}, c.topic || ""),
        el("td", { class: "num" }, num(c.memberCount)), el("td", { class: "num" }, num(c.headSeq)),
        el("td", {}, c.private ? el("span", { class: "badge" }, "private") : "",
          c.archived ? el("span", { class: "badge warn" }, "archived") : ""))))),
    more ? el("p", { class: "muted" }, "More channels exist than are shown.") : null);
}

// ---- one channel, live -----------------------------------------------

function channelView(view, id) {
  const live = el("span", { id: "live", "data-state": "connecting" }, "connecting…");
  const title = el("h1", { id: "channel-title" }, id);
  const head = el("div", { class: "channel-head" }, title, live);
  const info = el("p", { class: "muted", id: "channel-info" });
  const notice = el("div", { id: "channel-notice" });
  const messages = el("ul", { id: "messages" });
  const text = el("input", { id: "post-text", placeholder: `Message #${id}`, autocomplete: "off", "aria-label": "message" });
  const send = el("button", { id: "post-send", type: "submit" }, "Send");
  const postErr = el("p", { class: "error", id: "post-error" });
  const form = el("form", { id: "post-form" }, text, send);
  const typingLine = el("p", { class: "muted", id: "typing" });
  const presenceLine = el("p", { class: "muted", id: "presence" });
  view.append(head, info, presenceLine, notice, messages, typingLine, form, postErr);

  // Typing and presence are best-effort frames, not events (no seq).
  let me = "";
  const typers = new Map(); // user -> timer that forgets them
  const online = new Map(); // user -> online announcements minus away ones
  function showTyping() {
    const users = [...typers.keys()];
    typingLine.textContent = users.length === 0 ? "" :
      `${users.join(", ")} ${users.length === 1 ? "is" : "are"} typing…`;
  }
  function showPresence() {
    const users = [...online.keys()].sort();
    presenceLine.textContent = users.length === 0 ? "" : "seen online: " + users.join(", ");
  }
  let lastTyping = 0;
  text.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastTyping < 3000 || !ws || ws.readyState !== WebSocket.OPEN) return;
    lastTyping = now;
    ws.send(JSON.stringify({ id: "typing", typing: { channelId: id } }));
  });

  const byseq = new Map(); // message seq -> { li, msg }
  let lastSeq = 0;         // the last event seq shown: where a resubscribe resumes
  let ws = null, stopped = false, retry = 0, timer = 0, frameId = 0;
  const pending = new Map(); // frame id -> what it was

  const setLive = (state, label) => { live.dataset.state = state; live.textContent = label; };

  function render(msg) {
    const seq = num(msg.seq);
    const reactions = (msg.reactions || []).map((r) => `:${r.name}: ${r.count}`).join("  ");
    const li = el("li", { "data-seq": seq, class: [msg.threadSeq ? "reply" : "", msg.deleted ? "deleted" : ""].join(" ").trim() || null },
      el("span", { class: "meta" }, `#${seq} ${fmtTime(msg.ts)}`),
      el("span", { class: "user" }, msg.author || ""),
      el("span", { class: "text" }, msg.deleted ? "(deleted)" : msg.text || ""),
      msg.editedAt ? el("span", { class: "meta" }, " (edited)") : null,
      reactions ? el("span", { class: "reactions" }, reactions) : null);
    const old = byseq.get(seq);
    if (old) old.li.replaceWith(li); else messages.append(li);
    byseq.set(seq, { li, msg });
  }

  function system(text) { messages.append(el("li", { class: "system" }, text)); }

  function react(seq, name, user, add) {
    const m = byseq.get(num(seq));
    if (!m) return;
    const rs = (m.msg.reactions || []).map((r) => ({ ...r, users: [...(r.users || [])] }));
    let r = rs.find((x) => x.name === name);
    if (add) {
      if (!r) { r = { name, count: 0, users: [] }; rs.push(r); }
      if (!r.users.includes(user)) { r.users.push(user); r.count = num(r.count) + 1; }
    } else if (r && r.users.includes(user)) {
      r.users = r.users.filter((u) => u !== user); r.count = num(r.count) - 1;
    }
    render({ ...m.msg, reactions: rs.filter((x) => x.count > 0) });
  }

  function apply(ev) {
    const seq = num(ev.seq);
    if (seq <= lastSeq) return; // already shown (never expected: the stream is exactly-once)
    lastSeq = seq;
    if (ev.messagePosted) render(ev.messagePosted.message);
    else if (ev.messageEdited) render(ev.messageEdited.message);
    else if (ev.messageDeleted) {
      const m = byseq.get(num(ev.messageDeleted.messageSeq));
      if (m) render({ ...m.msg, deleted: true, text: "" });
    } else if (ev.reactionAdded) react(ev.reactionAdded.messageSeq, ev.reactionAdded.name, ev.reactionAdded.user, true);
    else if (ev.reactionRemoved) react(ev.reactionRemoved.messageSeq, ev.reactionRemoved.name, ev.reactionRemoved.user, false);
    else if (ev.memberJoined) { system(`${ev.memberJoined.user} joined`); loadInfo().catch(() => {}); }
    else if (ev.memberLeft) { system(`${ev.memberLeft.user} left`); loadInfo().catch(() => {}); }
    else if (ev.channelUpdated) loadInfo();
    messages.scrollTop = messages.scrollHeight;
  }

  async function loadInfo() {
    const r = await call("ChannelService", "GetChannel", { channelId: id });
    const c = r.channel || {};
    title.textContent = c.name && c.name !== id ? `${c.name} (${id})` : id;
    info.replaceChildren(
      `${num(c.memberCount)} member${num(c.memberCount) === 1 ? "" : "s"}`,
      c.topic ? ` · ${c.topic}` : "", c.private ? " · private" : "", c.archived ? " · archived" : "", " ",
      r.isMember ? el("button", { class: "secondary", id: "leave", type: "button", onclick: () => member("LeaveChannel") }, "Leave")
        : el("button", { id: "join", type: "button", onclick: () => member("JoinChannel") }, "Join"));
    return r;
  }

  async function member(method) {
    try { await call("ChannelService", method, { channelId: id }); await loadInfo(); } catch (err) { postErr.replaceChildren(explain(err)); }
  }

  // load shows the newest messages up to the channel's head, then
  // subscribes from that head: every later event arrives once, in order.
  async function load() {
    byseq.clear(); messages.replaceChildren(); lastSeq = 0; notice.replaceChildren();
    try {
      const r = await loadInfo();
      const headSeq = num(r.channel && r.channel.headSeq);
      if (headSeq > 0) {
        const h = await call("MessageService", "GetHistory", { channelId: id, beforeSeq: String(headSeq + 1), limit: 100 });
        if (stopped) return;
        for (const m of (h.messages || []).slice().reverse()) render(m);
        if (h.hasMore) messages.prepend(el("li", { class: "system" }, "Older messages are in the history API."));
      }
      lastSeq = headSeq;
      messages.scrollTop = messages.scrollHeight;
      connect();
    } catch (err) {
      if (stopped) return;
      setLive("closed", "not subscribed");
      notice.replaceChildren(explain(err));
    }
  }

  function sendFrame(kind, body) {
    const fid = String(++frameId);
    pending.set(fid, kind);
    ws.send(JSON.stringify({ id: fid, [kind]: body }));
    return fid;
  }

  function connect() {
    if (stopped) return;
    setLive("connecting", "connecting…");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => {
      if (token()) sendFrame("auth", { token: token() });
      sendFrame("subscribe", { channelId: id, afterSeq: String(lastSeq) });
    };
    sock.onmessage = (m) => {
      let f;
      try { f = JSON.parse(m.data); } catch { return; }
      const what = f.replyTo ? pending.get(f.replyTo) : undefined;
      if (f.replyTo) pending.delete(f.replyTo);
      if (f.hello) {
        me = f.hello.user || "";
        if (me) document.getElementById("who").textContent = me;
      } else if (f.typing) {
        const u = f.typing.user;
        if (f.typing.channelId !== id || !u || u === me) return;
        clearTimeout(typers.get(u));
        typers.set(u, setTimeout(() => { typers.delete(u); showTyping(); }, 5000));
        showTyping();
      } else if (f.presence) {
        const u = f.presence.user;
        if (!u || u === me) return;
        const n = (online.get(u) || 0) + (f.presence.status === "online" ? 1 : -1);
        if (n > 0) online.set(u, n); else online.delete(u);
        showPresence();
      } else if (f.subscribed) {
        retry = 0;
        setLive("live", "live");
      } else if (f.event) {
        const u = f.event.messagePosted?.message?.author;
        if (u && typers.has(u)) { clearTimeout(typers.get(u)); typers.delete(u); showTyping(); }
        apply(f.event);
      } else if (f.reply) {
        send.disabled = false;
        postErr.replaceChildren();
      } else if (f.error) {
        const err = new APIError(f.error.code, f.error.message, 0);
        if (what === "post") { send.disabled = false; postErr.replaceChildren(explain(err)); }
        else { notice.replaceChildren(explain(err)); if (what === "subscribe" || what === "auth") { stopped = true; setLive("closed", "not subscribed"); sock.close(); } }
      } else if (f.resyncRequired) {
        const r = f.resyncRequired;
        if (r.reason === "SLOW_CONSUMER") {
          lastSeq = num(r.lastSentSeq); // resume where the node stopped
        } else {
          notice.replaceChildren(el("p", { class: "notice" }, `Resynced (${r.reason}): reloaded from the history.`));
          sock.onclose = null; sock.close(); load();
        }
      } else if (f.reconnect) {
        // The node is shutting down: come back after the delay it asks for.
        sock.onclose = null; sock.close();
        setLive("connecting", "node restarting: reconnecting…");
        timer = setTimeout(connect, num(f.reconnect.delayMs));
      }
    };
    sock.onclose = () => {
      if (stopped || ws !== sock) return;
      send.disabled = false;
      const delay = Math.min(5000, 250 * 2 ** retry++) * (0.5 + Math.random() / 2);
      setLive("connecting", "disconnected: reconnecting…");
      timer = setTimeout(connect, delay);
    };
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = text.value;
    if (!v.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
    send.disabled = true;
    sendFrame("post", { channelId: id, text: v, clientMsgId: "console-" + crypto.randomUUID() });
    text.value = "";
  });

  load();
  return {
    stop() {
      stopped = true; clearTimeout(timer);
      if (ws) { ws.onclose = null; ws.close(); }
    },
  };
}

// ---- ring and nodes (admin) ------------------------------------------

const HEALTH = { HEALTH_OK: ["ok", "ok"], HEALTH_DEGRADED: ["degraded", "warn"], HEALTH_NO_QUORUM: ["no quorum", "bad"] };

function health(h) {
  const [label, cls] = HEALTH[h] || ["unknown", ""];
  return el("span", { class: "badge " + cls }, label);
}

async function ringView() {
  try {
    const r = await call("AdminService", "GetRing", {});
    const parts = r.partitions || [];
    const counts = {};
    for (const p of parts) counts[p.health] = (counts[p.health] || 0) + 1;
    return [
      el("h1", {}, "Ring", el("small", {}, `${num(r.partitionCount)} partitions · placement epoch ${num(r.placementEpoch)}`)),
      el("p", { id: "ring-summary" }, Object.keys(HEALTH).map((h, i) =>
        [i ? " · " : "", `${counts[h] || 0} `, health(h)])),
      el("table", { id: "ring-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Partition"), el("th", {}, "Tokens"), el("th", {}, "Health"),
          el("th", {}, "Leader"), el("th", { class: "num" }, "Commit"), el("th", {}, "Replicas (state, applied)"))),
        el("tbody", {}, parts.map((p) => el("tr", { "data-partition": num(p.id), "data-leader": p.leader || "" },
          el("td", { class: "num" }, num(p.id)),
          el("td", { class: "mono" }, tokenRange(p)),
          el("td", {}, health(p.health)),
          el("td", {}, p.leader || el("span", { class: "error" }, "none")),
          el("td", { class: "num" }, num(p.commitIndex)),
          el("td", {}, (p.replicas || []).map((x) => el("span", {
            class: "replica" + (x.nodeId === p.leader ? " leader" : ""), "data-node": x.nodeId,
            title: `${x.voter ? "voter" : "non-voter"}, commit ${num(x.commitIndex)}`,
          }, `${x.nodeId} ${(x.state || "").toLowerCase()} ${num(x.appliedIndex)}`)))))))];
  } catch (err) {
    return [el("h1", {}, "Ring"), explain(err, "The ring")];
  }
}

function tokenRange(p) {
  const hex = (v) => BigInt(v || 0).toString(16).padStart(16, "0");
  return `${hex(p.firstToken)}–${hex(p.lastToken)}`;
}

async function nodesView() {
  try {
    const r = await call("AdminService", "ListNodes", {});
    const nodes = r.nodes || [];
    return [
      el("h1", {}, "Nodes", el("small", {}, `${nodes.length} nodes · metadata leader ${r.metaLeader || "none"}`)),
      el("table", { id: "nodes-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "HTTP"), el("th", {}, "Raft"), el("th", {}, "Roles"),
          el("th", {}, "Region"), el("th", {}, "State"), el("th", {}, "Reachable"), el("th", {}, "Metadata"),
          el("th", { class: "num" }, "Replicas"), el("th", { class: "num" }, "Leaders"))),
        el("tbody", {}, nodes.map((n) => el("tr", { "data-node": n.id, "data-reachable": String(!!n.reachable) },
          el("td", {}, n.id),
          el("td", { class: "mono" }, n.httpAddr ? el("a", { href: `${location.protocol}//${n.httpAddr}/#/nodes` }, n.httpAddr) : ""),
          el("td", { class: "mono" }, n.raftAddr || ""),
          el("td", {}, (n.roles || []).join(", ")),
          el("td", {}, n.region || ""),
          el("td", {}, el("span", { class: "badge " + (n.state === "STATE_ACTIVE" ? "ok" : "warn") },
            (n.state || "STATE_UNSPECIFIED").replace("STATE_", "").toLowerCase())),
          el("td", {}, n.reachable ? el("span", { class: "badge ok" }, "yes") : el("span", { class: "badge bad" }, "no")),
          el("td", {}, n.id === r.metaLeader ? "leader" : n.metaVoter ? "voter" : ""),
          el("td", { class: "num" }, num(n.replicas)),
          el("td", { class: "num" }, num(n.leaders))))))];
  } catch (err) {
    return [el("h1", {}, "Nodes"), explain(err, "The node list")];
  }
}

// ---- start -----------------------------------------------------------

document.getElementById("node").textContent = "served by " + location.host;
tokenPanel.init();
window.addEventListener("hashchange", route);
route();
