// weijian 巡查: the inspectors' pages. No framework: the pages are shells, this fills them from
// the task API with the access token kept in this tab's sessionStorage. Text from the server is
// always set as textContent, never as HTML.
"use strict";

const store = window.sessionStorage;
const SEV = { critical: "严重", warning: "警告", info: "提示" };
const STATUS = { open: "待认领", claimed: "处置中", resolved: "待办结", closed: "已办结" };
const ROLE = { inspector: "巡查员", duty_desk: "值班员", supervisor: "督导", team: "团队令牌" };
const ACTION = { created: "生成任务", claimed: "认领", photo_added: "上传照片", closed: "办结", reassigned: "改派",
  escalated: "任务超时升级", alert_escalated: "告警升级", alert_resolved: "告警恢复", alert_acknowledged: "告警确认" };
const FAILED = { 403: "无权进行此操作", 404: "任务不存在或不属于您的辖区", 409: "任务状态已变化，请刷新",
  413: "照片过大", 415: "仅支持 JPEG、PNG、WebP 照片", 503: "服务暂不可用，请稍后重试" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function say(text) { document.getElementById("message").textContent = text || ""; }

function when(ts) {
  if (!ts) return "—";
  return new Date(ts).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false });
}

function me() { try { return JSON.parse(store.getItem("wj.account") || "null"); } catch { return null; } }

function keep(tokens) {
  store.setItem("wj.access", tokens.access_token);
  store.setItem("wj.refresh", tokens.refresh_token);
  store.setItem("wj.account", JSON.stringify(tokens.account));
}

function toLogin() { store.clear(); window.location.assign("/app/login"); }

async function refresh() {
  const token = store.getItem("wj.refresh");
  if (!token) return false;
  const r = await fetch("/auth/refresh", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: token }) });
  if (!r.ok) return false;
  keep(await r.json());
  return true;
}

async function api(path, options = {}, again = true) {
  const headers = Object.assign({}, options.headers || {});
  const token = store.getItem("wj.access");
  if (token) headers.Authorization = "Bearer " + token;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.json) });
  }
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401 && again && await refresh()) return api(path, options, false);
  if (r.status === 401) { toLogin(); throw new Error("login required"); }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch { /* not JSON */ }
    const known = FAILED[r.status];
    throw new Error(known || (typeof detail === "string" ? detail : "输入有误（" + r.status + "）"));
  }
  return r;
}

async function json(path, options) { return (await api(path, options)).json(); }

function taskItem(t) {
  const overdue = t.status !== "closed" && new Date(t.due_at) < new Date();
  return el("li", { "data-task": t.id },
    el("a", { href: "/app/task/" + t.id },
      el("span", { class: "sev " + t.severity }, SEV[t.severity] || t.severity), " ",
      el("strong", {}, t.title),
      el("div", {}, (t.site && t.site.name) || t.site_id),
      el("div", {}, "状态：", STATUS[t.status] || t.status, t.assignee ? "（" + t.assignee + "）" : ""),
      el("div", {}, "告警时间：", when(t.created_at)),
      el("div", { class: overdue ? "overdue" : "" }, "办结时限：", when(t.due_at), overdue ? "（已超时）" : "")));
}

function list(tasks, empty) {
  const ul = document.getElementById("tasks");
  ul.replaceChildren(...tasks.map(taskItem));
  if (!tasks.length) ul.append(el("li", {}, empty));
}

const pages = {
  async login() {
    document.getElementById("login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const form = new FormData(e.target);
      const r = await fetch("/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: form.get("username"), password: form.get("password") }) });
      if (r.ok) { keep(await r.json()); window.location.assign("/app/"); return; }
      say({ 401: "用户名或密码错误", 403: "账号已停用，请联系信息科", 429: "登录失败次数过多，请稍后再试" }[r.status]
        || "登录失败（" + r.status + "）");
    });
  },
  async queue() {
    const account = me();
    const open = await json("/tasks?status=open");
    const mine = account ? await json("/tasks?status=claimed&mine=true") : [];
    list([...mine, ...open], "暂无待办任务");
  },
  async history() { list(await json("/tasks?mine=true"), "暂无任务记录"); },
  async desk() { list(await json("/desk/tasks"), "辖区暂无未办结任务"); },
  async task() {
    const id = document.body.dataset.task;
    const t = await json("/tasks/" + id);
    const account = me();
    const role = account ? account.role : "team";
    const site = t.site || {};
    const box = document.getElementById("task");
    box.replaceChildren(
      el("h2", {}, el("span", { class: "sev " + t.severity }, SEV[t.severity] || t.severity), " ", t.title),
      el("p", {}, t.description),
      el("dl", {},
        el("dt", {}, "状态"), el("dd", { id: "status" }, STATUS[t.status] || t.status),
        el("dt", {}, "处置人"), el("dd", { id: "assignee" }, t.assignee || "—"),
        el("dt", {}, "监测点"), el("dd", {}, site.name || t.site_id),
        el("dt", {}, "地址"), el("dd", {}, site.address || "—", " ",
          site.map_url ? el("a", { href: site.map_url, target: "_blank", rel: "noopener" }, "地图") : ""),
        el("dt", {}, "告警时间"), el("dd", {}, when(t.created_at)),
        el("dt", {}, "办结时限"), el("dd", {}, when(t.due_at)),
        el("dt", {}, "结论"), el("dd", { id: "finding" }, t.evidence && t.evidence.finding_text
          ? t.evidence.finding_text + "。" + (t.finding || "") : (t.finding || "—"))));
    document.getElementById("audit").replaceChildren(...(t.audit || []).map(
      (a) => el("li", {}, when(a.at), " ", a.actor === "system" ? "系统" : a.actor, " ",
        ACTION[a.action] || a.action, a.detail ? "：" + a.detail : "")));
    chart(id);
    const claim = document.getElementById("claim");
    if (t.status === "open" && role !== "supervisor") {
      claim.hidden = false;
      claim.onclick = async () => {
        try { await api("/tasks/" + id + "/claim", { method: "POST", json: {} }); window.location.reload(); }
        catch (err) { say("认领失败：" + err.message); }
      };
    }
    const mineToClose = t.status === "claimed" && (role === "duty_desk" || role === "team"
      || (account && t.assignee === account.username));
    if (mineToClose) closing(id, t);
    if (t.status !== "closed" && (role === "duty_desk" || role === "supervisor")) reassigning(id, t);
    if (t.status === "closed") {
      const link = document.getElementById("evidence");
      link.hidden = false;
      link.href = "#";
      link.onclick = async (e) => {
        e.preventDefault();
        const blob = await (await api("/tasks/" + id + "/evidence.zip")).blob();
        const a = el("a", { href: URL.createObjectURL(blob), download: "task-" + id + "-evidence.zip" });
        document.body.append(a); a.click(); a.remove();
      };
    }
  },
};

