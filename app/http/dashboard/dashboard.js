// The Meridian dashboard: this node's view of the cluster, its documents, and one document
// live. Plain browser JavaScript served by the node (no build step, no CDN).
//
// Data comes from the public API only: GET /v1/cluster and /v1/cluster/overview (polled),
// GET /v1/docs (polled),
// WS /v1/docs/{id}/events (the open document's JSON, live), GET /v1/docs/{id}/replicas
// (polled) and PATCH /v1/docs/{id} (edits). With an access token the requests carry it.

const CLUSTER_EVERY_MS = 1000;
const OVERVIEW_EVERY_MS = 2000;
const DOCS_EVERY_MS = 2000;
const REPLICAS_EVERY_MS = 1000;
const LIST_LIMIT = 200;
const TOKEN_KEY = "meridian.token";
const SVG = "http://www.w3.org/2000/svg";

const $ = (selector) => document.querySelector(selector);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  openId: null,
  events: null, // the open document's WebSocket
  eventsRetry: 0,
  replicasTimer: null,
  cluster: null, // the last GET /v1/cluster
  overview: null, // the last GET /v1/cluster/overview (every node's links)
  // The open document exists here (its event stream said so): only then are its copies asked
  // for, a missing document's would be a 404.
  exists: false,
  // Counts openings: a reconnection scheduled for an earlier opening is dropped.
  opened: 0,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError(response.status, "not_json", text.slice(0, 200));
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || "error", error.message || text);
  }
  return data;
}

// -- helpers --------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds >= 1) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds * 1000)} ms`;
}

function banner(message) {
  const node = $("#banner");
  node.hidden = !message;
  node.textContent = message || "";
}

function explain(error) {
  if (error instanceof ApiError && error.status === 401) {
    return "This cluster requires an access token: paste one above (meridian token create).";
  }
  if (error instanceof ApiError && error.status === 403) {
    return "The access token does not grant this.";
  }
  return error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error);
}

// Calls `task` now and again `every` ms after each run ends (no overlapping runs).
function repeat(task, every) {
  let timer = null;
  const run = async () => {
    await task();
    timer = setTimeout(run, every);
  };
  run();
  return { stop: () => clearTimeout(timer) };
}

// -- the cluster ----------------------------------------------------------------------------

