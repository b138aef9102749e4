// citywatch operations console: map, incident desk, live updates. Plain JavaScript over
// the responder API; no build step, nothing loaded from elsewhere (Leaflet is vendored).
"use strict";

const SEVERITIES = ["Unknown", "Minor", "Moderate", "Severe", "Extreme"];
const COLOURS = {Extreme: "#7a0014", Severe: "#c0392b", Moderate: "#d35400",
                 Minor: "#8a6d00", Unknown: "#555555"};
const PAGE = 25;
const state = {
  token: sessionStorage.getItem("citywatch-token"), me: null, incidents: new Map(),
  shown: [], sort: {key: "last_seen", desc: true}, page: 0, selected: null,
  zones: null, zoneByKey: new Map(), drawn: new Map(), lastEventId: null, map: null,
  cluster: null, areas: null, stream: null,
};
const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function problem(text) {
  const box = $("#problem");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {Authorization: `Bearer ${state.token}`, ...(options.headers || {})},
  });
  if (response.status === 401) {
    problem("Your token was refused (401): sign in again.");
    signOut(false);
    throw new Error("401");
  }
  if (response.status === 403) {
    problem("Your role may not do this (403).");
    throw new Error("403");
  }
  if (!response.ok) {
    const text = await response.text();
    problem(`The API answered ${response.status}: ${text.slice(0, 300)}`);
    throw new Error(String(response.status));
  }
  return response;
}

// ---- sign-in -----------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  const response = await fetch("/whoami", {headers: {Authorization: `Bearer ${token}`}});
  if (!response.ok) {
    state.token = null;
    problem(response.status === 401 ? "That token is not known (401)."
                                     : `Sign-in failed: the API answered ${response.status}.`);
    return;
  }
  problem("");
  state.me = await response.json();
  sessionStorage.setItem("citywatch-token", token);
  $("#who").textContent = `${state.me.name} (${state.me.role})`;
  $("#signin").hidden = true;
  $("#signout").hidden = false;
  $("#app").hidden = false;
  document.body.dataset.role = state.me.role;
  await start();
}

function signOut(clear = true) {
  sessionStorage.removeItem("citywatch-token");
  if (state.stream) state.stream.abort();
  state.token = null;
  state.me = null;
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  setLive("off", "offline");
  if (clear) problem("");
}

const mayRespond = () => Boolean(state.me && state.me.may.includes("respond"));

// ---- map ---------------------------------------------------------------------------

function setUpMap() {
  if (state.map) return;
  state.map = L.map("map", {zoomControl: true, minZoom: 2, maxZoom: 18});
  if (state.me.tiles) {
    L.tileLayer(state.me.tiles, {maxZoom: 19, attribution: "tiles: deployment"})
      .addTo(state.map);
  }
  state.cluster = L.markerClusterGroup({maxClusterRadius: 40, showCoverageOnHover: false});
  state.areas = L.layerGroup();
  state.map.addLayer(state.areas);
  state.map.addLayer(state.cluster);
  state.map.setView([20, 0], 2);
  state.map.on("moveend", () => { if ($("#in-extent").checked) render(); });
}

async function loadZones() {
  const zones = await (await api("/zones.geojson")).json();
  state.zones = L.geoJSON(zones, {
    style: {color: "#3b5b7a", weight: 1, fillColor: "#9fb7cc", fillOpacity: 0.12},
    onEachFeature: (feature, layer) => {
      const p = feature.properties;
      state.zoneByKey.set(`${p.layer}/${p.zone_id}`, feature);
      layer.bindTooltip(`${p.name} (${p.layer})`, {sticky: true, className: "zone-label"});
    },
  }).addTo(state.map);
  state.zones.bringToBack();
  const names = $("#zone-names");
  names.replaceChildren(...[...new Set(zones.features.map((f) => f.properties.name))]
    .sort().map((name) => element("option", {value: name})));
  if (zones.features.length) state.map.fitBounds(state.zones.getBounds(), {padding: [10, 10]});
}

function drawIncident(incident) {
  const colour = COLOURS[incident.severity] || COLOURS.Unknown;
  const select = () => selectIncident(incident.id, "map");
  if (incident.lon !== null && incident.lat !== null) {
    const marker = L.circleMarker([incident.lat, incident.lon], {
      radius: 8, color: "#fff", weight: 2, fillColor: colour, fillOpacity: 0.95,
    });
    marker.bindTooltip(`${incident.severity}: ${incident.title}`);
    marker.on("click", select);
    marker.incidentId = incident.id;
    state.cluster.addLayer(marker);
    return marker;
  }
  const zone = state.zoneByKey.get(`${incident.zone_layer}/${incident.zone_id}`);
  if (!zone) return null;
  const area = L.geoJSON(zone, {style: {color: colour, weight: 2, fillColor: colour,
                                        fillOpacity: 0.35}});
  area.bindTooltip(`${incident.severity}: ${incident.title}`);
  area.on("click", select);
  area.incidentId = incident.id;
  state.areas.addLayer(area);
  return area;
}

