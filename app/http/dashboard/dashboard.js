// The Meridian dashboard: this node's view of the cluster, its documents, and one document
// live. Plain browser JavaScript served by the node (no build step, no CDN).
//
// Data comes from the public API only: GET /v1/cluster and /v1/cluster/overview (polled:
// each node's documents and links, this node's hints), GET /v1/docs (polled),
// WS /v1/docs/{id}/events (the open document's JSON, live), GET /v1/docs/{id}/placement
// (polled, and after each change: where it lives), GET /v1/docs/{id} (on opening and after
// changes: which node serves it, from X-Meridian-Served-By), GET /v1/docs/{id}/replicas
// (polled; both sparingly when forwarded, see FORWARDED_READ_EVERY_MS) and PATCH
// /v1/docs/{id} (edits). With an access token the requests carry it.

const CLUSTER_EVERY_MS = 1000;
const OVERVIEW_EVERY_MS = 2000;
const DOCS_EVERY_MS = 2000;
// The open document: a tick every second; its placement (this node's records, never
// forwarded) at most every 2 s, or at the tick after a change.
const DOCUMENT_EVERY_MS = 1000;
const PLACEMENT_EVERY_MS = 2000;
// A node that does not hold the open document forwards the page's reads of it to a holder,
// and reads forwarded from a region count toward a follower copy there (placement.follow_reads
// decayed reads, half-life placement.follow_half_life). The page keeps its own to one every
// 6 s, below what the defaults (20 reads, 60 s) turn into a copy (one every 4.4 s, steadily),
// so that watching a document from another region does not by itself move a copy there.
const FORWARDED_READ_EVERY_MS = 6000;
const SERVED_BY = "X-Meridian-Served-By";
const LIST_LIMIT = 200;
const TOKEN_KEY = "meridian.token";
const SVG = "http://www.w3.org/2000/svg";

const $ = (selector) => document.querySelector(selector);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  openId: null,
  events: null, // the open document's WebSocket
  eventsRetry: 0,
  documentTimer: null,
  cluster: null, // the last GET /v1/cluster
  overview: null, // the last GET /v1/cluster/overview (every node's links)
  // The open document exists here (its event stream said so): only then are its copies asked
  // for, a missing document's would be a 404.
  exists: false,
  // The open document's placement (GET /v1/docs/{id}/placement, this node's view), null
  // until known; when it was last asked for, and whether a change calls for asking again.
  placement: null,
  placementAt: 0,
  placementStale: true,
  // The last GET /v1/docs/{id}: the node that served it ({node, at}), and whether the
  // document changed since (the next tick asks again).
  served: null,
  documentStale: true,
  // The copies (GET /v1/docs/{id}/replicas) were shown for this opening.
  replicasShown: false,
  // When the page last sent a read of the open document that this node forwards.
  forwardedAt: 0,
  // Counts openings: a reconnection scheduled for an earlier opening is dropped.
  opened: 0,
};

class ApiError extends Error {
  constructor(status, code, message, servedBy = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.servedBy = servedBy;
  }
}

async function api(method, path, body) {
  return (await request(method, path, body)).data;
}

// The answer's JSON and the node that served it (X-Meridian-Served-By: a same-origin
// response header, readable from fetch); errors carry it too.
async function request(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const servedBy = response.headers.get(SERVED_BY);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError(response.status, "not_json", text.slice(0, 200), servedBy);
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || "error", error.message || text, servedBy);
  }
  return { data, servedBy };
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
    `${plural(docs.live, "document")} held here ` +
    `(${docs.tombstones} deleted, ${docs.hot} in memory) · ` +
    `${placementStats(cluster.placement)}` +
    `${storage.commits} commits, queue ${storage.queue_depth} · ` +
    `live clients: ${cluster.clients.sync_clients} sync, ${cluster.clients.event_streams} event streams`;
  // What depends on which node this is.
  if (state.placement) showPlacement(state.placement);
  showServed();
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