async function refreshCluster() {
  let cluster;
  try {
    cluster = await api("GET", "/v1/cluster");
  } catch (error) {
    banner(explain(error));
    return;
  }
  banner("");
  $("#identity").textContent =
    `cluster ${cluster.cluster} · this node ${cluster.node} (${cluster.region})`;
  document.title = `Meridian · ${cluster.node}`;
  $("#cluster-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  state.cluster = cluster;
  drawMap(cluster, state.overview);
  fillPeers(cluster);
  const docs = cluster.documents;
  const storage = cluster.storage;
  $("#node-stats").textContent =
    `${docs.live} documents (${docs.tombstones} deleted, ${docs.hot} in memory) · ` +
    `${storage.commits} commits, queue ${storage.queue_depth} · ` +
    `live clients: ${cluster.clients.sync_clients} sync, ${cluster.clients.event_streams} event streams`;
}

// The links to draw: this node's own (from /v1/cluster, every second) and those between the
// other nodes (from /v1/cluster/overview, each as the nodes at its ends see it).
const SEVERITY = { up: 0, connecting: 1, down: 2, refused: 3 };

function meshLinks(cluster, overview) {
  const pairs = new Map();
  const add = (from, link) => {
    const ends = [from, link.peer].sort();
    const key = ends.join("|");
    if (!pairs.has(key)) pairs.set(key, { key, ends, views: [] });
    pairs.get(key).views.push(link);
  };
  for (const peer of cluster.peers) add(cluster.node, { ...peer, peer: peer.node });
  for (const node of (overview && overview.nodes) || []) {
    if (node.node === cluster.node || !node.reachable) continue;
    for (const link of node.links) add(node.node, link);
  }
  return [...pairs.values()].map((pair) => {
    // The worse state of the two ends' views; the RTTs they measured; the larger lag.
    const state = pair.views.reduce(
      (worst, view) => ((SEVERITY[view.state] ?? 2) > (SEVERITY[worst] ?? 2) ? view.state : worst),
      "up");
    const rtts = pair.views.map((view) => view.rtt_ms).filter((rtt) => rtt !== null);
    const rtt = rtts.length ? rtts.reduce((a, b) => a + b, 0) / rtts.length : null;
    const lag = Math.max(0, ...pair.views.map((view) => view.lag_seconds || 0));
    return { ...pair, state, rtt, lag };
  });
}

// Regions around an ellipse, their nodes inside, a line per link (an arc beside the box for
// two nodes of one region). Layers: boxes, then links, then nodes.
function drawMap(cluster, overview) {
  const width = 900;
  const height = 320;
  const boxWidth = 240;
  const rowHeight = 34;
  const regions = cluster.regions.map((region) => ({
    name: region.name,
    nodes: cluster.nodes.filter((node) => node.region === region.name),
  }));
  const answered = new Map(((overview && overview.nodes) || []).map((node) => [node.node, node]));
  const positions = new Map();
  const layers = { boxes: svg("g"), links: svg("g"), nodes: svg("g") };
  regions.forEach((region, index) => {
    const angle = Math.PI + (2 * Math.PI * index) / Math.max(regions.length, 1);
    const cx = regions.length === 1 ? width / 2 : width / 2 + Math.cos(angle) * 300;
    const cy = regions.length === 1 ? height / 2 : height / 2 + Math.sin(angle) * 95;
    const boxHeight = 36 + rowHeight * Math.max(region.nodes.length, 1);
    const top = cy - boxHeight / 2;
    const box = svg("g", { class: "region", "data-region": region.name });
    box.append(
      svg("rect", { x: cx - boxWidth / 2, y: top, width: boxWidth, height: boxHeight, rx: 10 }),
      svg("text", { class: "name", x: cx, y: top + 20, "text-anchor": "middle" }, region.name),
    );
    layers.boxes.append(box);
    region.nodes.forEach((node, row) => {
      const x = cx - boxWidth / 2 + 22;
      const y = top + 46 + row * rowHeight;
      // Where links attach: the circle (left) or the box's right edge.
      positions.set(node.id, {
        x, y, cx, region: region.name, left: x - 9, right: cx + boxWidth / 2 - 6,
      });
      const view = answered.get(node.id);
      const silent = view && !view.reachable;
      const item = svg("g", {
        class: `node${node.self ? " self" : ""}`, "data-node": node.id, "data-state": node.state,
        "data-reachable": silent ? "false" : "true",
      });
      const count = view ? view.documents : null;
      const documents = count === null || count === undefined
        ? "" : ` · ${count} document${count === 1 ? "" : "s"}`;
      const name = node.self ? `${node.id} (this node)` : node.id;
      item.append(
        svg("circle", { cx: x, cy: y, r: 9, class: node.self ? "" : silent ? "down" : node.state }),
        svg("text", { x: x + 16, y: y + 4 }, silent ? `${name} · no answer` : `${name}${documents}`),
        svg("title", {}, silent ? `${node.id}: ${view.error}` : node.id),
      );
      layers.nodes.append(item);
    });
  });
  for (const link of meshLinks(cluster, overview)) {
    const [a, b] = link.ends.map((id) => positions.get(id));
    if (!a || !b) continue;
    const mine = link.ends.includes(cluster.node);
    const attributes = {
      class: `link${mine ? "" : " remote"}`, "data-link": link.key, "data-state": link.state,
    };
    if (mine) attributes["data-peer"] = link.ends.find((id) => id !== cluster.node);
    const group = svg("g", attributes);
    const rtt = link.rtt === null ? "" : `${link.rtt < 10 ? link.rtt.toFixed(1) : Math.round(link.rtt)} ms`;
    const lag = link.lag > 0 ? ` · lag ${duration(link.lag)}` : "";
    const label = link.state === "up" ? `${rtt}${lag}` : `${link.state}${lag}`;
    if (a.region === b.region) {
      // Same region: an arc left of the box.
      const bend = a.left - 30;
      group.append(
        svg("path", { d: `M ${a.left} ${a.y} C ${bend} ${a.y}, ${bend} ${b.y}, ${b.left} ${b.y}`,
          class: link.state }),
        svg("text", { x: bend - 4, y: (a.y + b.y) / 2 + 4, "text-anchor": "end" }, label),
      );
    } else {
      // Boxes side by side: from the left one's right edge; one above the other: circle to
      // circle.
      const [from, to] = a.cx <= b.cx ? [a, b] : [b, a];
      const x1 = Math.abs(from.cx - to.cx) < 1 ? from.x : from.right;
      const x2 = Math.abs(from.cx - to.cx) < 1 ? to.x : to.left;
      group.append(
        svg("line", { x1, y1: from.y, x2, y2: to.y, class: link.state }),
        svg("text", { x: (x1 + x2) / 2 + 4, y: (from.y + to.y) / 2 - 6,
          "text-anchor": x1 === x2 ? "start" : "middle" }, label),
      );
    }
    layers.links.append(group);
  }
  $("#map").replaceChildren(layers.boxes, layers.links, layers.nodes);
}

function fillPeers(cluster) {
  const rows = cluster.peers.map((peer) => {
    const ae = peer.anti_entropy;
    const lastAe = ae.last_at
      ? `${ae.last_checked} checked, ${ae.last_repaired} repaired (${duration(ae.last_seconds)})`
      : "–";
    const row = el(
      "tr", { "data-peer": peer.node },
      el("td", {}, peer.node),
      el("td", {}, peer.region),
      el("td", { class: peer.state }, peer.last_error && peer.state !== "up"
        ? `${peer.state} (${peer.last_error})` : peer.state),
      el("td", {}, peer.rtt_ms === null ? "–" : `${peer.rtt_ms.toFixed(1)} ms`),
      el("td", {}, duration(peer.lag_seconds)),
      el("td", {}, `${peer.buffered.deltas + peer.buffered.in_flight} (${peer.buffered.bytes} B)`),
      el("td", {}, String(peer.deltas.acked)),
      el("td", {}, lastAe),
    );
    return row;
  });
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: "8" }, "No peers: a standalone node.")));
  }
  $("#peers tbody").replaceChildren(...rows);
}