function redrawMap(list) {
  state.cluster.clearLayers();
  state.areas.clearLayers();
  state.drawn.clear();
  for (const incident of list) {
    const drawn = drawIncident(incident);
    if (drawn) state.drawn.set(incident.id, drawn);
  }
  $("#map").dataset.incidents = String(state.drawn.size);
}

// ---- incidents, filters, list ------------------------------------------------------

function filterValues() {
  const form = $("#filters");
  return {
    status: [...form.querySelectorAll("input[name=status]:checked")].map((i) => i.value),
    min_severity: form.min_severity.value, domain: form.domain.value,
    zone: form.zone.value.trim(), since: form.since.value, until: form.until.value,
    text: form.text.value.trim().toLowerCase(),
  };
}

function query(filters) {
  const params = new URLSearchParams();
  for (const status of filters.status) params.append("status", status);
  if (filters.min_severity) params.set("min_severity", filters.min_severity);
  if (filters.domain) params.set("domain", filters.domain);
  if (filters.zone) params.set("zone", filters.zone);
  if (filters.since) params.set("since", new Date(filters.since).toISOString());
  if (filters.until) params.set("until", new Date(filters.until).toISOString());
  return params;
}

async function loadIncidents() {
  const filters = filterValues();
  const found = new Map();
  let offset = 0;
  for (;;) {
    const params = query(filters);
    params.set("limit", "1000");
    params.set("offset", String(offset));
    const page = await (await api(`/incidents?${params}`)).json();
    for (const incident of page.items) found.set(incident.id, incident);
    offset += page.items.length;
    if (!page.items.length || offset >= page.total) break;
  }
  state.incidents = found;
  state.page = 0;
  render();
}

function matches(incident, filters) {
  if (filters.status.length && !filters.status.includes(incident.status)) return false;
  if (filters.min_severity && SEVERITIES.indexOf(incident.severity)
      < SEVERITIES.indexOf(filters.min_severity)) return false;
  if (filters.domain && incident.domain !== filters.domain) return false;
  if (filters.zone) {
    const zone = filters.zone.toLowerCase();
    if ((incident.zone_name || "").toLowerCase() !== zone
        && (incident.zone_id || "").toLowerCase() !== zone) return false;
  }
  if (filters.text) {
    const haystack = `${incident.title} ${incident.zone_name || ""} ${incident.rule_id}`;
    if (!haystack.toLowerCase().includes(filters.text)) return false;
  }
  return true;
}

function render() {
  const filters = filterValues();
  let list = [...state.incidents.values()].filter((i) => matches(i, filters));
  redrawMap(list);
  if ($("#in-extent").checked && state.map) {
    const bounds = state.map.getBounds();
    list = list.filter((i) => i.lat !== null && bounds.contains([i.lat, i.lon]));
  }
  const {key, desc} = state.sort;
  const value = (i) => key === "severity_rank" ? SEVERITIES.indexOf(i.severity) : i[key] ?? "";
  list.sort((a, b) => (value(a) < value(b) ? -1 : value(a) > value(b) ? 1 : 0) * (desc ? -1 : 1));
  state.shown = list;
  const pages = Math.max(1, Math.ceil(list.length / PAGE));
  state.page = Math.min(state.page, pages - 1);
  const rows = list.slice(state.page * PAGE, (state.page + 1) * PAGE).map((incident) => {
    const row = element("tr", {
      "data-id": incident.id, tabindex: "0",
      class: incident.id === state.selected ? "selected" : null,
      onclick: () => selectIncident(incident.id, "list"),
      onkeydown: (event) => { if (event.key === "Enter") selectIncident(incident.id, "list"); },
    },
    element("td", {}, element("span", {class: `sev sev-${incident.severity}`,
                                       text: incident.severity})),
    element("td", {text: incident.title}),
    element("td", {text: incident.zone_name || "—"}),
    element("td", {text: incident.status, "data-status": incident.status}),
    element("td", {text: new Date(incident.last_seen).toLocaleString()}),
    element("td", {text: String(incident.alert_count)}));
    return row;
  });
  $("#list tbody").replaceChildren(...rows);
  $("#count").textContent = `${list.length} incident(s) shown, ${state.drawn.size} on the map`;
  $("#page").textContent = `page ${state.page + 1} of ${pages}`;
  $("#prev").disabled = state.page === 0;
  $("#next").disabled = state.page >= pages - 1;
}

