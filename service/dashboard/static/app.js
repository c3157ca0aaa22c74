// The dashboard: a hash router over the views, each reading only the /v1 API.
import { ApiError, csvUrl, download, get, session } from "./api.js";
import { barChart, legend, lineChart } from "./charts.js";
import * as F from "./format.js";

const $ = (selector, root = document) => root.querySelector(selector);

// h("td", {class: "num"}, "12") -> <td class="num">12</td>. Attributes starting with "on"
// are listeners; `dataset` sets data-* attributes.
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

// --- filters -----------------------------------------------------------------------------

const filters = { interval: "month", start: "", end: "", currency: "", segment: "" };
const SEGMENT_PARAMS = { plan: "plan", billing_interval: "billing_interval", currency: "currency_code" };

function metricParams(extra = {}) {
  const p = { interval: filters.interval, start: filters.start, end: filters.end,
    currency: filters.currency };
  if (filters.segment) {
    const [kind, ...value] = filters.segment.split(":");
    p[SEGMENT_PARAMS[kind]] = value.join(":");
  }
  return { ...p, ...extra };
}

function addMonths(day, months) {
  const [y, m] = day.split("-").map(Number);
  const total = y * 12 + (m - 1) + months;
  return `${Math.floor(total / 12)}-${String((total % 12) + 1).padStart(2, "0")}-01`;
}

function nextDay(day) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

// The default window: the twelve months up to the newest event the metrics include (an
// account that stopped sending events still opens on its own last year, not on zeros).
async function defaultWindow() {
  const answer = await get("/v1/metrics/mrr", { interval: "month" });
  const last = (answer.as_of ?? answer.through ?? new Date().toISOString()).slice(0, 10);
  const end = addMonths(last.slice(0, 7) + "-01", 1);
  filters.end = end;
  filters.start = addMonths(end, -12);
}

async function loadFilterOptions() {
  const form = $("#filters");
  const rates = await get("/v1/fx-rates");
  const currency = form.elements.currency;
  currency.replaceChildren(h("option", { value: rates.reporting_currency },
    rates.reporting_currency.toUpperCase()));
  filters.currency = rates.reporting_currency.toLowerCase();
  // The segment values the metric tables know: one segment_by answer per kind.
  const segment = form.elements.segment;
  segment.replaceChildren(h("option", { value: "" }, "All customers"));
  for (const kind of ["plan", "billing_interval", "currency"]) {
    const answer = await get("/v1/metrics/mrr", metricParams({ segment_by: kind, plan: null,
      billing_interval: null, currency_code: null }));
    // The option filters by the id (`segment`) and reads as its name (`segment_label`).
    const labels = new Map(answer.data.filter((r) => r.segment)
      .map((r) => [r.segment, r.segment_label ?? r.segment]));
    const values = [...labels.keys()].sort();
    if (!values.length) continue;
    const group = h("optgroup", { label: kind.replace("_", " ") });
    for (const value of values) {
      const text = labels.get(value) === value ? value : `${labels.get(value)} (${value})`;
      group.append(h("option", { value: `${kind}:${value}` }, text));
    }
    segment.append(group);
  }
}

function syncFilterForm() {
  const form = $("#filters");
  for (const name of ["interval", "start", "end", "currency", "segment"]) {
    if (form.elements[name].value !== filters[name]) form.elements[name].value = filters[name];
  }
}

// --- shared pieces -----------------------------------------------------------------------

function freshness(answer) {
  const parts = [h("span", { class: "as-of" }, `as of ${F.timestamp(answer.as_of)}`)];
  if (answer.refreshed_at !== undefined) {
    parts.push(h("span", {}, ` · refreshed ${F.timestamp(answer.refreshed_at)}`));
  }
  if (answer.stale) parts.push(h("span", { class: "badge warn" }, "stale: a refresh is due"));
  const missing = answer.unconverted_currencies ?? [];
  if (missing.length) {
    parts.push(h("span", { class: "badge warn unconverted" },
      `left out, no FX rate: ${missing.map((c) => c.toUpperCase()).join(", ")}`));
  }
  return parts;
}

function csvLink(target, label = "Download CSV") {
  return h("a", { href: target, class: "csv", download: "",
    onclick: (event) => { event.preventDefault(); download(target).catch(fail); } }, label);
}

function card(title, { answer, csv, note, id, wide } = {}, ...body) {
  return h("section", { class: wide ? "card wide" : "card", id, "aria-label": title },
    h("header", {}, h("h2", {}, title),
      h("p", { class: "meta" }, answer ? freshness(answer) : null, answer && csv ? " · " : null,
        csv ? csvLink(csv) : null)),
    note ? h("p", { class: "note" }, note) : null,
    ...body);
}

function kpi(label, value, id) {
  return h("div", { class: "kpi", dataset: { kpi: id } }, h("span", { class: "label" }, label),
    h("span", { class: "value" }, value));
}

// columns: [{label, cell(row) -> text|Node, num?, key?}]. `stack`: at phone width each row
// becomes a block of "label: value" lines instead of a table to scroll sideways.
function table(columns, rows, { caption, id, stack } = {}) {
  return h("div", { class: "table-wrap", tabindex: "0", role: "region",
    "aria-label": caption ?? "table" },
    h("table", { id, class: stack ? "stack" : null },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col",
        class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", {
        class: c.num ? "num" : null,
        dataset: { ...(c.key ? { col: c.key } : {}), ...(stack ? { label: c.label } : {}) },
      }, c.cell(row))))))));
}

const moneyCell = (m) => h("span", { dataset: { amount: m?.amount ?? "" } }, F.moneyOf(m));
const customerLink = (id) => h("a", { href: `#/customer/${encodeURIComponent(id)}` }, id);
const eventIds = (ids) => h("span", { class: "events" }, ids.map((id) => h("code",
  { class: "event-id" }, id)));

function onlyWhole(answer) {
  // Segment filters narrow the rows; segment_by would add one row per value (not used here).
  return answer.data.filter((r) => r.segment === null || r.segment === undefined);
}

// A figure as a link to the customers and ledger rows behind it (/v1/metrics/explain).
function explainLink(metric, row, interval, content) {
  const params = { metric, period_start: row.period_start, interval };
  if (filters.segment) params.segment = filters.segment;
  return h("a", { href: `#/explain?${new URLSearchParams(params)}`, class: "explain",
    dataset: { explain: metric }, title: "The customers and ledger rows behind this figure" },
    content);
}