// This node's placement figures, for the line under the table.
function placementStats(placement) {
  if (!placement) return "";
  if (!placement.active) return "placement off: holds every document · ";
  const handoff = placement.handoff;
  const pending = handoff && handoff.pending ? `, ${handoff.pending} to hand off` : "";
  const pulls = handoff && handoff.pulls_pending ? `, ${handoff.pulls_pending} to pull` : "";
  return `${plural(placement.hints, "hint")} kept for unreachable holders${pending}${pulls} · `;
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
// two nodes of one region). Layers: boxes, then links, then nodes. Each node says the
// documents it holds and its hints (when it reports them); with a document open, its
// regions, home, holders, follower copies and the node that served it are marked.
function drawMap(cluster, overview) {
  const width = 900;
  const height = 320;
  const boxWidth = 240;
  const rowHeight = 38;
  const placement = openPlacement();
  const served = state.served && state.served.id === state.openId ? state.served.node : null;
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
    const placed = placement && placement.regions.includes(region.name);
    const home = placement && placement.home === region.name;
    const box = svg("g", {
      class: `region${placed ? " placed" : ""}${home ? " home" : ""}`, "data-region": region.name,
    });
    box.append(
      svg("rect", { x: cx - boxWidth / 2, y: top, width: boxWidth, height: boxHeight, rx: 10 }),
      svg("text", { class: "name", x: cx, y: top + 20, "text-anchor": "middle" },
        home ? `${region.name} · home` : region.name),
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
      // This node's own figures come from /v1/cluster (every second), the others' from the
      // overview (each node's /v1/cluster, every 2 s).
      const count = node.self ? cluster.documents.live : view ? view.documents : null;
      const hints = node.self
        ? cluster.placement && cluster.placement.hints
        : view && typeof view.hints === "number" ? view.hints : null;
      const role = !placement ? ""
        : placement.holders.includes(node.id) ? "holder"
          : placement.followers.includes(node.id) ? "follower" : "";
      const classes = ["node", node.self && "self", role, served === node.id && "served"];
      const attributes = {
        class: classes.filter(Boolean).join(" "), "data-node": node.id, "data-state": node.state,
        "data-reachable": silent ? "false" : "true", "data-role": role,
      };
      if (typeof count === "number" && !silent) attributes["data-documents"] = String(count);
      if (typeof hints === "number" && !silent) attributes["data-hints"] = String(hints);
      const item = svg("g", attributes);
      const details = [];
      // A member joining (taking its share) or leaving (handing it back) says so.
      if (node.member && node.member !== "active") details.push(node.member);
      if (silent) details.push("no answer");
      else {
        if (typeof count === "number") details.push(plural(count, "document"));
        if (typeof hints === "number") details.push(plural(hints, "hint"));
        const rate = node.self ? cluster.requests && cluster.requests.per_second
          : view ? view.requests_per_second : null;
        if (typeof rate === "number" && rate > 0) details.push(`${rate.toFixed(1)} req/s`);
      }
      // The open document's marks, right-aligned: its role here, and "served" on the node
      // that served the page's last read of it.
      const edge = cx + boxWidth / 2 - 12;
      const roleText = { holder: "holder", follower: "follower copy" };
      item.append(
        svg("rect", {
          class: "mark", x: x - 15, y: y - 15, width: boxWidth - 14, height: rowHeight - 5, rx: 6,
        }),
        svg("circle", { cx: x, cy: y, r: 9, class: node.self ? "" : silent ? "down" : node.state }),
        svg("text", { class: "label", x: x + 16, y: y - 1 },
          node.self ? `${node.id} (this node)` : node.id),
        svg("text", { class: "details", x: x + 16, y: y + 13 }, details.join(" · ")),
        svg("text", { class: "role", x: edge, y: y - 1, "text-anchor": "end" },
          role ? roleText[role] : ""),
        svg("text", { class: "served", x: edge, y: y + 13, "text-anchor": "end" },
          served === node.id ? "served" : ""),
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
  state.placement = null;
  state.placementAt = 0;
  state.placementStale = true;
  state.served = null;
  state.documentStale = true;
  state.replicasShown = false;
  $("#document-section").hidden = false;
  $("#doc-id").textContent = id;
  $("#doc-pinned").hidden = true;
  $("#doc-content").textContent = "loading…";
  $("#doc-meta").textContent = "";
  $("#placement").hidden = true;
  $("#placement").removeAttribute("data-pinned");
  $("#placement-note").textContent = "";
  showServed();
  $("#replicas").replaceChildren();
  $("#edit-result").textContent = "";
  for (const item of document.querySelectorAll("#doc-list li")) {
    item.classList.toggle("open", item.dataset.id === id);
  }
  history.replaceState(null, "", `#doc=${encodeURIComponent(id)}`);
  followEvents(id);
  state.documentTimer = repeat(() => refreshDocument(id), DOCUMENT_EVERY_MS);
  if (state.cluster) drawMap(state.cluster, state.overview);
}

function closeDocument() {
  if (state.events) {
    state.events.onclose = null;
    state.events.close();
    state.events = null;
  }
  if (state.documentTimer) state.documentTimer.stop();
  state.openId = null;
}

function followEvents(id) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const socket = new WebSocket(
    `${scheme}://${location.host}/v1/docs/${encodeURIComponent(id)}/events${query}`);
  state.events = socket;
  socket.onopen = () => {
    state.eventsRetry = 0;
    state.documentStale = true; // (re)connected: which node serves it now
  };
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
  // A change (or a first write) may have placed it, or moved it: ask again at the next tick.
  state.placementStale = true;
  if (event.type === "change") state.documentStale = true;
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

// One tick for the open document: its placement (this node's records: never forwarded, so
// asked freely), then which node serves it (GET /v1/docs/{id}, when it changed) and its
// copies (GET /v1/docs/{id}/replicas). Those two are forwarded by a node that does not hold
// it: then one of them at most every FORWARDED_READ_EVERY_MS.
async function refreshDocument(id) {
  const now = Date.now();
  if (!state.exists) {
    // Nothing to ask of a document not written yet (each answer would be a 404).
    $("#replicas").replaceChildren(el("span", { class: "muted" }, "Not created yet."));
    state.replicasShown = false;
    return;
  }
  if (state.placementStale || now - state.placementAt >= PLACEMENT_EVERY_MS) {
    state.placementStale = false;
    state.placementAt = now;
    await refreshPlacement(id);
    if (state.openId !== id) return;
  }
  if (!state.replicasShown) {
    $("#replicas").replaceChildren(el("span", { class: "muted" }, "Copies: asking…"));
  }
  const here = holdsHere();
  if (!here) {
    if (now - state.forwardedAt < FORWARDED_READ_EVERY_MS) return;
    state.forwardedAt = now;
  }
  if (state.documentStale) {
    state.documentStale = false;
    await fetchDocument(id);
    // Forwarded: the copies at the next slot, unless none were shown yet.
    if (state.openId !== id || (!here && state.replicasShown)) return;
  }
  await refreshReplicas(id);
}

// The open document's placement, when it is the one open.
function openPlacement() {
  const placement = state.placement;
  return placement && state.openId !== null && placement.id === state.openId ? placement : null;
}

// Whether this node serves the open document from its own copy: it holds it (or a follower
// copy), or it holds everything (placement off, or no peers). Unknown counts as no.
function holdsHere() {
  const cluster = state.cluster;
  if (!cluster) return false;
  if ((cluster.placement && !cluster.placement.active) || !cluster.peers.length) return true;
  const placement = openPlacement();
  return Boolean(placement
    && (placement.holders.includes(cluster.node) || placement.followers.includes(cluster.node)));
}

async function refreshPlacement(id) {
  let placement;
  try {
    placement = await api("GET", `/v1/docs/${encodeURIComponent(id)}/placement`);
  } catch (error) {
    if (state.openId === id) $("#placement-note").textContent = `placement: ${explain(error)}`;
    return;
  }
  if (state.openId !== id) return;
  $("#placement-note").textContent = "";
  showPlacement(placement);
  if (state.cluster) drawMap(state.cluster, state.overview);
}

function chip(attributes, text) {
  return el("span", { class: "chip", ...attributes }, text);
}

function nodeChips(ids, me, empty) {
  if (!ids.length) return [el("span", { class: "muted" }, empty)];
  return ids.map((id) => chip({ "data-node": id }, id === me ? `${id} (this node)` : id));
}

// The placement panel: policy, home, regions, holders, follower copies, pin.
function showPlacement(placement) {
  state.placement = placement;
  const me = state.cluster ? state.cluster.node : null;
  const defaults = state.cluster && state.cluster.placement;
  const policies = {
    default: `default: the home region and the nearest others, up to ${
      defaults ? plural(defaults.default_replicas, "region") : "[placement] replicas"}`,
    count: `count: the home region and the nearest others, up to ${
      plural(placement.replicas, "region")}`,
    regions: "regions: an explicit list",
  };
  $("#placement").hidden = false;
  $("#placement").dataset.pinned = String(placement.pinned);
  $("#placement-policy").textContent = policies[placement.policy] || placement.policy;
  $("#placement-home").replaceChildren(chip({ "data-region": placement.home }, placement.home));
  $("#placement-regions").replaceChildren(...placement.regions.map((region) => chip(
    { "data-region": region }, region === placement.home ? `${region} (home)` : region)));
  $("#placement-holders").replaceChildren(...nodeChips(placement.holders, me, "none"));
  $("#placement-followers").replaceChildren(...nodeChips(placement.followers, me, "none"));
  $("#placement-pinned").textContent = placement.pinned
    ? `pinned: its content is never stored outside ${placement.regions.join(", ")}`
    : "not pinned";
  $("#placement-pinned").className = placement.pinned ? "pinned" : "";
  $("#doc-pinned").hidden = !placement.pinned;
}

// GET /v1/docs/{id}: only for the node that serves it (the content comes from the event
// stream).
async function fetchDocument(id) {
  let servedBy;
  let failure = null;
  try {
    servedBy = (await request("GET", `/v1/docs/${encodeURIComponent(id)}`)).servedBy;
  } catch (error) {
    servedBy = error instanceof ApiError ? error.servedBy : null;
    failure = explain(error);
  }
  if (state.openId !== id) return;
  state.served = { id, node: servedBy, at: new Date(), failure };
  showServed();
  if (state.cluster) drawMap(state.cluster, state.overview);
}

// "served by <node>", and whether this node forwarded the read to it.
function showServed() {
  const field = $("#served-by");
  const served = state.served && state.served.id === state.openId ? state.served : null;
  if (!served) {
    field.replaceChildren(el("span", { class: "muted" }, "–"));
    delete field.dataset.node;
    delete field.dataset.forwarded;
    return;
  }
  const me = state.cluster ? state.cluster.node : null;
  const parts = [];
  if (served.node) {
    const forwarded = me !== null && served.node !== me;
    field.dataset.node = served.node;
    if (me !== null) field.dataset.forwarded = String(forwarded);
    parts.push("served by ", chip({ "data-node": served.node }, served.node));
    if (forwarded) {
      parts.push(" ", el("span", { class: "tag forwarded" }, "forwarded"),
        ` by ${me} (this node), which does not hold it`);
    } else if (me !== null) {
      parts.push(" (this node), from its own copy");
    }
  } else {
    delete field.dataset.node;
    delete field.dataset.forwarded;
  }
  if (served.failure) parts.push(` ${served.failure}`);
  const at = served.at.toLocaleTimeString();
  parts.push(el("span", { class: "muted" }, ` · GET /v1/docs/{id} at ${at}`));
  field.replaceChildren(...parts);
}

async function refreshReplicas(id) {
  let replicas;
  let servedBy;
  try {
    ({ data: replicas, servedBy } = await request(
      "GET", `/v1/docs/${encodeURIComponent(id)}/replicas`));
  } catch (error) {
    if (state.openId !== id) return;
    $("#replicas").replaceChildren(el("span", {}, `Copies: ${explain(error)}`));
    state.replicasShown = true;
    return;
  }
  if (state.openId !== id) return;
  const me = state.cluster ? state.cluster.node : null;
  // The answer is the serving node's view: its own copy first (link "self").
  const seen = servedBy && servedBy !== me ? `, as ${servedBy} sees them (forwarded)` : "";
  const label = el("span", { class: "muted" },
    `Copies in ${replicas.regions.join(", ")}${seen}:`);
  const chips = replicas.replicas.map((replica) => {
    const words = {
      in_sync: "in sync", sending: `sending ${replica.pending}`,
      catching_up: "catching up", unreachable: "unreachable",
    };
    const who = replica.node === me ? " (this node)" : "";
    const text = replica.link === "self"
      ? `${replica.region} · ${replica.node}${who || " (answered)"}`
      : `${replica.region} · ${replica.node}${who}: ${words[replica.state]}`;
    return el("span", {
      class: `replica ${replica.state}`, "data-region": replica.region, "data-node": replica.node,
    }, text);
  });
  $("#replicas").replaceChildren(label, ...chips);
  state.replicasShown = true;
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
  const me = state.cluster ? state.cluster.node : null;
  const by = (node) => (node ? ` · served by ${node}${me && node !== me ? " (forwarded)" : ""}` : "");
  try {
    const { data: answer, servedBy } = await request("PATCH",
      `/v1/docs/${encodeURIComponent(id)}?durability=${durability}`, { ops });
    const where = answer.durable_on ? ` on ${answer.durable_on.join(", ")}` : "";
    result.textContent = (answer.changed
      ? `applied: durable (${answer.durability})${where}`
      : "nothing to change") + by(servedBy);
    if (answer.created) refreshDocuments();
  } catch (error) {
    result.className = "error";
    result.textContent = explain(error) + by(error instanceof ApiError ? error.servedBy : null);
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
  const openFromHash = () => {
    const match = /^#doc=(.+)$/.exec(location.hash);
    if (match) openDocument(decodeURIComponent(match[1]));
  };
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
}

start();
