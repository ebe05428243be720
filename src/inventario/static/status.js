// inventario status page: polls status/data every second and redraws in place.
// Plain browser JavaScript, no build step, no dependencies. Every value from the
// server is inserted as text (textContent / text nodes), never parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 4000;
  const DATA_URL = "status/data";
  const LEVELS = ["OPTIMAL", "DEGRADED", "LIMITED", "MINIMAL", "EMERGENCY"];
  // The admin token, for the detailed view: in this tab's sessionStorage only (gone when
  // the tab closes), sent as a bearer header to status/data and nowhere else.
  const TOKEN_KEY = "inventario.status.adminToken";

  const $ = (id) => document.querySelector('[data-testid="' + id + '"]');

  let lastOk = null; // Date of the last successful poll
  const drawnFrom = {}; // section -> the JSON text it was last drawn from

  // ------------------------------------------------------------- helpers

  // el("div", {class: "x", testid: "y", data: {state: "open"}}, "text", childNode, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null) continue;
        if (key === "class") node.className = value;
        else if (key === "testid") node.setAttribute("data-testid", value);
        else if (key === "data") {
          for (const [k, v] of Object.entries(value)) node.setAttribute("data-" + k, String(v));
        } else node.setAttribute(key, String(value));
      }
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  function pct(x) {
    if (!isNum(x)) return "—";
    const p = x * 100;
    return (p >= 99.95 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + " %";
  }

  function ms(x) {
    if (!isNum(x)) return "—";
    if (x < 10) return x.toFixed(2) + " ms";
    if (x < 1000) return x.toFixed(0) + " ms";
    return (x / 1000).toFixed(2) + " s";
  }

  function bytes(n) {
    if (!isNum(n)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }

  function seconds(s) {
    if (!isNum(s)) return "—";
    if (s < 1) return "< 1 s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  // a time people read: with its date and time zone (the page may be read from anywhere)
  function clock(epoch) {
    if (!isNum(epoch)) return "—";
    return new Date(epoch * 1000).toLocaleString([], {
      year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hour12: false, timeZoneName: "short",
    });
  }

  function num(n) {
    return isNum(n) ? n.toLocaleString() : "—";
  }

  function fig(label, value, testid) {
    return el("div", null, el("dt", null, label), el("dd", { testid: testid }, value));
  }

  // ------------------------------------------------------------- details

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (err) {
      return ""; // storage disabled: the public view only
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      // storage disabled: nothing is kept
    }
  }

  function setRefused(text) {
    const refused = $("token-refused");
    refused.textContent = text || "";
    refused.hidden = !text;
  }

  // The public document says "details": false (and what is hidden); the detailed one true.
  function renderDetails(doc) {
    const shown = doc.details === true;
    $("details-shown").hidden = !shown;
    $("details-hidden").hidden = shown;
    if (shown) {
      setRefused("");
      return;
    }
    const available = doc.details_available !== false;
    $("token-form").hidden = !available;
    $("token-note").hidden = !available;
    $("details-notice").textContent = available
      ? "Details hidden: error texts, adapter settings (paths, hosts, users, buckets) and the " +
        "reasons of dead letters and failed uploads are shown with the admin token."
      : "Details hidden: the service has no ADMIN_TOKEN, so error texts, adapter settings " +
        "and failure reasons are in its log only.";
  }

  function wireDetails() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault(); // the page's CSP allows no form submission anyway
      const input = $("token-input");
      const token = input.value.trim();
      input.value = "";
      if (!token) return;
      storeToken(token);
      setRefused("");
      pollSoon();
    });
    $("token-forget").addEventListener("click", () => {
      storeToken("");
      pollSoon();
    });
  }

  // ---------------------------------------------------------------- hero

  function renderHero(doc) {
    const level = LEVELS.includes(doc.level) ? doc.level : "UNKNOWN";
    document.body.setAttribute("data-level", level);
    const levelNode = $("level");
    levelNode.textContent = String(doc.level || "?");
    levelNode.setAttribute("data-level", level);
    document.title = String(doc.level || "?") + " · inventario status";

    $("score").textContent = isNum(doc.score) ? doc.score.toFixed(1) : "–";
    const width = isNum(doc.score) ? Math.max(0, Math.min(100, doc.score)) : 0;
    $("score-bar").style.width = width + "%"; // CSSOM, allowed by the page's CSP

    const explanation = doc.explanation || {};
    $("decision").textContent = explanation.decision ? String(explanation.decision) : "";

    const pinned = $("pinned");
    if (doc.pinned) {
      pinned.textContent =
        "Pinned at " + doc.pinned.level + " for " + seconds(doc.pinned.seconds_left) +
        " more: " + doc.pinned.reason;
      pinned.hidden = false;
    } else {
      pinned.hidden = true;
      pinned.textContent = "";
    }

    const recovery = $("recovery");
    if (isNum(doc.predicted_recovery_s)) {
      recovery.textContent =
        "Predicted recovery to OPTIMAL in about " + seconds(doc.predicted_recovery_s) +
        " (from past recoveries)";
      recovery.hidden = false;
    } else {
      recovery.hidden = true;
      recovery.textContent = "";
    }

    const service = doc.service || {};
    $("version").textContent = service.version ? "v" + service.version : "";
  }

  // ----------------------------------------------------------- components

  function adapterFigures(name, a) {
    const out = [];
    if (!a) return out;
    if ("hit_ratio" in a) out.push(fig("cache hit ratio", pct(a.hit_ratio), "hit-ratio-" + name));
    if ("bytes_up" in a || "bytes_down" in a) {
      out.push(fig("bytes up", bytes(a.bytes_up)));
      out.push(fig("bytes down", bytes(a.bytes_down)));
    }
    const totals = a.totals || {};
    if (a.kind === "openai" || isNum(totals.prompt_tokens) || isNum(totals.completion_tokens)) {
      out.push(fig("tokens in", num(totals.prompt_tokens || 0)));
      out.push(fig("tokens out", num(totals.completion_tokens || 0)));
    }
    if (isNum(a.pool_in_use) || isNum(a.pool_size)) {
      const size = isNum(a.pool_size) ? " / " + a.pool_size : "";
      out.push(fig("pool in use", num(a.pool_in_use) + size, "pool-" + name));
    }
    if (a.model) out.push(fig("model", String(a.model)));
    if (a.bucket) out.push(fig("bucket", String(a.bucket)));
    if (a.dialect) out.push(fig("database", String(a.dialect) + (a.driver ? " (" + a.driver + ")" : "")));
    return out;
  }

  function breakerNode(name, b) {
    if (!b) return el("span", { class: "breaker", testid: "breaker-" + name, data: { state: "none" } }, "none");
    const state = String(b.state || "?");
    const extra = [];
    if ((state === "open" || state === "forced_open") && isNum(b.retry_after)) {
      extra.push("retry in " + seconds(b.retry_after));
    }
    if (isNum(b.trips) && b.trips > 0) extra.push(b.trips + (b.trips === 1 ? " trip" : " trips"));
    return el(
      "span",
      null,
      el("span", { class: "breaker", testid: "breaker-" + name, data: { state: state } }, state),
      extra.length ? el("span", { class: "breaker-extra" }, " · " + extra.join(" · ")) : null
    );
  }

  function componentCard(c) {
    const name = String(c.name);
    const a = c.adapter || null;
    const b = c.breaker || null;
    const status = c.configured ? String(c.status || "unknown") : "absent";
    const card = el("article", {
      class: "card comp",
      testid: "component-" + name,
      data: { status: status, breaker: b ? b.state : "none" },
    });
    card.append(
      el(
        "header",
        null,
        el("h3", null, name),
        el("span", { class: "badge", testid: "status-" + name, data: { status: status } },
          c.configured ? status : "not configured")
      )
    );
    if (!c.configured) {
      card.append(el("p", { class: "why" }, "Not configured: the service runs without it."));
      return card;
    }
    const sub = [];
    if (a && a.kind) sub.push(String(a.kind));
    if (isNum(c.score)) sub.push("score " + c.score.toFixed(0));
    if (isNum(c.weight)) sub.push("weight " + c.weight);
    if (c.cascade_of) sub.push("cascade of " + c.cascade_of);
    card.append(el("div", { class: "sub" }, sub.join(" · ")));

    const figs = el("dl", { class: "figs" });
    figs.append(
      el("div", null, el("dt", null, "breaker"), el("dd", null, breakerNode(name, b))),
      fig("success rate", pct(a ? a.success_rate : b ? (b.failure_rate === null ? null : 1 - b.failure_rate) : null), "success-" + name),
      fig("p95 latency", ms(a ? a.latency_p95_ms : null), "p95-" + name)
    );
    for (const f of adapterFigures(name, a)) figs.append(f);
    if (c.probe) {
      figs.append(fig("last probe", c.probe.ok === null || c.probe.ok === undefined ? "—" : c.probe.ok ? "ok" : "failed"));
    }
    card.append(figs);

    if (Array.isArray(c.why) && c.why.length) card.append(el("p", { class: "why" }, c.why.join("; ")));
    else if (!("why" in c) && c.status && c.status !== "up") {
      card.append(el("p", { class: "why", testid: "why-hidden-" + name }, "the reason is shown with the admin token"));
    }
    const error = (a && a.last_error) || (b && b.last_error) || (c.probe && c.probe.error) || null;
    if (error) {
      const at = a && isNum(a.last_error_at) ? " (" + clock(a.last_error_at) + ")" : "";
      card.append(el("p", { class: "error", testid: "error-" + name }, "last error" + at + ": " + error));
    }
    return card;
  }

  function backlogCards(backlogs) {
    const out = [];
    if (!backlogs || typeof backlogs !== "object") return out;
    if (backlogs.error) {
      out.push(el("article", { class: "card backlog", testid: "backlog-error" },
        el("header", null, el("h3", null, "backlogs")), el("p", { class: "error" }, String(backlogs.error))));
    }
    const o = backlogs.outbox;
    if (o) out.push(outboxCard(o));
    const s = backlogs.spool;
    if (s) out.push(spoolCard(s));
    return out;
  }

  // The outbox: writes answered 202 until the database takes them. "waiting" while the
  // database cannot (they are kept, never given up on); "failed" while dead letters
  // (writes the database refused for good) wait for an operator, with their reasons.
  function outboxCard(o) {
    const dead = isNum(o.dead_letters) ? o.dead_letters : 0;
    const pending = isNum(o.pending) ? o.pending : 0;
    const state = dead > 0 ? "failed" : o.waiting ? "waiting" : pending > 0 ? "busy" : "idle";
    const sub = o.waiting
      ? "writes waiting for the database: kept, and applied once when it takes them"
      : "writes queued while the database is away";
    const card = el("article", { class: "card backlog", testid: "backlog-outbox",
        data: { busy: pending > 0 || dead > 0, state: state } },
      el("header", null, el("h3", null, "outbox"),
        el("span", { class: "badge" }, dead > 0 ? "dead letters" : "backlog")),
      el("div", { class: "sub", testid: "outbox-sub" }, sub),
      el("dl", { class: "figs" },
        fig("pending", num(o.pending), "outbox-pending"),
        fig("pending size", bytes(o.pending_bytes)),
        fig("oldest pending", seconds(o.oldest_pending_age_s)),
        fig("replayed", num(o.replayed_total)),
        fig("dead letters", num(dead), "outbox-dead"),
        fig("limit", num(o.max_pending))));
    if (dead > 0 && !Array.isArray(o.recent_dead)) {
      card.append(el("p", { class: "error" }, "refused for good by the database: their reasons " +
        "are shown with the admin token (inventario outbox list)"));
    } else if (dead > 0) {
      const list = el("ul", { class: "failures", testid: "outbox-failures" });
      for (const d of o.recent_dead) {
        if (!d || typeof d !== "object") continue;
        list.append(el("li", null, String(d.key || "") + " (" + String(d.operation || "") + "): " +
          String(d.reason || "")));
      }
      card.append(
        el("p", { class: "error" }, "refused for good by the database: retry them once the cause is " +
          "fixed, or discard them (inventario outbox list)"),
        list);
    }
    return card;
  }

  // The spool: without S3 it is where invoice files live (not a backlog to worry about);
  // with S3, files its bucket refused for good are "failed", with the reasons.
  function spoolCard(s) {
    const local = s.s3_configured === false;
    const failed = isNum(s.failed) ? s.failed : 0;
    const state = failed > 0 ? "failed" : local ? "local" : (s.files || 0) > 0 ? "busy" : "idle";
    const sub = local
      ? "S3 is not configured: invoice files are kept here, and go to the bucket configured later"
      : "uploads kept locally until S3 takes them" + (s.s3_bucket ? " (bucket " + s.s3_bucket + ")" : "");
    const card = el("article", { class: "card backlog", testid: "backlog-spool",
        data: { busy: state === "busy" || state === "failed", state: state } },
      el("header", null, el("h3", null, "spool"),
        el("span", { class: "badge", testid: "spool-badge" }, local ? "local store" : failed > 0 ? "failed" : "backlog")),
      el("div", { class: "sub", testid: "spool-sub" }, sub),
      el("dl", { class: "figs" },
        fig("files", num(s.files), "spool-files"),
        fig("size", bytes(s.bytes)),
        fig(local ? "oldest kept" : "oldest", seconds(s.oldest_age_s)),
        fig("failed", num(failed), "spool-failed"),
        fig("quarantined", num(s.quarantined))));
    if (failed > 0 && !Array.isArray(s.failures)) {
      card.append(el("p", { class: "error" }, "refused for good by their bucket: the reasons " +
        "are shown with the admin token (inventario spool list)"));
    } else if (failed > 0) {
      const failures = s.failures;
      const list = el("ul", { class: "failures", testid: "spool-failures" });
      for (const f of failures) {
        if (!f || typeof f !== "object") continue;
        list.append(el("li", null, num(f.count) + " × " + String(f.reason || "") +
          (f.destination ? " (e.g. " + f.destination + ")" : "")));
      }
      card.append(
        el("p", { class: "error" }, "refused for good by their bucket: retry, retarget or discard them (inventario spool list)"),
        list);
    }
    return card;
  }

  // Priority shedding at the edge: requests in flight, and which classes are refused now.
  function sheddingCard(s) {
    if (!s || typeof s !== "object") return [];
    const classes = Array.isArray(s.shedding) ? s.shedding : [];
    const shed = s.shed && typeof s.shed === "object" ? s.shed : {};
    const total = (c) => {
      const r = shed[c] && typeof shed[c] === "object" ? shed[c] : {};
      return (isNum(r.overload) ? r.overload : 0) + (isNum(r.level) ? r.level : 0);
    };
    const sub = s.disabled ? "off (BROWNOUT_DISABLED): every request is served"
      : classes.length ? "refusing " + classes.join(" and ") + " requests; critical ones are served"
      : "serving every request class";
    return [el("article", { class: "card backlog", testid: "shedding",
        data: { busy: classes.length > 0, state: classes.length ? "waiting" : "idle" } },
      el("header", null, el("h3", null, "load shedding"),
        el("span", { class: "badge" }, classes.length ? "shedding" : "admitting")),
      el("div", { class: "sub", testid: "shedding-sub" }, sub),
      el("dl", { class: "figs" },
        fig("in flight", num(s.in_flight) + " / " + num(s.max_in_flight), "shedding-in-flight"),
        fig("queueing delay", ms(s.delay_ms)),
        fig("shed (sheddable)", num(total("sheddable")), "shedding-shed-sheddable"),
        fig("shed (default)", num(total("default")), "shedding-shed-default"),
        fig("shed (critical)", num(total("critical")))),
      routesList(s.routes))];
  }

  // Which routes are in which class (ROUTE_CRITICALITY over inventario's own); a route
  // not listed is default.
  function routesList(routes) {
    if (!routes || typeof routes !== "object") return null;
    const names = (c) => (Array.isArray(routes[c]) ? routes[c].filter((r) => typeof r === "string") : []);
    const line = (c) => {
      const list = names(c);
      let text = list.join(", ");
      if (c === "default") text = list.length ? text + ", and every other route" : "every other route";
      else if (!list.length) text = "none";
      return el("li", { testid: "shedding-routes-" + c }, el("strong", null, c + ": "), text);
    };
    return el("ul", { class: "routes", testid: "shedding-routes" },
      line("critical"), line("default"), line("sheddable"));
  }

  function renderComponents(doc) {
    const cards = (doc.components || []).map(componentCard);
    $("components").replaceChildren(...cards, ...backlogCards(doc.backlogs),
      ...sheddingCard(doc.shedding));
  }

  // ------------------------------------------------------------- features

  function renderFeatures(doc) {
    const items = Object.entries(doc.features || {}).map(([name, f]) => {
      const on = Boolean(f && f.enabled);
      return el("li", { class: "feature", testid: "feature-" + name, data: { enabled: on } },
        el("span", { class: "state" }, on ? "ON" : "OFF"),
        el("span", { class: "fname" }, name),
        el("span", { class: "freason" },
          (f && f.description ? f.description : "") + (f && f.reason && !on ? " — " + f.reason : "")));
    });
    $("features").replaceChildren(...items);
  }

  // The level's resource settings: the row in force is marked; applied ones first.
  const SETTING_LABELS = [
    ["cache_ttl_s", "cache TTL (s)"], ["replay_batch", "outbox replay batch"],
    ["redis_admission", "Redis calls in flight"], ["redis_timeout_s", "Redis timeout (s)"],
    ["database_admission", "database transactions in flight"],
    ["database_timeout_s", "database statement timeout (s)"],
    ["s3_admission", "S3 calls in flight"], ["s3_timeout_s", "S3 timeout (s)"],
    ["s3_max_retries", "S3 retries"],
    ["openai_timeout_s", "OpenAI timeout (s)"], ["openai_max_retries", "OpenAI retries"]];

  function renderLevelSettings(doc) {
    const t = doc.level_settings;
    if (!t || !Array.isArray(t.levels)) {
      $("level-settings").replaceChildren(); $("level-settings-not-applied").textContent = ""; return;
    }
    const applied = Array.isArray(t.applied) ? t.applied : [];
    const cols = SETTING_LABELS.filter(([k]) => t.levels.some((r) => r && isNum(r[k])));
    const head = el("tr", null, el("th", null, "level"),
      ...cols.map(([k, label]) => el("th", null, label + (applied.includes(k) ? "" : " (shown only)"))));
    const rows = t.levels.filter((r) => r && typeof r === "object").map((r) =>
      el("tr", { testid: "level-settings-" + String(r.level),
          data: { current: String(r.level) === String(t.current) } },
        el("td", null, String(r.level)), ...cols.map(([k]) => el("td", null, num(r[k])))));
    $("level-settings").replaceChildren(el("thead", null, head), el("tbody", null, ...rows));
    const skipped = t.not_applied && typeof t.not_applied === "object" ? Object.entries(t.not_applied) : [];
    $("level-settings-not-applied").textContent = skipped.length
      ? "Not applied here: " + skipped.map(([k, why]) => k + " (" + String(why) + ")").join("; ") + "."
      : "";
  }

  // ------------------------------------------------------------- timeline

  function renderTimeline(doc) {
    const transitions = Array.isArray(doc.transitions) ? doc.transitions.slice().reverse() : [];
    const items = transitions.map((t) =>
      el("li", { data: { level: LEVELS.includes(t.to) ? t.to : "UNKNOWN" } },
        el("div", { class: "when" }, clock(t.at) + (isNum(t.score) ? " · score " + t.score.toFixed(1) : "")),
        el("div", { class: "change" }, String(t.from) + " → ", el("span", { class: "to" }, String(t.to))),
        el("div", { class: "reason" }, String(t.reason || "") +
          (Array.isArray(t.root_causes) && t.root_causes.length ? " (root cause: " + t.root_causes.join(", ") + ")" : "")))
    );
    $("timeline").replaceChildren(...items);
    $("timeline-empty").hidden = items.length > 0;
  }

  // -------------------------------------------------------------- polling

  function setConnection(state, text) {
    const conn = $("connection");
    conn.setAttribute("data-state", state);
    $("connection-text").textContent = text;
    $("connection-lost").hidden = state !== "lost";
    document.body.setAttribute("data-connection", state);
  }

  // Most polls change a few figures only: a list is rebuilt when its own data changed,
  // not every second (rebuilding churns the DOM and loses the reader's text selection).
  function changed(section, data) {
    const text = JSON.stringify(data === undefined ? null : data);
    if (drawnFrom[section] === text) return false;
    drawnFrom[section] = text;
    return true;
  }

  function render(doc) {
    renderDetails(doc);
    renderHero(doc);
    if (changed("components", [doc.components, doc.backlogs, doc.shedding])) renderComponents(doc);
    if (changed("features", doc.features)) renderFeatures(doc);
    if (changed("level-settings", doc.level_settings)) renderLevelSettings(doc);
    if (changed("timeline", doc.transitions)) renderTimeline(doc);
    lastOk = new Date();
    $("updated").textContent = clock(lastOk.getTime() / 1000);
  }

  let timer = null; // the next poll
  let polling = false; // a poll is in flight
  let again = false; // poll once more as soon as the one in flight ends

  // A poll now (the token changed), without a second loop: one poll is in flight at most.
  function pollSoon() {
    if (polling) {
      again = true;
      return;
    }
    clearTimeout(timer);
    poll();
  }

  async function poll() {
    polling = true;
    const controller = new AbortController();
    const abort = setTimeout(() => controller.abort(), TIMEOUT_MS);
    const token = storedToken();
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const response = await fetch(DATA_URL, {
        cache: "no-store",
        headers: headers,
        signal: controller.signal,
      });
      if (token && (response.status === 401 || response.status === 403)) {
        // a wrong token: forget it, say so, and show what anyone may see
        storeToken("");
        setRefused("The admin token was refused (HTTP " + response.status + "): it is " +
          "forgotten; showing what anyone may see.");
        again = true;
        setConnection("live", "live");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const doc = await response.json();
      render(doc);
      setConnection("live", "live");
    } catch (err) {
      $("last-update").textContent = lastOk ? clock(lastOk.getTime() / 1000) : "never";
      setConnection("lost", "connection lost (" + (err && err.name === "AbortError" ? "timeout" : String(err && err.message ? err.message : err)) + ")");
    } finally {
      clearTimeout(abort);
      polling = false;
      const soon = again;
      again = false;
      timer = setTimeout(poll, soon ? 0 : POLL_MS);
    }
  }

  wireDetails();
  poll();
})();