function drill(params) {
  location.hash = `#/movements?${new URLSearchParams(params)}`;
}

// --- views -------------------------------------------------------------------------------

const FLOWS = [
  { key: "new_mrr", name: "New", cls: "s-new" },
  { key: "expansion_mrr", name: "Expansion", cls: "s-expansion" },
  { key: "reactivation_mrr", name: "Reactivation", cls: "s-reactivation" },
  { key: "contraction_mrr", name: "Contraction", cls: "s-contraction" },
  { key: "churned_mrr", name: "Churn", cls: "s-churn" },
];

async function overview() {
  const [mrr, moves] = await Promise.all([
    get("/v1/metrics/mrr", metricParams()), get("/v1/metrics/movements", metricParams()),
  ]);
  const rows = onlyWhole(mrr);
  const flows = onlyWhole(moves);
  const cur = mrr.currency;
  const fmt = (v) => F.money(Math.round(v), cur);
  const labels = rows.map((r) => F.period(r.period_start, mrr.interval));
  const last = rows[rows.length - 1];
  return [
    h("h1", {}, "Overview"),
    h("div", { class: "kpis" },
      kpi("MRR", F.moneyOf(last?.mrr), "mrr"), kpi("ARR", F.moneyOf(last?.arr), "arr"),
      kpi("Customers", F.count(last?.customers), "customers"),
      kpi("ARPA", F.moneyOf(last?.arpa), "arpa")),
    h("div", { class: "grid" },
      card("MRR and ARR", { answer: mrr, csv: csvUrl("/v1/metrics/mrr", metricParams()),
        id: "card-mrr" },
        lineChart({ title: "MRR per period end", labels, format: fmt,
          series: [{ name: "MRR", cls: "s-mrr", values: rows.map((r) => r.mrr.amount) }] }),
        lineChart({ title: "ARR per period end", labels, format: fmt,
          series: [{ name: "ARR", cls: "s-arr", values: rows.map((r) => r.arr.amount) }] })),
      card("Movements", { answer: moves, csv: csvUrl("/v1/metrics/movements", metricParams()),
        id: "card-movements",
        note: "Gains stack up, losses down. Select a bar for the ledger rows behind it." },
        legend(FLOWS),
        barChart({ title: "MRR movements per period", format: fmt,
          bars: flows.map((r) => ({
            label: F.period(r.period_start, moves.interval),
            segments: FLOWS.map((f) => ({ name: f.name, cls: f.cls, value: r[f.key].amount })),
            onSelect: () => drill({ start: r.period_start, end: r.period_end }),
            describe: `${F.period(r.period_start, moves.interval)}: show its ledger rows`,
          })) })),
      card("MRR, ARR, customers and ARPA", { answer: mrr, wide: true, id: "card-mrr-table",
        csv: csvUrl("/v1/metrics/mrr", metricParams()) },
        table([
          { label: "Period", cell: (r) => F.period(r.period_start, mrr.interval), key: "period" },
          { label: "MRR", cell: (r) => moneyCell(r.mrr), num: true, key: "mrr" },
          { label: "ARR", cell: (r) => moneyCell(r.arr), num: true, key: "arr" },
          { label: "Customers", cell: (r) => F.count(r.customers), num: true, key: "customers" },
          { label: "ARPA", cell: (r) => moneyCell(r.arpa), num: true, key: "arpa" },
        ], rows, { caption: "At each period end", id: "mrr-table" })),
      card("end = start + movements", { answer: moves, wide: true, id: "card-identity",
        csv: csvUrl("/v1/metrics/movements", metricParams()) },
        table([
          { label: "Period", cell: (r) => F.period(r.period_start, moves.interval), key: "period" },
          { label: "Start", cell: (r) => moneyCell(r.mrr_start), num: true, key: "mrr_start" },
          ...FLOWS.map((f) => ({ label: `+ ${f.name}`, num: true, key: f.key,
            cell: (r) => explainLink(f.key, r, moves.interval, moneyCell(r[f.key])) })),
          { label: "= End", cell: (r) => moneyCell(r.mrr_end), num: true, key: "mrr_end" },
          { label: "Identity", key: "identity", cell: (r) => {
            const sum = r.mrr_start.amount + FLOWS.reduce((a, f) => a + r[f.key].amount, 0);
            return sum === r.mrr_end.amount
              ? h("span", { class: "ok" }, "✓ holds")
              : h("span", { class: "bad" }, `✗ off by ${F.money(r.mrr_end.amount - sum, cur)}`);
          } },
        ], flows, { caption: "end = start + new + expansion + reactivation + contraction + churn",
          id: "identity-table" }))),
  ];
}