async function refreshOverview() {
  try {
    state.overview = await api("GET", "/v1/cluster/overview");
  } catch {
    state.overview = null; // the map falls back to this node's links (the banner says why)
  }
  if (state.cluster) drawMap(state.cluster, state.overview);
}

// -- the document list ----------------------------------------------------------------------

async function refreshDocuments() {
  const prefix = $("#doc-filter").value.trim();
  const query = new URLSearchParams({ limit: String(LIST_LIMIT) });
  if (prefix) query.set("prefix", prefix);
  let listing;
  try {
    listing = await api("GET", `/v1/docs?${query}`);
  } catch (error) {
    $("#documents-count").textContent = explain(error);
    return;
  }
  $("#documents-count").textContent = prefix
    ? `${listing.documents.length} starting with “${prefix}”`
    : `${listing.documents.length}${listing.next_cursor ? "+" : ""}`;
  const items = listing.documents.map((doc) => {
    const item = el("li", { "data-id": doc.id, tabindex: "0" }, doc.id,
      el("span", { class: "incarnation" }, doc.incarnation > 1 ? `#${doc.incarnation}` : ""));
    if (doc.id === state.openId) item.classList.add("open");
    return item;
  });
  $("#doc-list").replaceChildren(...items);
  const more = $("#doc-list-more");
  more.hidden = !listing.next_cursor;
  more.textContent = `Only the first ${LIST_LIMIT} are listed: type a prefix to narrow.`;
}

// -- one document, live ---------------------------------------------------------------------