function selectIncident(id, from) {
  state.selected = id;
  const index = state.shown.findIndex((i) => i.id === id);
  if (index >= 0 && from === "map") state.page = Math.floor(index / PAGE);
  render();
  const row = document.querySelector(`#list tr[data-id="${CSS.escape(id)}"]`);
  if (row && from === "map") row.scrollIntoView({block: "nearest"});
  const drawn = state.drawn.get(id);
  if (drawn && from === "list") {
    if (drawn.getLatLng) state.cluster.zoomToShowLayer(drawn, () => drawn.openTooltip());
    else state.map.fitBounds(drawn.getBounds(), {maxZoom: 12});
  }
  showDetail(id);
}

// ---- detail and actions ------------------------------------------------------------

async function showDetail(id) {
  const panel = $("#detail");
  const detail = await (await api(`/incidents/${encodeURIComponent(id)}`)).json();
  const incident = detail.incident;
  state.incidents.set(id, {...state.incidents.get(id), ...incident});
  const actions = element("div", {class: "actions"});
  if (mayRespond()) {
    const act = (action, body) => async () => {
      await api(`/incidents/${encodeURIComponent(id)}/${action}`, {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: body ? JSON.stringify(body()) : undefined});
      await showDetail(id);
      render();
    };
    if (["new", "reopened"].includes(incident.status)) {
      actions.append(element("button", {type: "button", onclick: act("acknowledge"),
                                        text: "Acknowledge"}));
    }
    if (incident.status !== "resolved") {
      actions.append(element("button", {type: "button", onclick: act("resolve"),
                                        text: "Resolve"}));
    } else {
      actions.append(element("button", {type: "button", onclick: act("reopen"),
                                        text: "Reopen"}));
    }
    const assignee = element("input", {id: "assignee", value: incident.assignee || "",
                                       "aria-label": "Assignee"});
    actions.append(assignee, element("button", {type: "button", text: "Assign",
      onclick: act("assign", () => ({assignee: assignee.value || null}))}));
    const note = element("textarea", {id: "note-text", rows: "2", cols: "40",
                                      "aria-label": "Note"});
    actions.append(note, element("button", {type: "button", text: "Add note",
      onclick: act("notes", () => ({text: note.value}))}));
  }
  const capButton = element("button", {type: "button", text: "CAP 1.2", onclick: async () => {
    const xml = await (await api(`/incidents/${encodeURIComponent(id)}/cap`)).text();
    panel.querySelector(".cap").replaceChildren(element("pre", {text: xml}));
  }});
  const alerts = element("ul", {}, ...detail.alerts.map((a) => element("li", {},
    element("span", {class: `sev sev-${a.severity}`, text: a.severity}), " ",
    `${new Date(a.event_time).toLocaleString()}: ${a.message} `,
    element("span", {class: "muted", text: `(rule ${a.rule_id} ${a.rule_version}; ` +
                                          `${a.source_event_ids.length} source event(s))`}),
    " ",
    element("button", {type: "button", text: "Explain", onclick: async () => {
      const why = await (await api(`/alerts/${encodeURIComponent(a.id)}/explain`)).json();
      panel.querySelector(".explain").replaceChildren(
        element("h3", {text: `Why alert ${a.id.slice(0, 8)} fired`}),
        element("pre", {text: JSON.stringify(why, null, 2)}));
    }}))));
  panel.replaceChildren(
    element("button", {type: "button", text: "Close", onclick: () => { panel.hidden = true; }}),
    element("h2", {}, element("span", {class: `sev sev-${incident.severity}`,
                                       text: incident.severity}), ` ${incident.title}`),
    element("p", {class: "muted", text: `${incident.status} · ${incident.zone_name || "no zone"}` +
      ` · ${incident.alert_count} alert(s) · assignee ${incident.assignee || "none"} · ` +
      `id ${incident.id}`}),
    actions,
    element("section", {}, element("h3", {text: "Alerts"}), alerts),
    element("section", {class: "explain"}),
    element("section", {}, element("h3", {text: "Notes"}),
      element("ul", {}, ...detail.notes.map((n) => element("li", {
        text: `${new Date(n.created_at).toLocaleString()} ${n.author}: ${n.text}`})))),
    element("section", {}, element("h3", {text: "Audit trail"}),
      element("ol", {class: "audit"}, ...detail.audit.map((entry) => element("li", {
        "data-action": entry.action,
        text: `${new Date(entry.at).toLocaleString()} ${entry.actor} ${entry.action} ` +
              `${JSON.stringify(entry.detail)}`})))),
    element("section", {}, capButton, element("div", {class: "cap"})));
  panel.hidden = false;
}