async function churn() {
  const answer = await get("/v1/metrics/churn", metricParams());
  const rows = onlyWhole(answer);
  const labels = rows.map((r) => F.period(r.period_start, answer.interval));
  const pct = (v) => F.percent(v, 0);
  const monthly = answer.interval === "month";
  const thresholds = monthly ? [
    { value: answer.churn_good_below, label: `good < ${F.percent(answer.churn_good_below, 0)}`, cls: "t-good" },
    { value: answer.churn_high_above, label: `high > ${F.percent(answer.churn_high_above, 0)}`, cls: "t-high" },
  ] : [];
  const negative = rows.filter((r) => r.negative_churn);
  const churnCsv = csvUrl("/v1/metrics/churn", metricParams());
  return [
    h("h1", {}, "Churn"),
    negative.length ? h("p", { class: "callout good", id: "negative-churn" },
      h("strong", {}, "Negative churn"), ` in ${negative.map((r) => F.period(r.period_start,
        answer.interval)).join(", ")}: expansion and reactivation outgrew churn and contraction.`)
      : null,
    h("div", { class: "grid" },
      card("Customer churn", { answer, csv: churnCsv,
        id: "card-customer-churn",
        note: monthly
          ? "Bars: customers lost ÷ customers at start. Lines: the good/high thresholds (on the monthly rate). Select a bar for the customers who churned."
          : "Thresholds apply to the monthly-equivalent rate (table). Select a bar for the customers who churned." },
        barChart({ title: "Customer churn rate per period", format: pct, thresholds,
          cls: "churn-bars",
          bars: rows.map((r) => ({
            label: F.period(r.period_start, answer.interval),
            segments: [{ name: "Customer churn", cls: `level-${r.churn_level ?? "none"}`,
              value: r.customer_churn_rate ?? 0 }],
            onSelect: () => drill({ type: "churn", start: r.period_start, end: r.period_end }),
            describe: `${F.period(r.period_start, answer.interval)}: ${F.percent(r.customer_churn_rate)} customer churn, ${r.customers_lost} customers; show them`,
          })) })),
      card("Gross and net MRR churn", { answer, id: "card-mrr-churn", csv: churnCsv,
        note: "Net below 0 is negative churn." },
        legend([{ name: "Gross MRR churn", cls: "s-gross" }, { name: "Net MRR churn", cls: "s-net" }]),
        lineChart({ title: "Gross and net MRR churn rate", labels, format: pct, series: [
          { name: "Gross", cls: "s-gross", values: rows.map((r) => r.gross_mrr_churn_rate) },
          { name: "Net", cls: "s-net", values: rows.map((r) => r.net_mrr_churn_rate) },
        ] })),
      card("NRR and GRR", { answer, id: "card-retention", csv: churnCsv },
        legend([{ name: "NRR", cls: "s-nrr" }, { name: "GRR", cls: "s-grr" }]),
        lineChart({ title: "Net and gross revenue retention", labels, format: pct,
          thresholds: [{ value: 1, label: "100%", cls: "t-ref" }], series: [
            { name: "NRR", cls: "s-nrr", values: rows.map((r) => r.nrr) },
            { name: "GRR", cls: "s-grr", values: rows.map((r) => r.grr) },
          ] })),
      card("Quick ratio", { answer, id: "card-quick", csv: churnCsv,
        note: "(new + expansion + reactivation) ÷ (churn + contraction); above 1 MRR grows." },
        barChart({ title: "Quick ratio per period", format: (v) => F.ratio(v, 1),
          thresholds: [{ value: 1, label: "1", cls: "t-ref" }, { value: 4, label: "4", cls: "t-good" }],
          bars: rows.map((r) => ({ label: F.period(r.period_start, answer.interval),
            segments: [{ name: "Quick ratio", cls: "s-quick", value: r.quick_ratio ?? 0 }] })) }))),
    card("Per period", { answer, id: "card-churn-table", csv: churnCsv },
      table([
        { label: "Period", cell: (r) => F.period(r.period_start, answer.interval), key: "period" },
        { label: "Customers at start", cell: (r) => F.count(r.customers_start), num: true, key: "customers_start" },
        { label: "Lost", cell: (r) => F.count(r.customers_lost), num: true, key: "customers_lost" },
        { label: "Customer churn", cell: (r) => F.percent(r.customer_churn_rate), num: true, key: "customer_churn_rate" },
        { label: "Monthly rate", cell: (r) => F.percent(r.monthly_churn_rate), num: true, key: "monthly_churn_rate" },
        { label: "Level", cell: (r) => r.churn_level ? h("span", { class: `badge level-${r.churn_level}` }, r.churn_level) : "—", key: "churn_level" },
        { label: "Gross MRR churn", cell: (r) => F.percent(r.gross_mrr_churn_rate), num: true, key: "gross_mrr_churn_rate" },
        { label: "Net MRR churn", cell: (r) => h("span", {}, F.percent(r.net_mrr_churn_rate),
          r.negative_churn ? h("span", { class: "badge good" }, "negative") : null), num: true, key: "net_mrr_churn_rate" },
        { label: "NRR", cell: (r) => F.percent(r.nrr), num: true, key: "nrr" },
        { label: "GRR", cell: (r) => F.percent(r.grr), num: true, key: "grr" },
        { label: "Quick ratio", cell: (r) => F.ratio(r.quick_ratio), num: true, key: "quick_ratio" },
      ], rows, { caption: "Churn and retention per period", id: "churn-table" })),
  ];
}

async function cohorts() {
  const params = metricParams();
  const answer = await get("/v1/metrics/cohorts", params);
  const rows = onlyWhole(answer);
  const byCohort = new Map();
  for (const r of rows) {
    if (!byCohort.has(r.cohort_month)) byCohort.set(r.cohort_month, []);
    byCohort.get(r.cohort_month).push(r);
  }
  const width = Math.max(0, ...rows.map((r) => r.months_since_start)) + 1;
  const measure = cohorts.measure ?? "logo_retention";
  const heat = () => {
    const head = h("tr", {}, h("th", { scope: "col" }, "Cohort"),
      h("th", { scope: "col", class: "num" }, "Customers"),
      h("th", { scope: "col", class: "num" }, "Initial MRR"),
      Array.from({ length: width }, (_, m) => h("th", { scope: "col", class: "num" }, `M${m}`)));
    const body = [...byCohort].map(([month, cells]) => {
      const at = new Map(cells.map((c) => [c.months_since_start, c]));
      const first = cells[0];
      return h("tr", {}, h("th", { scope: "row" }, month.slice(0, 7)),
        h("td", { class: "num" }, F.count(first.cohort_customers)),
        h("td", { class: "num" }, F.moneyOf(first.initial_mrr)),
        Array.from({ length: width }, (_, m) => {
          const c = at.get(m);
          const value = c ? c[measure] : null;
          const cell = h("td", { class: "num heat", dataset: { month: m, value: value ?? "" },
            title: c ? `${month.slice(0, 7)} M${m}: ${F.percent(value)} (${c.active_customers} customers, ${F.moneyOf(c.cohort_mrr)})` : null },
          c ? F.percent(value, 0) : "");
          if (value !== null && value !== undefined) {
            // CSSOM, not a style attribute: allowed by the page's content security policy.
            cell.style.setProperty("--heat", String(Math.max(0, Math.min(1.5, value))));
          }
          return cell;
        }));
    });
    return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "cohort heatmap" },
      h("table", { class: "heatmap", id: "cohort-table" }, h("thead", {}, head), h("tbody", {}, body)));
  };
  const choose = h("select", { id: "cohort-measure", "aria-label": "Retention measure",
    onchange: (event) => { cohorts.measure = event.target.value; route(); } },
    h("option", { value: "logo_retention", selected: measure === "logo_retention" }, "Logo retention"),
    h("option", { value: "mrr_retention", selected: measure === "mrr_retention" }, "MRR retention"));
  return [
    h("h1", {}, "Cohorts"),
    card("Retention by month since start", { answer, csv: csvUrl("/v1/metrics/cohorts", params),
      id: "card-cohorts",
      note: "Customers grouped by the month of their first MRR; the period picker selects cohort months (always monthly)." },
    h("label", { class: "inline" }, "Show ", choose), heat()),
  ];
}