function openDocument(id) {
  if (state.openId === id) return;
  closeDocument();
  state.openId = id;
  state.opened += 1;
  state.eventsRetry = 0;
  state.exists = false;
  $("#document-section").hidden = false;
  $("#doc-id").textContent = id;
  $("#doc-content").textContent = "loading…";
  $("#doc-meta").textContent = "";
  $("#replicas").replaceChildren();
  $("#edit-result").textContent = "";
  for (const item of document.querySelectorAll("#doc-list li")) {
    item.classList.toggle("open", item.dataset.id === id);
  }
  history.replaceState(null, "", `#doc=${encodeURIComponent(id)}`);
  followEvents(id);
  state.replicasTimer = repeat(() => refreshReplicas(id), REPLICAS_EVERY_MS);
}

function closeDocument() {
  if (state.events) {
    state.events.onclose = null;
    state.events.close();
    state.events = null;
  }
  if (state.replicasTimer) state.replicasTimer.stop();
  state.openId = null;
}

function followEvents(id) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const socket = new WebSocket(
    `${scheme}://${location.host}/v1/docs/${encodeURIComponent(id)}/events${query}`);
  state.events = socket;
  socket.onopen = () => { state.eventsRetry = 0; };
  socket.onmessage = (message) => {
    if (state.openId !== id) return;
    showEvent(JSON.parse(message.data));
  };
  socket.onclose = (close) => {
    if (state.openId !== id || state.events !== socket) return;
    if (close.code === 4404) {
      $("#doc-meta").textContent = "deleted on this node";
      return;
    }
    if (close.code === 4401 || close.code === 4403) {
      $("#doc-meta").textContent = `refused: ${close.reason}`;
      return;
    }
    // Reconnect with backoff: the node restarting, a network blip.
    state.eventsRetry = Math.min(state.eventsRetry + 1, 5);
    $("#doc-meta").textContent = `event stream closed (${close.code} ${close.reason}), reconnecting…`;
    const opening = state.opened;
    setTimeout(() => {
      if (state.openId === id && state.opened === opening) followEvents(id);
    }, 200 * 2 ** state.eventsRetry);
  };
}

function showEvent(event) {
  state.exists = event.type !== "deleted" && (event.type === "resumed" || event.incarnation > 0);
  if (event.type === "deleted") {
    $("#doc-content").textContent = "{}";
    $("#doc-meta").textContent = `deleted (incarnation ${event.incarnation}) by ${event.node}`;
    return;
  }
  if (event.type === "resumed") return;
  $("#doc-content").textContent = JSON.stringify(event.content, null, 2);
  const source = event.type === "snapshot" ? "as of opening" : `last change from ${event.node} (${event.region})`;
  const incarnation = event.incarnation ? `incarnation ${event.incarnation}` : "not created yet";
  $("#doc-meta").textContent =
    `${incarnation} · ${source} at ${new Date().toLocaleTimeString()} · state vector ${event.state_vector || "(empty)"}`;
}

async function refreshReplicas(id) {
  if (!state.exists) {
    $("#replicas").replaceChildren(el("span", { class: "muted" }, "Not created yet."));
    return;
  }
  let replicas;
  try {
    replicas = await api("GET", `/v1/docs/${encodeURIComponent(id)}/replicas`);
  } catch (error) {
    if (state.openId === id) $("#replicas").replaceChildren(el("span", {}, explain(error)));
    return;
  }
  if (state.openId !== id) return;
  const label = el("span", { class: "muted" }, `Held in ${replicas.regions.join(", ")}:`);
  const chips = replicas.replicas.map((replica) => {
    const words = {
      in_sync: "in sync", sending: `sending ${replica.pending}`,
      catching_up: "catching up", unreachable: "unreachable",
    };
    const text = replica.link === "self"
      ? `${replica.region} · ${replica.node} (this node)`
      : `${replica.region} · ${replica.node}: ${words[replica.state]}`;
    return el("span", {
      class: `replica ${replica.state}`, "data-region": replica.region, "data-node": replica.node,
    }, text);
  });
  $("#replicas").replaceChildren(label, ...chips);
}

