// The reasonrag page: ask and watch the scored steps stream in, reject a step, browse predictions files.
// Every text from a corpus or a model goes in with textContent (never innerHTML): nothing it holds runs.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function fmt(x) {
  return typeof x === "number" ? x.toFixed(2) : "–";
}

// ---- one step, as the ask view and the predictions view show it --------------------------------------
function scoreBar(score) {
  const bar = el("span", { class: "bar" });
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.round(100 * Math.max(0, Math.min(1, score || 0)))}%`;
  bar.append(fill);
  return el("span", { class: "score", title: "PRM score" }, bar, el("span", { class: "score-value", text: fmt(score) }));
}

function observationList(step) {
  const obs = step.observation;
  if (!Array.isArray(obs)) return el("p", { class: "observation", text: String(obs ?? "") });
  const list = el("ul", { class: "observation" });
  for (const item of obs) {
    const title = el("b", { text: String(item.title ?? "") });
    list.append(el("li", {}, title, document.createTextNode(`: ${item.text ?? ""}`)));
  }
  return list;
}

function critic(step) {
  if (!Array.isArray(step.critic) || !step.critic.length) return null;
  const list = el("ul", { class: "critic" });
  for (const c of step.critic) {
    const chosen = c.text === step.action;
    list.append(el("li", { class: chosen ? "chosen" : "" }, el("span", { text: String(c.text) }), scoreBar(c.score)));
  }
  return el("details", {}, el("summary", { text: `critic: ${step.critic.length} alternatives scored` }), list);
}

function stepItem(step, number) {
  const head = el(
    "div",
    { class: "step-head" },
    el("span", { class: `stage ${step.stage}`, text: `${number}. ${step.stage}` }),
    el("span", { class: "action", text: String(step.action ?? "") }),
    scoreBar(step.score),
  );
  const what = step.stage === "retrieve" ? "passages" : step.stage === "extract" ? "kept evidence" : "decision";
  const body = el("div", { class: "step-body" }, el("div", { class: "muted", text: what }), observationList(step), critic(step));
  return el("li", { class: "step", "data-stage": step.stage }, head, body);
}

// ---- ask, stream, reject ----------------------------------------------------------------------------
const state = { thread: null, busy: false };

async function streamRun(url, body) {
  state.busy = true;
  document.getElementById("ask-button").disabled = true;
  document.getElementById("status").textContent = "working…";
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.error || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, cut);
        buffered = buffered.slice(cut + 1);
        if (line.trim()) handle(JSON.parse(line));
      }
    }
  } catch (err) {
    document.getElementById("status").textContent = `error: ${err.message}`;
  } finally {
    state.busy = false;
    document.getElementById("ask-button").disabled = false;
  }
}

function stepsList() {
  return document.getElementById("steps");
}

function handle(event) {
  const steps = stepsList();
  if (event.thread) state.thread = event.thread;
  if (event.step) {
    const number = steps.querySelectorAll("li.step").length + 1;
    steps.append(stepItem(event.step, number));
  }
  if (event.backtrack) {
    const b = event.backtrack;
    const kept = [...steps.querySelectorAll("li.step")].slice(0, b.to_step - 1);
    steps.replaceChildren(...kept);
    steps.append(el("li", { class: "backtrack", text: `back to step ${b.to_step} (${b.stage}): ${b.reason}; now trying ${b.now_trying}` }));
  }
  if (event.error) document.getElementById("status").textContent = event.error;
  if (event.final) finish(event.final);
}

function finish(final) {
  const status = document.getElementById("status");
  status.textContent = `${final.steps.length} steps, ${final.backtracks} backtrack(s)` +
    (typeof final.path_score === "number" ? `, path score ${fmt(final.path_score)}` : "");
  const answer = document.getElementById("answer");
  answer.hidden = false;
  answer.replaceChildren(el("span", { class: "muted", text: "Answer: " }), el("strong", { id: "answer-text", text: String(final.answer) }));
  // Only the path's own steps stay, numbered, each with its reject button where it has an alternative.
  const items = final.steps.map((step, i) => stepItem(step, i + 1));
  items.forEach((item, i) => {
    const n = final.alternatives[i] || 0;
    const button = el("button", {
      type: "button",
      class: "reject",
      text: n ? `reject (${n} other)` : "no alternative",
      onclick: () => {
        if (!state.busy) streamRun("/api/reject", { thread: state.thread, step: i + 1 });
      },
    });
    button.disabled = !n;
    item.querySelector(".step-head").append(button);
  });
  const banners = [...stepsList().querySelectorAll("li.backtrack")];
  stepsList().replaceChildren(...items, ...banners);
}

document.getElementById("ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const question = document.getElementById("question").value.trim();
  if (!question || state.busy) return;
  stepsList().replaceChildren();
  document.getElementById("answer").hidden = true;
  streamRun("/api/ask", { question });
});

// ---- predictions ------------------------------------------------------------------------------------
const files = { a: null, b: null };

function parseJsonl(text) {
  const records = [];
  let bad = 0;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line);
      if (r && typeof r === "object" && "id" in r && Array.isArray(r.steps)) records.push(r);
      else bad += 1;
    } catch {
      bad += 1;
    }
  }
  return { records, bad, byId: new Map(records.map((r) => [String(r.id), r])) };
}

function chart(record) {
  const steps = record.steps || [];
  const w = Math.max(24, 8 * steps.length);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", "24");
  svg.setAttribute("role", "img");
  steps.forEach((s, i) => {
    const h = Math.max(1, Math.round(22 * (typeof s.score === "number" ? s.score : 0)));
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", String(8 * i));
    bar.setAttribute("y", String(24 - h));
    bar.setAttribute("width", "6");
    bar.setAttribute("height", String(h));
    bar.setAttribute("class", s.stage);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${i + 1}. ${s.stage}: ${fmt(s.score)}`;
    bar.append(title);
    svg.append(bar);
  });
  return svg;
}