const REASONS = [
  { key: "voluntary", name: "Voluntary", cls: "s-voluntary" },
  { key: "involuntary", name: "Involuntary", cls: "s-involuntary" },
  { key: "unknown", name: "Unknown", cls: "s-unknown" },
];

async function reasons() {
  const answer = await get("/v1/metrics/churn-reasons", metricParams());
  const rows = onlyWhole(answer);
  const cur = answer.currency;
  const periods = new Map();
  for (const r of rows) {
    const key = r.period_start;
    if (!periods.has(key)) periods.set(key, { start: r.period_start, end: r.period_end, sums: {} });
    const p = periods.get(key);
    p.sums[r.reason] = (p.sums[r.reason] ?? 0) - r.churned_mrr.amount;
  }
  const feedback = new Map();
  const totals = { voluntary: 0, involuntary: 0, unknown: 0 };
  for (const r of rows) {
    const key = `${r.reason}|${r.feedback ?? ""}`;
    const f = feedback.get(key) ?? { reason: r.reason, feedback: r.feedback, churns: 0, amount: 0 };
    f.churns += r.churns;
    f.amount += r.churned_mrr.amount;
    feedback.set(key, f);
    totals[r.reason] += r.churned_mrr.amount;
  }
  const grouped = [...feedback.values()].sort((a, b) => a.amount - b.amount);
  return [
    h("h1", {}, "Churn reasons"),
    h("div", { class: "kpis" }, REASONS.map((r) => kpi(`${r.name} churned MRR`,
      F.money(totals[r.key], cur), r.key))),
    h("div", { class: "grid" },
      card("Churned MRR by reason", { answer, csv: csvUrl("/v1/metrics/churn-reasons", metricParams()),
        id: "card-reasons", note: "Select a bar for the churned customers of that period." },
        legend(REASONS),
        barChart({ title: "Churned MRR by reason per period", format: (v) => F.money(Math.round(v), cur),
          bars: [...periods.values()].map((p) => ({
            label: F.period(p.start, answer.interval),
            segments: REASONS.map((r) => ({ name: r.name, cls: r.cls, value: p.sums[r.key] ?? 0 })),
            onSelect: () => drill({ type: "churn", start: p.start, end: p.end }),
          })) })),
      card("By Stripe feedback", { answer, id: "card-feedback",
        csv: csvUrl("/v1/metrics/churn-reasons", metricParams()) },
        table([
          { label: "Reason", cell: (f) => f.reason, key: "reason" },
          { label: "Feedback", cell: (f) => f.feedback ?? "—", key: "feedback" },
          { label: "Churns", cell: (f) => F.count(f.churns), num: true, key: "churns" },
          { label: "Churned MRR", cell: (f) => h("span", { dataset: { amount: f.amount } },
            F.money(f.amount, cur)), num: true, key: "churned_mrr" },
        ], grouped, { caption: "Churn over the whole window by reason and feedback", id: "feedback-table" }))),
  ];
}

async function payments() {
  const today = new Date().toISOString().slice(0, 10);
  const window = { interval: filters.interval, start: filters.start, end: filters.end };
  const [recovery, now, open] = await Promise.all([
    get("/v1/metrics/recovery", window),
    get("/v1/metrics/recovery", { interval: "range", start: today, end: nextDay(today) }),
    get("/v1/failed-payments", { status: "open", limit: 100 }),
  ]);
  const rows = recovery.data;
  const cur = recovery.currency;
  const labels = rows.map((r) => F.period(r.period_start, recovery.interval));
  const atRisk = now.data[0];
  const pct = (v) => F.percent(v, 0);
  return [
    h("h1", {}, "Failed payments"),
    h("p", { class: "note" }, "Segment filters do not apply here: recovery is per invoice."),
    h("div", { class: "kpis" },
      kpi("MRR at risk now", F.moneyOf(atRisk?.mrr_at_risk), "mrr_at_risk"),
      kpi("Subscriptions at risk", F.count(atRisk?.subscriptions_at_risk), "subscriptions_at_risk"),
      kpi("Open episodes", `${open.data.length}${open.has_more ? "+" : ""}`, "open")),
    h("div", { class: "grid" },
      card("Recovery rate", { answer: recovery, csv: csvUrl("/v1/metrics/recovery", window),
        id: "card-recovery", note: "Of the invoices that first failed in each period, the share paid since." },
        legend([{ name: "By count", cls: "s-count" }, { name: "By amount", cls: "s-amount" }]),
        lineChart({ title: "Recovery rate by count and by amount", labels, format: pct, series: [
          { name: "By count", cls: "s-count", values: rows.map((r) => r.recovery_rate_by_count) },
          { name: "By amount", cls: "s-amount", values: rows.map((r) => r.recovery_rate_by_amount) },
        ] })),
      card("Time to recover", { answer: recovery, id: "card-time",
        csv: csvUrl("/v1/metrics/recovery", window) },
        legend([{ name: "Median", cls: "s-median" }, { name: "90th percentile", cls: "s-p90" }]),
        lineChart({ title: "Time to recover (days)", labels, format: (v) => `${v.toFixed(0)} d`, series: [
          { name: "Median", cls: "s-median", values: rows.map((r) => r.median_time_to_recover_s === null ? null : r.median_time_to_recover_s / 86400) },
          { name: "p90", cls: "s-p90", values: rows.map((r) => r.p90_time_to_recover_s === null ? null : r.p90_time_to_recover_s / 86400) },
        ] }))),
    card("Per period", { answer: recovery, id: "card-recovery-table",
      csv: csvUrl("/v1/metrics/recovery", window) },
      table([
        { label: "Period", cell: (r) => F.period(r.period_start, recovery.interval), key: "period" },
        { label: "Failed", cell: (r) => F.count(r.failed_invoices), num: true, key: "failed_invoices" },
        { label: "Failed amount", cell: (r) => moneyCell(r.failed_amount), num: true, key: "failed_amount" },
        { label: "Recovered", cell: (r) => F.count(r.recovered_invoices), num: true, key: "recovered_invoices" },
        { label: "Rate (count)", cell: (r) => F.percent(r.recovery_rate_by_count), num: true, key: "recovery_rate_by_count" },
        { label: "Rate (amount)", cell: (r) => F.percent(r.recovery_rate_by_amount), num: true, key: "recovery_rate_by_amount" },
        { label: "Median to recover", cell: (r) => F.duration(r.median_time_to_recover_s), num: true, key: "median" },
        { label: "MRR at risk (end)", cell: (r) => moneyCell(r.mrr_at_risk), num: true, key: "mrr_at_risk" },
        { label: "Involuntary churn", cell: (r) => moneyCell(r.involuntary_churned_mrr), num: true, key: "involuntary" },
        { label: "Voluntary churn", cell: (r) => moneyCell(r.voluntary_churned_mrr), num: true, key: "voluntary" },
      ], rows, { caption: `Recovery per period (${cur.toUpperCase()})`, id: "recovery-table" })),
    card("Open episodes", { answer: { as_of: recovery.as_of },
      csv: csvUrl("/v1/failed-payments", { status: "open" }), id: "card-open" },
      table([
        { label: "Invoice", cell: (e) => h("a", { href: `#/invoice/${encodeURIComponent(e.invoice_id)}` }, e.invoice_id), key: "invoice" },
        { label: "Customer", cell: (e) => customerLink(e.customer_id), key: "customer" },
        { label: "Amount due", cell: (e) => moneyCell(e.amount_due), num: true, key: "amount_due" },
        { label: "Attempts", cell: (e) => F.count(e.attempts), num: true, key: "attempts" },
        { label: "First failure", cell: (e) => F.timestamp(e.first_failure_at), key: "first_failure" },
        { label: "Next retry", cell: (e) => F.timestamp(e.next_retry_at), key: "next_retry" },
        { label: "Decline code", cell: (e) => e.decline_code ?? "—", key: "decline" },
      ], open.data, { caption: "Open failed-payment episodes, newest first", id: "open-table" })),
  ];
}