// -- edits ----------------------------------------------------------------------------------

function parsePath(text) {
  const value = text.trim();
  if (value.startsWith("[")) return JSON.parse(value);
  return value.split("/").filter(Boolean).map((part) => (/^\d+$/.test(part) ? Number(part) : part));
}

function parseValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text; // plain text is a string
  }
}

function operationFromForm() {
  const op = $("#edit-op").value;
  const operation = { op, path: parsePath($("#edit-path").value) };
  const index = Number($("#edit-index").value);
  const length = Number($("#edit-length").value);
  if (op === "set") operation.value = parseValue($("#edit-value").value);
  if (["insert_text", "delete_text", "insert", "remove"].includes(op)) operation.index = index;
  if (op === "insert_text") operation.text = $("#edit-text").value;
  if (["delete_text", "remove"].includes(op)) operation.length = length;
  if (["append", "insert"].includes(op)) {
    const values = JSON.parse($("#edit-values").value || "[]");
    if (!Array.isArray(values)) throw new SyntaxError("Values must be a JSON array");
    operation.values = values;
  }
  return operation;
}

async function applyOperations(ops) {
  const result = $("#edit-result");
  const id = state.openId;
  const durability = $("#edit-durability").value;
  result.className = "";
  result.textContent = "applying…";
  try {
    const answer = await api("PATCH",
      `/v1/docs/${encodeURIComponent(id)}?durability=${durability}`, { ops });
    const where = answer.durable_on ? ` on ${answer.durable_on.join(", ")}` : "";
    result.textContent = answer.changed
      ? `applied: durable (${answer.durability})${where}`
      : "nothing to change";
    if (answer.created) refreshDocuments();
  } catch (error) {
    result.className = "error";
    result.textContent = explain(error);
  }
}

function showFieldsFor(op) {
  for (const label of document.querySelectorAll("#edit-form label[data-for]")) {
    label.hidden = !label.dataset.for.split(" ").includes(op);
  }
}

// -- wiring ---------------------------------------------------------------------------------

function start() {
  $("#token").value = state.token;
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    // Kept for this browser tab only.
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    const open = state.openId;
    closeDocument();
    if (open) openDocument(open);
    refreshCluster();
    refreshDocuments();
  });
  $("#open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#doc-filter").value.trim();
    if (id) openDocument(id);
  });
  $("#doc-filter").addEventListener("input", () => refreshDocuments());
  const list = $("#doc-list");
  list.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-id]");
    if (item) openDocument(item.dataset.id);
  });
  list.addEventListener("keydown", (event) => {
    const item = event.target.closest("li[data-id]");
    if (item && event.key === "Enter") openDocument(item.dataset.id);
  });
  $("#edit-op").addEventListener("change", (event) => showFieldsFor(event.target.value));
  showFieldsFor($("#edit-op").value);
  $("#edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    let operation;
    try {
      operation = operationFromForm();
    } catch (error) {
      $("#edit-result").className = "error";
      $("#edit-result").textContent = `Not valid JSON: ${error.message}`;
      return;
    }
    applyOperations([operation]);
  });
  $("#edit-ops-apply").addEventListener("click", () => {
    let ops;
    try {
      ops = JSON.parse($("#edit-ops").value);
      if (!Array.isArray(ops)) throw new SyntaxError("expected a JSON array of operations");
    } catch (error) {
      $("#edit-result").className = "error";
      $("#edit-result").textContent = `Not valid JSON: ${error.message}`;
      return;
    }
    applyOperations(ops);
  });

  repeat(refreshCluster, CLUSTER_EVERY_MS);
  repeat(refreshOverview, OVERVIEW_EVERY_MS);
  repeat(refreshDocuments, DOCS_EVERY_MS);
  const match = /^#doc=(.+)$/.exec(location.hash);
  if (match) openDocument(decodeURIComponent(match[1]));
}

start();