// ---- indicators ----------------------------------------------------------------------

function card(title, body) {
  return element("div", {class: "card"}, element("h3", {text: title}), body);
}

function chart(hours) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 240, height = 60, most = Math.max(1, ...hours.map((h) => h.alerts));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Alerts per hour, last 24 h: ${hours.map((h) => h.alerts).join(", ")}`);
  hours.forEach((h, i) => {
    const bar = document.createElementNS(ns, "rect");
    const tall = Math.round((h.alerts / most) * (height - 4));
    bar.setAttribute("x", String(i * (width / 24)));
    bar.setAttribute("y", String(height - tall));
    bar.setAttribute("width", String(width / 24 - 1));
    bar.setAttribute("height", String(tall));
    bar.setAttribute("fill", "#3b5b7a");
    svg.append(bar);
  });
  return svg;
}

async function loadSummary() {
  const s = await (await api("/summary")).json();
  const list = (counts) => element("ul", {}, ...Object.entries(counts)
    .sort((a, b) => b[1] - a[1]).map(([k, v]) => element("li", {text: `${k}: ${v}`})));
  const open = Object.values(s.open_by_severity).reduce((a, b) => a + b, 0);
  const lag = s.lag ? Object.values(s.lag).reduce((a, b) => a + b, 0) : null;
  $("#indicators").replaceChildren(
    card("Open incidents", element("div", {class: "num", id: "open-count", text: String(open)})),
    card("By severity", list(s.open_by_severity)),
    card("By domain", list(s.open_by_domain)),
    card("Dead letters, last hour", element("div", {class: "num",
      text: s.dead_letters_last_hour === null ? "—" : String(s.dead_letters_last_hour)})),
    card("Pipeline lag", element("div", {class: "num", text: lag === null ? "—" : String(lag)})),
    card("Alerts per hour", element("div", {class: "chart"}, chart(s.alerts_per_hour))));
}

// ---- live updates (Server-Sent Events over fetch, so the token travels in a header) ----

function setLive(kind, text) {
  const badge = $("#live");
  badge.className = `live ${kind}`;
  badge.textContent = text;
}

async function follow() {
  while (state.token) {
    const controller = new AbortController();
    state.stream = controller;
    try {
      const headers = {Authorization: `Bearer ${state.token}`};
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("/stream", {headers, signal: controller.signal});
      if (!response.ok) throw new Error(String(response.status));
      setLive("on", "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted || !state.token) return;
    }
    setLive("wait", "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function handleEvent(block) {
  let data = "", id = null, kind = "message";
  for (const line of block.split("\n")) {
    if (line.startsWith("data:")) data += line.slice(5).trim();
    else if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("event:")) kind = line.slice(6).trim();
  }
  if (id) state.lastEventId = id;
  if (kind !== "incident" || !data) return;
  const incident = JSON.parse(data);
  state.incidents.set(incident.id, incident);
  render();
  if (state.selected === incident.id && !$("#detail").hidden) showDetail(incident.id);
  loadSummary().catch(() => {});
}

// ---- start -------------------------------------------------------------------------

async function start() {
  setUpMap();
  await loadZones();
  await Promise.all([loadIncidents(), loadSummary()]);
  follow();
  setInterval(() => { if (state.token) loadSummary().catch(() => {}); }, 30000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("#token").value.trim());
  });
  $("#signout").addEventListener("click", () => signOut());
  $("#filters").addEventListener("change", (event) => {
    if (event.target.name === "text") render();
    else loadIncidents();
  });
  $("#filters").addEventListener("input", (event) => {
    if (event.target.name === "text") render();
  });
  $("#in-extent").addEventListener("change", render);
  $("#prev").addEventListener("click", () => { state.page -= 1; render(); });
  $("#next").addEventListener("click", () => { state.page += 1; render(); });
  for (const button of document.querySelectorAll("#list th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = {key, desc: state.sort.key === key ? !state.sort.desc : true};
      render();
    });
  }
  if (state.token) signIn(state.token);
});