async function invoice(id) {
  const e = await get(`/v1/failed-payments/${encodeURIComponent(id)}`);
  return [
    h("p", {}, h("a", { href: "#/payments" }, "← Failed payments")),
    h("h1", {}, `Invoice ${e.invoice_id}`),
    h("div", { class: "kpis" },
      kpi("Outcome", e.outcome, "outcome"), kpi("Amount due", F.moneyOf(e.amount_due), "amount"),
      kpi("Attempts", F.count(e.attempts), "attempts"),
      kpi("Time to recover", F.duration(e.time_to_recover_s), "ttr")),
    h("p", {}, "Customer ", customerLink(e.customer_id),
      e.subscription_id ? ` · subscription ${e.subscription_id}` : "",
      e.decline_code ? ` · decline code ${e.decline_code}` : ""),
    card("Stripe events behind this episode", { id: "card-invoice-events" },
      table([
        { label: "Event id", cell: (v) => h("code", { class: "event-id" }, v.event_id), key: "event_id" },
        { label: "Type", cell: (v) => v.type, key: "type" },
        { label: "Created", cell: (v) => F.timestamp(v.created), key: "created" },
      ], e.events, { caption: "Events, oldest first", id: "invoice-events" })),
  ];
}

async function customers(query) {
  const state = { q: query.get("q") ?? "", sort: query.get("sort") ?? "mrr_desc",
    active: query.get("active") ?? "" };
  const params = { q: state.q, sort: state.sort, active: state.active, limit: 50 };
  const first = await get("/v1/customers", params);
  const cur = first.reporting_currency;
  const body = h("tbody");
  const row = (c) => h("tr", {},
    h("td", { dataset: { col: "customer" } }, customerLink(c.customer_id)),
    h("td", { class: "num", dataset: { col: "mrr" } }, moneyCell(c.mrr)),
    h("td", { class: "num", dataset: { col: "native" } }, c.mrr_by_currency.map(F.moneyOf).join(" + ") || "—"),
    h("td", { dataset: { col: "first" } }, c.first_mrr_day ?? "—"),
    h("td", { dataset: { col: "last" } }, c.last_movement ? `${c.last_movement} on ${c.last_movement_day}` : "—"));
  first.data.forEach((c) => body.append(row(c)));
  let cursor = first.next_cursor;
  const more = h("button", { type: "button", id: "more", hidden: !first.has_more,
    onclick: async () => {
      try {
        const page = await get("/v1/customers", { ...params, cursor });
        page.data.forEach((c) => body.append(row(c)));
        cursor = page.next_cursor;
        more.hidden = !page.has_more;
      } catch (error) { fail(error); }
    } }, "Show more");
  const apply = (event) => {
    event.preventDefault();
    const form = event.currentTarget.form ?? event.currentTarget;
    const next = new URLSearchParams();
    for (const name of ["q", "sort", "active"]) {
      if (form.elements[name].value) next.set(name, form.elements[name].value);
    }
    location.hash = `#/customers?${next}`;
  };
  const search = h("form", { class: "search", role: "search", onsubmit: apply },
    h("label", {}, "Search ", h("input", { type: "search", name: "q", value: state.q,
      placeholder: "cus_…", "aria-label": "Search customer ids" })),
    h("label", {}, "Sort ", h("select", { name: "sort", onchange: apply },
      [["mrr_desc", "MRR, highest first"], ["mrr_asc", "MRR, lowest first"], ["customer_id", "Customer id"]]
        .map(([v, t]) => h("option", { value: v, selected: v === state.sort }, t)))),
    h("label", {}, "Show ", h("select", { name: "active", onchange: apply },
      [["", "All"], ["true", "Paying now"], ["false", "Not paying"]]
        .map(([v, t]) => h("option", { value: v, selected: v === state.active }, t)))),
    h("button", { type: "submit" }, "Search"));
  return [
    h("h1", {}, "Customers"),
    card("Customers by MRR", { answer: first, csv: csvUrl("/v1/customers",
      { q: state.q, sort: state.sort, active: state.active }), id: "card-customers" },
      search,
      h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "customers" },
        h("table", { id: "customers-table" },
          h("caption", {}, `Current MRR in ${cur.toUpperCase()} (and per billing currency)`),
          h("thead", {}, h("tr", {}, ["Customer", "MRR", "Per currency", "First MRR", "Last movement"]
            .map((t, i) => h("th", { scope: "col", class: i === 1 || i === 2 ? "num" : null }, t)))),
          body)),
      more),
  ];
}