async function chart(id) {
  const note = document.getElementById("chart-note");
  let data;
  try { data = await json("/tasks/" + id + "/readings"); } catch (err) { note.textContent = "读数暂不可用：" + err.message; return; }
  const pts = data.points || [];
  if (!pts.length) { note.textContent = "无读数"; return; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const lo = Math.min(...ys, data.threshold ?? Infinity), hi = Math.max(...ys, data.threshold ?? -Infinity);
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const X = (x) => 10 + (x - x0) / (x1 - x0) * 300, Y = (y) => 130 - (y - lo) / ((hi - lo) || 1) * 120;
  const svg = document.getElementById("chart");
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#0b5cad"); line.setAttribute("stroke-width", "1.5");
  svg.replaceChildren(line);
  if (data.threshold !== null && data.threshold !== undefined) {
    const limit = document.createElementNS(ns, "line");
    for (const [k, v] of [["x1", 10], ["x2", 310], ["y1", Y(data.threshold)], ["y2", Y(data.threshold)]]) limit.setAttribute(k, v);
    limit.setAttribute("stroke", "#c62828"); limit.setAttribute("stroke-dasharray", "4 3");
    svg.append(limit);
  }
  const top = Math.max(...ys);
  note.textContent = (data.title || data.metric) + "：" + pts.length + " 个读数，最高 "
    + (Math.round(top * 100) / 100) + " " + (data.unit || "")
    + (data.threshold !== null && data.threshold !== undefined ? "，限值 " + data.threshold : "");
}

function closing(id, t) {
  const form = document.getElementById("close-form");
  form.hidden = false;
  const photos = [];
  let position = null;
  form.photo.addEventListener("change", async () => {
    for (const file of form.photo.files) {
      const body = new FormData();
      body.append("photo", file);
      try {
        const p = await json("/tasks/" + id + "/photos", { method: "POST", body });
        photos.push(p.sha256);
        document.getElementById("photos").append(el("li", {}, file.name, "（", Math.round(p.size / 1024), " KB，SHA-256 ", p.sha256.slice(0, 12), "…）"));
      } catch (err) { say("照片上传失败：" + err.message); }
    }
    form.photo.value = "";
  });
  document.getElementById("locate").onclick = () => {
    if (!navigator.geolocation) { say("此浏览器不能定位"); return; }
    navigator.geolocation.getCurrentPosition((pos) => {
      position = { gps: [pos.coords.latitude, pos.coords.longitude], gps_accuracy_m: pos.coords.accuracy,
        gps_at: new Date(pos.timestamp).toISOString() };
      document.getElementById("position").textContent = pos.coords.latitude.toFixed(5) + ", "
        + pos.coords.longitude.toFixed(5) + "（精度 " + Math.round(pos.coords.accuracy) + " 米）";
    }, (err) => say("定位失败：" + err.message), { enableHighAccuracy: true, timeout: 15000 });
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const evidence = Object.assign({ photos, on_site_from: t.claimed_at, on_site_to: new Date().toISOString() }, position || {});
    try {
      await api("/tasks/" + id + "/close", { method: "POST", json: {
        finding: form.finding.value, finding_code: form.finding_code.value, evidence } });
      window.location.reload();
    } catch (err) { say("办结失败：" + err.message); }
  });
}

async function reassigning(id, t) {
  const form = document.getElementById("reassign-form");
  let people = [];
  try { people = await json("/accounts"); } catch { return; }
  people = people.filter((p) => p.districts.includes(t.district) && p.username !== t.assignee);
  if (!people.length) return;
  form.hidden = false;
  form.assignee.replaceChildren(...people.map((p) => el("option", { value: p.username }, p.name + "（" + p.username + "）")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await api("/tasks/" + id + "/reassign", { method: "POST", json: { assignee: form.assignee.value } }); window.location.reload(); }
    catch (err) { say("改派失败：" + err.message); }
  });
}

async function start() {
  const page = document.body.dataset.page;
  if (page !== "login") {
    if (!store.getItem("wj.access")) { toLogin(); return; }
    const account = me();
    document.getElementById("who").textContent = account
      ? account.name + "（" + (ROLE[account.role] || account.role) + "）" : "";
    if (account && (account.role === "duty_desk" || account.role === "supervisor")) {
      for (const a of document.querySelectorAll(".desk-only")) a.hidden = false;
    }
    document.getElementById("logout").onclick = async () => {
      try { await api("/auth/logout", { method: "POST" }, false); } catch { /* logged out anyway */ }
      toLogin();
    };
  }
  try { await pages[page](); } catch (err) { if (err.message !== "login required") say("加载失败：" + err.message); }
}

start();