function answerCell(record) {
  if (!record) return el("td", { class: "muted", text: "(not in this file)" });
  const mark = record.em >= 1 ? "right" : "wrong";
  return el("td", { class: mark }, el("span", { class: "mark", text: mark === "right" ? "✓ " : "✗ " }),
    el("span", { class: "answer", text: String(record.answer ?? "") }), el("br"), chart(record));
}

function corpusOf(r) {
  return (r.setting && r.setting.corpus) || "";
}

function passes(r, f) {
  if (f.corpus && corpusOf(r) !== f.corpus) return false;
  if (f.wrong && r.em >= 1) return false;
  const steps = (r.steps || []).filter((s) => !f.stage || s.stage === f.stage);
  if (f.stage && !steps.length) return false;
  if (f.score < 1 && !steps.some((s) => typeof s.score === "number" && s.score <= f.score)) return false;
  return true;
}

function renderPredictions() {
  const body = document.querySelector("#questions tbody");
  body.replaceChildren();
  if (!files.a) return;
  const f = {
    corpus: document.getElementById("filter-corpus").value,
    stage: document.getElementById("filter-stage").value,
    score: Number(document.getElementById("filter-score").value),
    wrong: document.getElementById("filter-wrong").checked,
  };
  document.getElementById("head-b").hidden = !files.b;
  const rows = files.a.records.filter((r) => passes(r, f));
  rows.sort((x, y) => x.em - y.em || x.f1 - y.f1 || String(x.id).localeCompare(String(y.id)));
  const right = files.a.records.filter((r) => r.em >= 1).length;
  let summary = `${rows.length} of ${files.a.records.length} questions shown; EM ${(100 * right / Math.max(1, files.a.records.length)).toFixed(1)}`;
  if (files.b) {
    const shared = files.a.records.filter((r) => files.b.byId.has(String(r.id)));
    const rightB = shared.filter((r) => files.b.byId.get(String(r.id)).em >= 1).length;
    const rightA = shared.filter((r) => r.em >= 1).length;
    summary += `; on the ${shared.length} questions of both files: EM ${(100 * rightA / Math.max(1, shared.length)).toFixed(1)} against ${(100 * rightB / Math.max(1, shared.length)).toFixed(1)}`;
  }
  if (files.a.bad) summary += `; ${files.a.bad} unreadable line(s) skipped`;
  document.getElementById("summary").textContent = summary;
  for (const r of rows) {
    const other = files.b ? files.b.byId.get(String(r.id)) : null;
    const row = el("tr", { class: "question" },
      el("td", { text: String(r.question ?? r.id) }),
      el("td", { text: (r.golden_answers || []).join(" | ") }),
      answerCell(r));
    if (files.b) row.append(answerCell(other));
    const detail = el("tr", { class: "detail" });
    detail.hidden = true;
    const cell = el("td", { colspan: files.b ? "4" : "3" });
    const paths = el("div", { class: "paths" });
    for (const [name, rec] of [["path", r], ["compared path", other]]) {
      if (!rec) continue;
      const list = el("ol", { class: "steps" });
      rec.steps.forEach((s, i) => list.append(stepItem(s, i + 1)));
      paths.append(el("div", {}, el("h3", { text: name }), list));
    }
    cell.append(paths);
    detail.append(cell);
    row.addEventListener("click", () => { detail.hidden = !detail.hidden; });
    body.append(row, detail);
  }
}

function loadFile(input, key) {
  const file = input.files && input.files[0];
  if (!file) { files[key] = null; renderPredictions(); return; }
  const reader = new FileReader();
  reader.onload = () => {
    files[key] = parseJsonl(String(reader.result));
    if (key === "a") {
      const select = document.getElementById("filter-corpus");
      const corpora = [...new Set(files.a.records.map(corpusOf).filter(Boolean))].sort();
      select.replaceChildren(el("option", { value: "", text: "all" }), ...corpora.map((c) => el("option", { value: c, text: c })));
    }
    renderPredictions();
  };
  reader.readAsText(file);
}

document.getElementById("file-a").addEventListener("change", (e) => loadFile(e.target, "a"));
document.getElementById("file-b").addEventListener("change", (e) => loadFile(e.target, "b"));
for (const id of ["filter-corpus", "filter-stage", "filter-score", "filter-wrong"]) {
  document.getElementById(id).addEventListener("input", renderPredictions);
}

// ---- tabs and info ------------------------------------------------------------------------------------
function show(view) {
  for (const name of ["ask", "predictions"]) {
    document.getElementById(`view-${name}`).hidden = name !== view;
    document.getElementById(`tab-${name}`).classList.toggle("active", name === view);
  }
}
document.getElementById("tab-ask").addEventListener("click", () => show("ask"));
document.getElementById("tab-predictions").addEventListener("click", () => show("predictions"));

fetch("/api/info").then((r) => r.json()).then((info) => {
  document.getElementById("info").textContent = `corpus ${info.corpus}` + (info.scored ? ", steps scored by the PRM" : ", no PRM");
}).catch(() => {});