async function customer(id) {
  const c = await get(`/v1/customers/${encodeURIComponent(id)}`);
  const currencies = [...new Set(c.history.map((p) => p.mrr.currency))].sort();
  const charts = currencies.map((cur) => {
    const points = c.history.filter((p) => p.mrr.currency === cur);
    return lineChart({
      title: `MRR history (${cur.toUpperCase()}), at each ledger day`, step: true,
      labels: points.map((p) => p.day), format: (v) => F.money(Math.round(v), cur),
      series: [{ name: `MRR ${cur.toUpperCase()}`, cls: "s-mrr",
        values: points.map((p) => p.mrr.amount) }],
    });
  });
  return [
    h("p", {}, h("a", { href: "#/customers" }, "← Customers")),
    h("h1", {}, `Customer ${c.customer_id}`),
    h("div", { class: "kpis" },
      kpi("MRR now", c.mrr.map(F.moneyOf).join(" + ") || F.money(0, "usd"), "mrr"),
      kpi("First MRR", c.first_mrr_day ?? "—", "first"),
      kpi("Subscriptions", F.count(c.subscriptions.length), "subscriptions")),
    c.warnings.length ? h("ul", { class: "callout warn" }, c.warnings.map((w) => h("li", {}, `${w.kind}: ${w.message}`))) : null,
    card("MRR history", { answer: c, id: "card-history",
      csv: csvUrl("/v1/movements", { customer: c.customer_id, limit: 1000 }) }, ...charts),
    card("Ledger rows", { answer: c, id: "card-ledger",
      csv: csvUrl("/v1/movements", { customer: c.customer_id, limit: 1000 }),
      note: "Each row is one day on which the customer's MRR changed, with the Stripe events behind it." },
      table([
        { label: "Day", cell: (m) => m.day, key: "day" },
        { label: "Movement", cell: (m) => m.movement, key: "movement" },
        { label: "From", cell: (m) => moneyCell(m.from_mrr), num: true, key: "from" },
        { label: "To", cell: (m) => moneyCell(m.to_mrr), num: true, key: "to" },
        { label: "Delta", cell: (m) => moneyCell(m.delta), num: true, key: "delta" },
        { label: "Reason", cell: (m) => [m.churn_reason, m.churn_feedback].filter(Boolean).join(": ") || "—", key: "reason" },
        { label: "Stripe events", cell: (m) => eventIds(m.event_ids), key: "events" },
      ], c.movements, { caption: "The customer's MRR ledger", id: "ledger-table" })),
    card("Subscriptions", { id: "card-subscriptions" },
      table([
        { label: "Subscription", cell: (s) => s.subscription_id, key: "subscription" },
        { label: "Status", cell: (s) => s.status, key: "status" },
        { label: "Plan", cell: (s) => s.plan ?? "—", key: "plan" },
        { label: "Interval", cell: (s) => s.billing_interval ?? "—", key: "interval" },
        { label: "MRR", cell: (s) => moneyCell(s.mrr), num: true, key: "mrr" },
        { label: "Last event", cell: (s) => h("code", { class: "event-id" }, s.last_event_id), key: "event" },
      ], c.subscriptions, { caption: "Subscriptions as of their latest snapshot" })),
  ];
}

async function movements(query) {
  const params = { type: query.get("type"), start: query.get("start"), end: query.get("end"),
    limit: 1000 };
  if (filters.segment.startsWith("currency:")) params.currency_code = filters.segment.slice(9);
  const page = await get("/v1/movements", params);
  const what = params.type === "churn" ? "Churned customers" : "Ledger rows";
  const customersBehind = [...new Set(page.data.map((m) => m.customer_id))];
  return [
    h("p", {}, h("a", { href: params.type === "churn" ? "#/churn" : "#/overview" }, "← Back")),
    h("h1", {}, `${what} ${params.start ?? ""} – ${params.end ?? ""}`),
    h("p", { class: "note" }, `${customersBehind.length} customers, ${page.data.length} ledger rows${page.has_more ? " (first 1000)" : ""}. Days are UTC; the end is exclusive.`),
    card(what, { answer: page, csv: csvUrl("/v1/movements", { ...params, limit: null }), id: "card-drill" },
      table([
        { label: "Customer", cell: (m) => customerLink(m.customer_id), key: "customer" },
        { label: "Day", cell: (m) => m.day, key: "day" },
        { label: "Movement", cell: (m) => m.movement, key: "movement" },
        { label: "Delta", cell: (m) => moneyCell(m.delta), num: true, key: "delta" },
        { label: "Reporting delta", cell: (m) => m.reporting.delta === null ? "—" : h("span", { dataset: { amount: m.reporting.delta } }, F.money(m.reporting.delta, m.reporting.currency)), num: true, key: "reporting" },
        { label: "Reason", cell: (m) => [m.churn_reason, m.churn_feedback].filter(Boolean).join(": ") || "—", key: "reason" },
        { label: "Stripe events", cell: (m) => eventIds(m.event_ids), key: "events" },
      ], page.data, { caption: `${what}, oldest first`, id: "drill-table" })),
  ];
}

const EXPLAIN_NAMES = Object.fromEntries(FLOWS.map((f) => [f.key, `${f.name} MRR`]));

async function explain(query) {
  const params = { metric: query.get("metric"), period_start: query.get("period_start"),
    interval: query.get("interval") ?? "month", currency: filters.currency };
  const segment = query.get("segment") ?? "";
  if (segment) {
    const [kind, ...value] = segment.split(":");
    params[SEGMENT_PARAMS[kind]] = value.join(":");
  }
  const answer = await get("/v1/metrics/explain", params);
  const cur = answer.currency;
  const amount = answer.kind === "amount";
  const show = (v) => amount ? h("span", { dataset: { amount: v } }, F.money(v, cur)) : F.count(v);
  const rows = answer.data.flatMap((c) => c.rows);
  const name = EXPLAIN_NAMES[answer.metric] ?? answer.metric.replaceAll("_", " ");
  const period = F.period(answer.period_start, answer.interval);
  const agrees = answer.value === answer.reported;
  return [
    h("p", {}, h("a", { href: "#/overview" }, "← Overview")),
    h("h1", {}, `${name}, ${period}${segment ? ` (${segment.replace(":", ": ")})` : ""}`),
    h("p", { class: "note", id: "explain-total" },
      `${F.count(answer.customers)} customers, ${F.count(answer.rows)} ledger rows, summing to `,
      h("strong", { dataset: { value: answer.value } }, show(answer.value)), " ",
      agrees ? h("span", { class: "ok" }, "✓ the reported figure")
        : h("span", { class: "bad" }, ["≠ reported ", show(answer.reported),
          answer.stale ? " (a refresh is due)" : ""])),
    card("Behind the figure", { answer, csv: csvUrl("/v1/metrics/explain", params),
      id: "card-explain",
      note: "Each row is a ledger row and what it adds to the figure, with the Stripe events behind it." },
      table([
        { label: "Customer", cell: (r) => customerLink(r.customer_id), key: "customer" },
        { label: "Day", cell: (r) => r.day, key: "day" },
        { label: "Movement", cell: (r) => r.movement, key: "movement" },
        { label: "Delta", cell: (r) => moneyCell(r.delta), num: true, key: "delta" },
        { label: "Adds", cell: (r) => show(r.value), num: true, key: "value" },
        { label: "Stripe events", cell: (r) => eventIds(r.event_ids), key: "events" },
      ], rows, { caption: `${name}, ${period}: largest parts first`, id: "explain-table" })),
  ];
}

// Closed months: the figures finance published at the close, and any restatement since.
const FIGURE_NAMES = {
  mrr_start: "MRR at start", mrr_end: "MRR at end", customers_start: "Customers at start",
  customers_end: "Customers at end", new_mrr: "New MRR", expansion_mrr: "Expansion MRR",
  contraction_mrr: "Contraction MRR", churned_mrr: "Churned MRR",
  reactivation_mrr: "Reactivation MRR", new_customers: "New customers",
  reactivated_customers: "Reactivated customers", churned_customers: "Churned customers",
  expansions: "Expansions", contractions: "Contractions",
  unconverted_movements: "Rows without FX rate", customer_days: "Customer-days",
  customers_lost: "Customers lost", customers_gained: "Customers gained",
};
// A close also keeps each cohort's cell of the month (cohort:YYYY-MM:<value>) and the churn
// per reason and feedback (churn_reason:<reason>:<feedback>:<value>); they come last.
const CELL_NAMES = { cohort_customers: "customers", initial_mrr: "initial MRR",
  active_customers: "active customers", cohort_mrr: "MRR", churns: "churns",
  churned_mrr: "churned MRR" };
function figureName(metric) {
  if (FIGURE_NAMES[metric]) return FIGURE_NAMES[metric];
  const parts = metric.split(":");
  const value = CELL_NAMES[parts[parts.length - 1]] ?? parts[parts.length - 1];
  if (parts[0] === "cohort" && parts.length === 3) return `Cohort ${parts[1]}: ${value}`;
  if (parts[0] === "churn_reason" && parts.length >= 4) {
    const feedback = parts.slice(2, -1).join(":");
    return `Churn, ${parts[1]}${feedback ? ` (${feedback.replaceAll("_", " ")})` : ""}: ${value}`;
  }
  return metric.replaceAll("_", " ");
}
// The closed-months table's columns (short: they share one line at desktop width); every
// figure that moved is in the restatements.
const PERIOD_FIGURES = [["mrr_start", "MRR start"], ["new_mrr", "New"],
  ["expansion_mrr", "Expansion"], ["reactivation_mrr", "Reactivation"],
  ["contraction_mrr", "Contraction"], ["churned_mrr", "Churn"], ["mrr_end", "MRR end"],
  ["customers_end", "Customers"]];
const FIGURE_ORDER = Object.keys(FIGURE_NAMES);
const rank = (metric) => (FIGURE_ORDER.includes(metric) ? FIGURE_ORDER.indexOf(metric)
  : FIGURE_ORDER.length); // a figure this page does not name yet goes last
const inFigureOrder = (changes) => [...changes].sort((a, b) => rank(a.metric) - rank(b.metric));
const isAmount = (metric) => metric.startsWith("mrr_") || metric.endsWith("_mrr");

function figureValue(metric, value, currency) {
  if (value === null || value === undefined) return "—";
  return isAmount(metric) ? h("span", { dataset: { amount: value } }, F.money(value, currency))
    : h("span", { dataset: { count: value } }, F.count(value));
}

// Now, and the figure at the close struck through beneath it when a restatement moved it.
function closedFigure(p, metric) {
  const then = p.figures_at_close[metric];
  const now = p.figures[metric];
  const moved = then !== now;
  return h("span", { class: moved ? "figure restated" : "figure",
    dataset: { atClose: then ?? "", now: now ?? "" } },
    h("span", { class: "now" }, figureValue(metric, now, p.currency)),
    moved ? h("del", { class: "at-close", title: "As published at the close" },
      figureValue(metric, then, p.currency)) : null);
}

function change(c, currency) {
  const metric = c.metric;
  const delta = c.new - c.old;
  const signed = isAmount(metric) ? F.money(delta, currency) : F.count(delta);
  return h("li", { dataset: { metric, old: c.old, new: c.new } },
    h("span", { class: "metric" }, figureName(metric)), " ",
    figureValue(metric, c.old, currency), " → ", figureValue(metric, c.new, currency), " ",
    h("span", { class: delta < 0 ? "delta down" : "delta up" },
      `(${delta > 0 ? "+" : ""}${signed})`));
}

async function periods() {
  const [closed, restated] = await Promise.all([get("/v1/periods"), get("/v1/restatements")]);
  const months = closed.data;
  const changed = months.filter((p) => p.restatements > 0);
  const latest = months.reduce((a, p) => (!a || p.period > a.period ? p : a), null);
  return [
    h("h1", {}, "Closed periods"),
    h("p", { class: "note" }, "A closed month keeps the figures published when it was closed "
      + "(whole account, reporting currency). A late or backdated Stripe event that changes one "
      + "is recorded as a restatement, with the events behind it, and sent as a "
      + "period.restated alert. Segment filters do not apply here."),
    h("div", { class: "kpis" },
      kpi("Closed months", F.count(months.length), "closed"),
      kpi("Latest closed", latest ? latest.period : "—", "latest"),
      kpi("Months restated", F.count(changed.length), "restated"),
      kpi("Restatements", F.count(restated.data.length), "restatements")),
    card("Closed months", { answer: closed, csv: csvUrl("/v1/periods"), id: "card-periods",
      note: "Figures as published now; where a restatement moved one, the figure at the "
        + "close is struck through beneath it." },
      months.length ? table([
        { label: "Month", cell: (p) => p.period, key: "period" },
        { label: "Closed at", cell: (p) => F.timestamp(p.closed_at), key: "closed_at" },
        ...PERIOD_FIGURES.map(([m, label]) => ({ label, num: true, key: m,
          cell: (p) => closedFigure(p, m) })),
        { label: "Restated", num: true, key: "restatements",
          cell: (p) => p.restatements ? h("span", { class: "badge warn" }, F.count(p.restatements))
            : "0" },
      ], months, { caption: "Closed months, oldest first: now (at the close)", id: "periods-table",
        stack: true })
        : h("p", { class: "empty", id: "no-periods" }, "No month is closed yet. A write key "
          + "closes one with POST /v1/periods/YYYY-MM/close.")),
    card("Restatements", { answer: restated, csv: csvUrl("/v1/restatements"),
      id: "card-restatements",
      note: "Each refresh that found a closed month changed: every figure that moved, old → "
        + "new, and the Stripe events received after the close behind it." },
      restated.data.length ? table([
        { label: "Month", cell: (r) => r.period, key: "period" },
        { label: "Detected at", cell: (r) => F.timestamp(r.detected_at), key: "detected_at" },
        { label: "Changes (old → new)", key: "changes", cell: (r) => h("ul", { class: "changes" },
          inFigureOrder(r.changes).map((c) => change(c, r.currency))) },
        { label: "Late Stripe events", cell: (r) => r.event_ids.length ? eventIds(r.event_ids)
          : "—", key: "events" },
      ], [...restated.data].reverse(), { caption: "Restatements, newest first",
        id: "restatements-table", stack: true })
        : h("p", { class: "empty", id: "no-restatements" },
          "No closed month has changed since it was closed.")),
  ];
}

// --- router, sign-in and errors -------------------------------------------------------------

const VIEWS = { overview, churn, cohorts, reasons, payments, customers, customer, invoice, movements,
  explain, periods };
const FILTERED = new Set(["overview", "churn", "cohorts", "reasons", "payments"]);
let ready = false; // the filter options and default window: loaded once per sign-in
let generation = 0;

function banner(message, kind = "error") {
  const node = $("#banner");
  if (!message) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  node.className = `banner ${kind}`;
  node.replaceChildren(h("span", {}, message), " ",
    h("button", { type: "button", onclick: () => { banner(null); route(); } }, "Retry"));
  node.hidden = false;
}

function showSignIn(message) {
  session.clear();
  ready = false;
  $("#nav").hidden = true;
  $("#filters").hidden = true;
  $("#sign-out").hidden = true;
  $("#main").replaceChildren();
  $("#sign-in").hidden = false;
  const error = $("#sign-in-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("#api-key").value = "";
  $("#api-key").focus();
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    banner(null);
    showSignIn("The API key was refused (401): sign in again.");
  } else if (error instanceof ApiError && error.status === 503) {
    banner(`The service is unavailable right now (503: ${error.message}). Nothing is lost; try again in a moment.`, "unavailable");
  } else if (error instanceof ApiError) {
    banner(`The API answered ${error.status || "nothing"}: ${error.message}`);
  } else {
    banner(`Something went wrong in the page: ${error.message}`);
    console.error(error);
  }
}

async function route() {
  const mine = ++generation;
  if (!session.key()) {
    showSignIn();
    return;
  }
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  const view = VIEWS[name] ? name : "overview";
  const query = new URLSearchParams(search);
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = $("#main");
  main.setAttribute("aria-busy", "true");
  main.dataset.view = view;
  try {
    if (!ready) {
      // Not cached as a promise: after a failure (a 503) the retry asks again.
      await defaultWindow();
      await loadFilterOptions();
      ready = true;
    }
    if (FILTERED.has(view)) {
      for (const name of ["interval", "start", "end", "segment"]) {
        if (query.has(name)) filters[name] = query.get(name);
      }
    }
    syncFilterForm();
    $("#filters").hidden = !FILTERED.has(view);
    const arg = rest.length ? decodeURIComponent(rest.join("/")) : query;
    const content = await VIEWS[view](arg);
    if (mine !== generation) return; // a newer navigation won
    banner(null);
    main.replaceChildren(...content.filter(Boolean));
    main.dataset.loaded = view;
  } catch (error) {
    if (mine !== generation) return;
    if (!(error instanceof ApiError) || error.status !== 401) {
      main.replaceChildren(h("p", { class: "empty" }, "This view could not be loaded."));
      main.dataset.loaded = "error";
    }
    fail(error);
  } finally {
    main.removeAttribute("aria-busy");
  }
}

function start() {
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    try {
      await get("/v1/fx-rates", {}, key); // a cheap read: is the key one of API_KEYS?
    } catch (error) {
      const text = error instanceof ApiError && error.status === 401
        ? "That key was refused (401)." : `Could not sign in: ${error.message}`;
      $("#sign-in-error").textContent = text;
      $("#sign-in-error").hidden = false;
      return;
    }
    session.set(key);
    $("#api-key").value = "";
    route();
  });
  $("#sign-out").addEventListener("click", () => showSignIn());
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    for (const name of ["interval", "start", "end", "currency", "segment"]) {
      filters[name] = form.elements[name].value;
    }
    // Filters live in the hash (never the key): a reload or a shared link keeps them.
    const view = (location.hash.replace(/^#\/?/, "").split("?")[0] || "overview").split("/")[0];
    const next = new URLSearchParams({ interval: filters.interval, start: filters.start,
      end: filters.end });
    if (filters.segment) next.set("segment", filters.segment);
    const target = `#/${view}?${next}`;
    if (location.hash === target) route(); else location.hash = target;
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
